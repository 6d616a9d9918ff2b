"""AttentionXML (:mod:`jxmc.nn.attention_xml`, :mod:`jxmc.models.attentionxml`): the
network's shapes and attention weights, the level-by-level candidates, the GloVe
reader, the word encoding, and a small learning test."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.data import words
from jxmc.errors import DataError
from jxmc.metrics import evaluate
from jxmc.models import attentionxml as ax
from jxmc.models.base import parse_overrides
from jxmc.nn.attention_xml import AttentionXML, label_attention
from jxmc.nn.testing import toy_texts
from jxmc.tree.beam import children


def test_network_shapes_and_attention_sums_to_one_over_real_words():
    n, s, c, K, h = 3, 7, 5, 9, 4
    ids = jnp.asarray(np.random.default_rng(0).integers(2, 20, (n, s)), jnp.int32)
    lengths = np.array([7, 3, 1])
    mask = jnp.asarray(np.arange(s)[None, :] < lengths[:, None], jnp.int32)
    ids = ids * mask
    cand = jnp.asarray(np.random.default_rng(1).integers(0, K, (n, c)), jnp.int32)
    m = AttentionXML(vocab_size=20, emb_dim=6, hidden=h, linear=(8, 3), n_nodes=K, dropout=0.5)
    params = m.init({"params": jax.random.PRNGKey(0)}, ids, mask, cand)["params"]
    assert params["attention"].shape == (K, 2 * h)
    logits = m.apply({"params": params}, ids, mask, cand)
    assert logits.shape == (n, c) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    # the attention weights of each node: 0 at padding, summing to 1 over the real words
    same, alpha = m.apply({"params": params}, ids, mask, cand, return_weights=True)
    np.testing.assert_array_equal(same, logits)
    alpha = np.asarray(alpha)
    assert alpha.shape == (n, c, s)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)
    pad = ~np.asarray(mask, bool)
    assert (alpha.transpose(0, 2, 1)[pad] == 0).all()
    assert (alpha > 0).transpose(0, 2, 1)[~pad].all()
    assert (alpha[2, :, 0] == 1.0).all()  # one real word: all the weight
    # label_attention alone: the weighted mean of the real words' states
    H = jax.random.normal(jax.random.PRNGKey(5), (n, s, 6))
    q = jax.random.normal(jax.random.PRNGKey(6), (n, c, 6))
    ctx, w = label_attention(H, mask, q)
    assert ctx.shape == (n, c, 6)
    np.testing.assert_allclose(ctx[2], jnp.broadcast_to(H[2, 0], (c, 6)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
    # padding words do not change a text's scores (the backward LSTM starts at the end)
    ids2 = jnp.where(mask > 0, ids, 5)
    np.testing.assert_allclose(m.apply({"params": params}, ids2, mask, cand), logits, rtol=1e-5,
                               atol=1e-6)
    # dropout draws from the "dropout" rng in training
    d = m.apply({"params": params}, ids, mask, cand, deterministic=False,
                rngs={"dropout": jax.random.PRNGKey(3)})
    assert d.shape == (n, c) and not np.allclose(d, logits)


def test_level_candidates_hold_every_positive_then_the_beam():
    top = np.array([[4, 2, 7], [1, 0, -1], [3, 5, 6]], np.int32)
    pos = np.array([[7, 9, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 8]], np.int32)
    out = ax.level_candidates(top, pos)
    assert out.shape == (3, 4)  # max(C, most positives)
    assert out[0].tolist() == [7, 9, 4, 2]  # positives first, the beam fills, no repeat
    assert out[1].tolist() == [1, 0, -1, -1]
    assert out[2].tolist() == [0, 1, 2, 8]
    # on random data: every positive is a candidate, no node twice, the beam's best kept
    rng = np.random.default_rng(0)
    n, K, C = 200, 30, 5
    top = np.stack([rng.permutation(K)[:C] for _ in range(n)]).astype(np.int32)
    pos = np.full((n, 8), -1, np.int32)
    for i in range(n):
        m = rng.integers(0, 9)
        pos[i, :m] = np.sort(rng.choice(K, m, replace=False))
    out = ax.level_candidates(top, pos)
    for i in range(n):
        row = out[i][out[i] >= 0].tolist()
        assert set(pos[i][pos[i] >= 0]) <= set(row)
        assert len(set(row)) == len(row)
        if (pos[i] >= 0).sum() < C:
            assert top[i, 0] in row
    # their children hold every positive of the level below
    B = 3
    below = children(jnp.asarray(out), B)
    for i in range(n):
        for p in pos[i][pos[i] >= 0]:
            assert set(range(p * B, p * B + B)) <= set(np.asarray(below[i]).tolist())


def test_glove_reader(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("3 2\nthe 0.5 -1\ncat 2 3e-1\nunused 9 9\nthe 7 7\n\n")
    vec, found = words.read_word_vectors(str(path), ["cat", "dog", "the"], 2)
    assert vec.dtype == np.float32 and vec.shape == (3, 2)
    assert found.tolist() == [True, False, True]
    np.testing.assert_allclose(vec, [[2.0, 0.3], [0, 0], [0.5, -1.0]])  # first vector kept
    with pytest.raises(DataError, match=r"vec.txt:2: a vector of 2 values, expected 3"):
        words.read_word_vectors(str(path), ["cat"], 3)
    bad = tmp_path / "bad.txt"
    bad.write_text("cat 1 x\n")
    with pytest.raises(DataError, match=r"bad.txt:1: a value that is not a number"):
        words.read_word_vectors(str(bad), ["cat"], 2)
    with pytest.raises(DataError, match="file not found"):
        words.read_word_vectors(str(tmp_path / "none.txt"), ["cat"], 2)


def test_glove_vectors_start_the_word_table(tmp_path):
    path = tmp_path / "vec.txt"
    path.write_text("w1 1 2 3 4\nw3 -1 -2 -3 -4\n")
    texts, X, Y = toy_texts(16, 4, words=8, seed=0)
    config = parse_overrides(ax.Config, ["emb_dim=4", "hidden=2", "linear=4", "nr_splits=2",
                                         "max_len=8", f"word_vectors={path}"])
    vocab = words.word_vocabulary(texts, max_vocab=100, min_count=1)
    table = ax._word_vectors(config, vocab, progress=False)
    modules = ax.level_modules(config, len(vocab) + 2, (2, 2))
    params = ax.init_params(config, modules, 0, table)
    for t in (1, 2):
        emb = params["heads"][f"level_{t}"]["embed"]["embedding"]
        np.testing.assert_array_equal(emb[vocab.index("w1") + 2], [1, 2, 3, 4])
        np.testing.assert_array_equal(emb[vocab.index("w3") + 2], [-1, -2, -3, -4])
        assert not np.allclose(emb[vocab.index("w2") + 2], 0)  # random where the file lacks it


def test_words_encode_to_a_static_length():
    vocab = words.word_vocabulary(["The cat sat", "the dog", "a cat"], max_vocab=10, min_count=1)
    assert vocab == ["cat", "dog", "sat", "the"]  # one-letter words are not words
    ids, mask = words.encode_words(["the CAT, the bird", "", "sat " * 9], vocab, 4)
    assert ids.shape == mask.shape == (3, 4) and ids.dtype == np.int32
    assert ids[0].tolist() == [5, 2, 5, words.UNK]
    assert ids[1].tolist() == [words.UNK, 0, 0, 0] and mask[1].tolist() == [1, 0, 0, 0]
    assert ids[2].tolist() == [4] * 4
    assert words.unpack_words(words.pack_words(vocab)) == vocab


def test_attentionxml_learns_the_toy_texts():
    """Each toy label has its own word in the text: the level-by-level trained model
    ranks a true label first for most training points (chance: ~2 / 24)."""
    texts, X, Y = toy_texts(160, 24, words=24, seed=0)
    config = parse_overrides(ax.Config, ["epochs=25", "max_len=12", "batch_size=16",
                                         "emb_dim=16", "hidden=16", "linear=32", "dropout=0.1",
                                         "nr_splits=6", "candidates=3", "beam_size=3",
                                         "lr=1e-2"])
    params = ax.fit(X, Y, config, seed=0, progress=False, texts=texts)
    assert tuple(params["branching"]) == (6, 4)
    top = ax.predict(params, X, config, k=3, texts=texts)
    p1 = evaluate(top.ids, Y, ks=(1,))["P@1"]
    assert p1 > 0.8, p1
