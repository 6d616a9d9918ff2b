"""``--method elmo`` and its flat head (:mod:`jxmc.nn.flat_head`): the chunked step
against the dense one, the roundings, the Kahan rows, the compiled step's memory,
and learning on toy texts."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.errors import ConfigError
from jxmc.models import get_method
from jxmc.models.base import parse_overrides
from jxmc.models.transformer import common, elmo
from jxmc.nn import flat_head, lowp
from jxmc.nn.testing import tiny_encoder_dir, toy_texts
from jxmc.train.optim import make_optimizer


def _problem(n=6, L=37, h=8, m=3, seed=0):
    rng = np.random.default_rng(seed)
    e = jnp.asarray(rng.normal(size=(n, h)), jnp.float32)
    pos = rng.integers(-1, L, size=(n, m)).astype(np.int32)
    valid = np.ones(n, bool)
    valid[-1] = False
    return e, jnp.asarray(pos), jnp.asarray(valid)


def test_chunked_step_equals_the_dense_reference_step():
    e, pos, valid = _problem()
    L, chunk = 37, 8
    Lp = 40
    w = jnp.asarray(np.random.default_rng(1).normal(size=(Lp, 8)) * 0.3, jnp.float32)
    lr = 0.7
    loss, g_e, w_new, _ = flat_head.head_step(w, None, e, pos, valid, lr, jax.random.PRNGKey(0),
                                              n_rows=L, chunk=chunk, rounding="none")
    ref_loss, (gw, ge) = jax.value_and_grad(flat_head.dense_loss, argnums=(0, 1))(
        w, e, pos, valid, n_rows=L)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(g_e, ge, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_new, w - lr * gw, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(gw).max()) > 1e-2  # the step moved something
    np.testing.assert_array_equal(w_new[L:], w[L:])  # padding rows: no gradient
    # the same step with f32 Kahan rows (the first two chunks) is the same step
    _, _, w_k, comp = flat_head.head_step(w, jnp.zeros((16, 8), jnp.float32), e, pos, valid, lr,
                                          jax.random.PRNGKey(0), n_rows=L, chunk=chunk,
                                          rounding="none")
    np.testing.assert_allclose(w_k, w - lr * gw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", lowp.NOISES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float8_e4m3fn])
def test_stochastic_rounding_is_unbiased_where_nearest_loses_small_updates(dtype, noise):
    base = 1.0
    ulp = float(jnp.finfo(dtype).eps)  # spacing just above 1.0
    u = ulp / 20  # far below half an ulp
    x = jnp.full((200_000,), base + u, jnp.float32)
    sr = lowp.stochastic_round(x, jax.random.PRNGKey(3), dtype, noise).astype(jnp.float32)
    nearest = x.astype(dtype).astype(jnp.float32)
    assert set(np.unique(np.asarray(sr)).tolist()) == {base, base + ulp}
    # binomial: std of the mean = ulp * sqrt(p(1-p)/N), p = 1/20 -> ~1.1e-3 ulp
    assert abs(float(sr.mean()) - (base + u)) < 0.01 * ulp
    assert float(nearest.mean()) == base  # the update is lost
    # negative values round symmetrically
    srn = lowp.stochastic_round(-x, jax.random.PRNGKey(4), dtype, noise).astype(jnp.float32)
    assert abs(float(srn.mean()) + (base + u)) < 0.01 * ulp
    # and many rounded small updates add up (100 steps of u on one table)
    w = jnp.full((20_000,), base, dtype)
    add = jax.jit(lambda w, k: lowp.stochastic_round(w.astype(jnp.float32) + u, k, dtype,
                                                          noise))
    for i in range(100):
        w = add(w, jax.random.PRNGKey(100 + i))
    assert abs(float(w.astype(jnp.float32).mean()) - (base + 100 * u)) < 0.05 * ulp * 5


def test_kahan_rows_accumulate_tiny_updates_that_plain_bf16_drops():
    # 8 rows of ones, the first chunk (4 rows) Kahan; rounding to nearest elsewhere
    n, h, L, chunk = 4, 4, 8, 4
    e = jnp.ones((n, h), jnp.float32)
    pos = jnp.full((n, 1), -1, jnp.int32)  # all negatives: every row gets the same gradient
    valid = jnp.ones(n, bool)
    w = jnp.ones((L, h), jnp.bfloat16)
    comp = jnp.zeros((chunk, h), jnp.bfloat16)
    w32 = jnp.ones((L, h), jnp.float32)
    lr = 5e-5  # update ~ lr * sigmoid(4) ~ 5e-5, far under half a bf16 ulp at 1.0 (3.9e-3)
    key = jax.random.PRNGKey(0)
    for _ in range(200):
        _, _, w, comp = flat_head.head_step_jit(w, comp, e, pos, valid, lr, key, n_rows=L,
                                                chunk=chunk, rounding="nearest")
        _, _, w32, _ = flat_head.head_step_jit(w32, None, e, pos, valid, lr, key, n_rows=L,
                                               chunk=chunk, rounding="none")
    drift = 1.0 - float(w32[0, 0])
    assert drift > 5e-3  # the exact updates add up to more than an ulp
    wf = np.asarray(w.astype(jnp.float32))
    np.testing.assert_array_equal(wf[chunk:], 1.0)  # plain bf16 rows dropped them all
    exact = np.asarray(w32[:chunk])
    # Kahan rows moved with the exact sum: within an ulp (2^-8 below 1.0) of it, and the
    # table minus its bf16 compensation within 10 % of the drift
    assert (wf[:chunk] < 1.0).all()
    assert np.abs(wf[:chunk] - exact).max() <= 2 ** -8
    total = wf[:chunk] - np.asarray(comp.astype(jnp.float32))
    assert np.abs(total - exact).max() < 0.1 * drift


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_encoder_dir(str(tmp_path_factory.mktemp("enc")), words=32, layers=1, hidden=32,
                            max_len=16)


def _dense_shapes(hlo: str, rows: int, h: int) -> list[str]:
    return re.findall(rf"f32\[{rows},{h}\]", hlo)


def test_compiled_train_step_has_no_dense_f32_gradient(encoder_dir):
    L, n, chunk = 32768, 8, 256  # a bf16 copy of the table would be dense // 2
    config = elmo.Config(encoder=encoder_dir, pretrained=False, max_len=8, chunk=chunk)
    bert, enc, _ = common.load_encoder(config, 0)
    h = bert.hidden_size
    lay = elmo.layout(L, config)
    tx = make_optimizer(lr_encoder=1e-3, lr_heads=0.0, total_steps=10)
    params = {"encoder": jax.tree_util.tree_map(jnp.asarray, enc)}
    state = elmo.State(jnp.zeros((), jnp.int32), params, tx.init(params),
                       elmo.init_table(lay, h, jnp.bfloat16), jax.random.PRNGKey(0))
    assert lay.kc > 0
    batch = {"ids": jnp.ones((n, 8), jnp.int32), "mask": jnp.ones((n, 8), jnp.int32),
             "pos": (jnp.zeros((n, 2), jnp.int32),), "valid": jnp.ones(n, bool)}
    step = elmo.make_step(common.encoder_module(bert), tx, lambda s: 0.1, lay,
                          rounding="stochastic", dropout=0.1)
    compiled = step.lower(state, batch).compile()
    dense = L * h * 4
    mem = compiled.memory_analysis()
    assert mem.temp_size_in_bytes < dense // 4, mem
    assert not _dense_shapes(compiled.as_text(), L, h)
    # the table is updated in place: the output aliases the donated input
    assert mem.output_size_in_bytes - mem.alias_size_in_bytes < dense // 4
    # ... where the dense step of the same head has that buffer (the check can fail)
    e = jnp.zeros((n, h), jnp.float32)

    def dense_step(w):
        g = jax.grad(flat_head.dense_loss)(w.astype(jnp.float32), e, batch["pos"][0],
                                           batch["valid"], n_rows=L)
        return (w.astype(jnp.float32) - 0.1 * g).astype(jnp.bfloat16)

    hlo = jax.jit(dense_step).lower(jnp.zeros((L, h), jnp.bfloat16)).compile()
    assert _dense_shapes(hlo.as_text(), L, h) or hlo.memory_analysis().temp_size_in_bytes >= dense


def test_bad_options_are_config_errors(encoder_dir):
    texts, X, Y = toy_texts(8, 4, words=32)
    m = get_method("elmo")
    for pairs in (["table_dtype=float16"], ["rounding=up"], ["kahan_fraction=2"], ["chunk=0"]):
        config = parse_overrides(m.Config, [f"encoder={encoder_dir}", "pretrained=false", *pairs])
        with pytest.raises(ConfigError):
            m.fit(X, Y, config, texts=texts, progress=False)


def test_learns_toy_texts_well_above_popularity(encoder_dir):
    texts, X, Y = toy_texts(96, 12, words=32, seed=0)
    m = get_method("elmo")
    config = parse_overrides(m.Config, [f"encoder={encoder_dir}", "pretrained=false",
                                        "epochs=12", "max_len=12", "batch_size=16",
                                        "lr_encoder=3e-3", "lr_head=0.5", "dropout=0.0",
                                        "chunk=4", "warmup=0.05"])
    params = m.fit(X, Y, config, seed=0, texts=texts, progress=False)
    assert params["w"].dtype == jnp.bfloat16
    top = m.predict(params, X, config, k=5, texts=texts)
    Yd = Y.toarray()
    p1 = Yd[np.arange(len(Yd)), top.ids[:, 0]].mean()
    pop1 = Yd[:, int(np.argmax(Yd.sum(0)))].mean()
    assert p1 > pop1 + 0.3, (p1, pop1)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float8_e4m3fn, jnp.float32])
def test_kahan_block_holds_rows_and_compensation_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(6, 5)), dtype)
    cdt = flat_head.comp_dtype(dtype)
    c = jnp.asarray(rng.normal(size=(6, 5)) * 1e-3, cdt)
    block = flat_head.pack_kahan(lowp.to_bits(w), lowp.to_bits(c))
    assert block.shape == (flat_head.kahan_planes(dtype), 6, 5)
    assert block.dtype == lowp.to_bits(w).dtype
    wb, cb = flat_head.unpack_kahan(block, cdt)
    np.testing.assert_array_equal(wb, lowp.to_bits(w))
    np.testing.assert_array_equal(cb, lowp.to_bits(c))
    assert cdt == (jnp.float32 if dtype == jnp.float32 else jnp.bfloat16)


def test_state_table_step_equals_the_float_table_step_in_fp8():
    e, pos, valid = _problem(L=64)
    L, chunk, kc, h = 64, 8, 16, 8
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(L, h)) * 0.3, jnp.float8_e4m3fn)
    comp = jnp.asarray(rng.normal(size=(kc, h)) * 1e-3, jnp.bfloat16)
    key = jax.random.PRNGKey(5)
    kw = dict(n_rows=L, chunk=chunk, rounding="stochastic")
    loss, g_e, w1, c1 = flat_head.head_step(w, comp, e, pos, valid, 0.5, key, **kw)
    state = (flat_head.pack_kahan(lowp.to_bits(w[:kc]), lowp.to_bits(comp)),
             lowp.to_bits(w[kc:]))
    loss2, g_e2, (kb, wp), none = flat_head.head_step(state, None, e, pos, valid, 0.5, key,
                                                      dtype=jnp.float8_e4m3fn, **kw)
    assert none is None and float(loss) == float(loss2)
    np.testing.assert_array_equal(g_e, g_e2)
    wb, cb = flat_head.unpack_kahan(kb, jnp.bfloat16)
    np.testing.assert_array_equal(lowp.to_bits(w1), jnp.concatenate([wb, wp]))
    np.testing.assert_array_equal(lowp.to_bits(c1), cb)
    assert int((lowp.to_bits(w1) != lowp.to_bits(w)).sum()) > 50  # it moved
    assert float(jnp.abs(c1.astype(jnp.float32) - comp.astype(jnp.float32)).max()) > 0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float8_e4m3fn])
def test_compiled_head_step_copies_no_kahan_rows(dtype):
    # Kahan rows and compensation in two arrays made XLA copy the Kahan rows at every
    # chunk (a temporary of their size); in one block they are updated in place
    L, h, n, chunk = 262144, 16, 8, 512
    config = elmo.Config(chunk=chunk, table_dtype=jnp.dtype(dtype).name)
    lay = elmo.layout(L, config)
    assert lay.kc == 52736 and lay.Lp == L
    w = jax.eval_shape(lambda: elmo.init_table(lay, h, dtype))
    S = jax.ShapeDtypeStruct
    mem = flat_head.head_step_jit.lower(
        w, None, S((n, h), jnp.float32), S((n, 3), jnp.int32), S((n,), bool),
        S((), jnp.float32), jax.random.PRNGKey(0), n_rows=L, chunk=chunk,
        dtype=jnp.dtype(dtype)).compile().memory_analysis()
    kahan_rows = lay.kc * h * jnp.dtype(dtype).itemsize
    assert mem.temp_size_in_bytes < kahan_rows // 2, mem
    table = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(w))
    assert mem.output_size_in_bytes - mem.alias_size_in_bytes < table // 100, mem


def test_layout_splits_kahan_and_plain_rows_evenly_over_shards():
    for L, chunk, shards in ((1000, 16, 4), (37, 8, 8), (5, 8, 2), (2812281, 2048, 8)):
        lay = elmo.layout(L, elmo.Config(chunk=chunk), shards)
        unit = lay.chunk * shards
        assert lay.kc % unit == 0 and (lay.Lp - lay.kc) % unit == 0, lay
        assert lay.kc >= 0.2 * L and lay.Lp >= L and lay.Lp - L < 2 * unit, lay
    assert elmo.layout(100, elmo.Config(chunk=8, table_dtype="float32"), 2).kc == 0


@pytest.mark.parametrize("table_dtype", ["bfloat16", "float32"])
def test_a_table_without_plain_or_kahan_rows_checkpoints_and_resumes(encoder_dir, tmp_path,
                                                                     table_dtype):
    # one chunk of all-Kahan rows (bf16) or no Kahan rows (f32): the empty part is None
    # in the train state (orbax saves no zero-size array)
    from jxmc.checkpoint import TrainCheckpoints

    texts, X, Y = toy_texts(16, 6, words=32, seed=1)
    config = elmo.Config(encoder=encoder_dir, pretrained=False, epochs=1, max_len=8,
                         batch_size=8, table_dtype=table_dtype)
    lay = elmo.layout(Y.shape[1], config)
    kb, wp = elmo.init_table(lay, 4, jnp.dtype(table_dtype))
    assert (kb is None, wp is None) == ((False, True) if table_dtype == "bfloat16"
                                        else (True, False))
    ckpt = TrainCheckpoints(str(tmp_path / "ck"))
    params = elmo.fit(X, Y, config, seed=0, texts=texts, progress=False, ckpt=ckpt)
    assert ckpt.latest_step() == 1 and params["w"].shape == (lay.Lp, 32)
    again = elmo.fit(X, Y, config, seed=0, texts=texts, progress=False, ckpt=ckpt)
    np.testing.assert_array_equal(np.asarray(again["w"], np.float32),
                                  np.asarray(params["w"], np.float32))
    assert float(np.abs(np.asarray(params["w"], np.float32)).max()) > 0
