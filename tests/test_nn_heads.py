"""Shortlist heads equal dense scores (gathered at once or in chunks); exact, chunked and
approximate top-k."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxmc.nn import heads, lowp
from jxmc.nn.heads import init_table, score_dense, score_shortlist
from jxmc.ops.topk import approx_top_k, chunked_top_k, top_k


def test_shortlist_equals_dense_at_ids():
    table = init_table(jax.random.PRNGKey(0), 50, 8, std=1.0)
    table["b"] = np.arange(50, dtype=np.float32) / 10
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    ids = jnp.asarray(np.random.default_rng(0).integers(-1, 50, size=(4, 12)), jnp.int32)
    dense = score_dense(table, x)
    short = jax.jit(score_shortlist)(table, x, ids)
    ref = jnp.take_along_axis(dense, jnp.maximum(ids, 0), axis=1)
    np.testing.assert_allclose(short[ids >= 0], ref[ids >= 0], rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(np.asarray(short)[np.asarray(ids) < 0]))


def _chunked_case(dtype, with_bits=False):
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    n, h, K, c = 4, 8, 50, 11
    w = jax.random.normal(keys[0], (K, h)).astype(dtype)
    b = jax.random.normal(keys[1], (K,))
    x = jax.random.normal(keys[2], (n, h))
    ids = jax.random.randint(keys[3], (n, c), -1, K)

    def loss(w, x, delta):  # a non-linear loss, so the gradients depend on the scores
        table = {"w": w, "b": b, **({"bits": lowp.to_bits(w)} if with_bits else {})}
        s = score_shortlist(table, x, ids, delta)
        return jnp.sum(jnp.where(ids >= 0, jnp.sin(s), 0.0)), s

    return w, x, jnp.zeros((n, c)), ids, loss


@pytest.mark.parametrize("dtype,with_bits", [(jnp.float32, False), (jnp.bfloat16, True)])
def test_shortlist_in_chunks_equals_one_gather(monkeypatch, dtype, with_bits):
    w, x, delta, ids, loss = _chunked_case(dtype, with_bits)
    args = (1, 2) if with_bits else (0, 1, 2)  # a table read from its bits is a constant
    once = jax.jit(jax.value_and_grad(loss, args, has_aux=True))(w, x, delta)
    monkeypatch.setattr(heads, "GATHER_CHUNK_BYTES", 3 * x.size * 4)  # chunks of 3 rows: 4
    chunked = jax.jit(jax.value_and_grad(loss, args, has_aux=True))(w, x, delta)
    (_, s0), g0 = once
    (_, s1), g1 = chunked
    np.testing.assert_allclose(s1, s0, rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(np.asarray(s1)[np.asarray(ids) < 0]))
    for a, b in zip(g1, g0, strict=True):  # a bf16 gradient: summed in bf16, in another order
        tol = 1e-4 if a.dtype == jnp.float32 else 2e-2
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=tol, atol=tol)


def test_shortlist_in_chunks_refuses_a_gradient_of_a_table_read_from_bits(monkeypatch):
    w, x, delta, ids, loss = _chunked_case(jnp.bfloat16, with_bits=True)
    monkeypatch.setattr(heads, "GATHER_CHUNK_BYTES", 3 * x.size * 4)
    with pytest.raises(ValueError, match="cannot be differentiated"):
        jax.grad(lambda w: loss(w, x, delta)[0])(w)


@pytest.mark.parametrize("with_bits", [False, True])
def test_shortlist_in_chunks_keeps_one_chunk_of_rows(monkeypatch, with_bits):
    """The compiled gradient holds about one chunk of gathered rows, not all of them,
    and no copy or cast of the whole table (XLA's memory analysis of the temporaries;
    the table, an f32 one or the bits of a bf16 one, is an argument)."""
    n, h, K, c = 64, 64, 20000, 512
    rows_bytes = n * c * h * 4  # 8 MiB of rows as f32

    def loss(w, b, x, d):  # w: an f32 table, or a bf16 one's bits (the sparse train step)
        table = ({"w": lowp.from_bits(w, jnp.bfloat16), "b": b, "bits": w} if with_bits
                 else {"w": w, "b": b})
        return jnp.sum(score_shortlist(table, x, jnp.zeros((n, c), jnp.int32), d))

    def temp(chunk_bytes):
        monkeypatch.setattr(heads, "GATHER_CHUNK_BYTES", chunk_bytes)
        step = jax.jit(jax.grad(loss, (2, 3)))
        w = jnp.zeros((K, h), jnp.uint16 if with_bits else jnp.float32)
        args = (w, jnp.zeros(K), jnp.ones((n, h)), jnp.zeros((n, c)))
        return step.lower(*args).compile().memory_analysis().temp_size_in_bytes

    assert temp(2 * rows_bytes) >= rows_bytes  # one gather: all the rows at once
    assert temp(rows_bytes // 8) < rows_bytes // 4  # 8 chunks: about one at a time


def test_shortlist_of_a_bf16_table_without_bits_is_one_gather(monkeypatch):
    """A bf16 table given without its bits (prediction) is gathered at once: in a loop,
    XLA would cast the whole table to f32 (5 MiB here) before the gather."""
    n, h, K, c = 8, 64, 20000, 64
    monkeypatch.setattr(heads, "GATHER_CHUNK_BYTES", n * 8 * h * 4)  # chunks of 8 would do
    f = jax.jit(lambda w, b, x, ids: score_shortlist({"w": w, "b": b}, x, ids))
    args = (jnp.zeros((K, h), jnp.bfloat16), jnp.zeros(K), jnp.ones((n, h)),
            jnp.zeros((n, c), jnp.int32))
    assert f.lower(*args).compile().memory_analysis().temp_size_in_bytes < 2**20


@pytest.mark.parametrize("K,chunk,k", [(100, 16, 5), (64, 64, 10), (37, 100, 37), (33, 8, 1)])
def test_chunked_top_k_equals_lax(K, chunk, k):
    w = jax.random.normal(jax.random.PRNGKey(K), (K, 6))
    b = jax.random.normal(jax.random.PRNGKey(K + 1), (K,))
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 6))
    v, i = jax.jit(chunked_top_k, static_argnames=("k", "chunk"))(x, w, b, k=k, chunk=chunk)
    rv, ri = jax.lax.top_k(x @ w.T + b, k)
    np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(i, ri)


def test_top_k_f32_and_errors():
    s = jnp.asarray([[1.0, 3.0, 2.0]], jnp.bfloat16)
    v, i = top_k(s, 2)
    assert v.dtype == jnp.float32 and i.tolist() == [[1, 2]]
    v2, i2 = approx_top_k(s, 2)  # exact off TPU
    np.testing.assert_array_equal(i2, i)
    with pytest.raises(ValueError):
        top_k(s, 4)
    with pytest.raises(ValueError):
        chunked_top_k(jnp.ones((1, 2)), jnp.ones((3, 2)), None, 4)
