"""Shortlist heads equal dense scores; exact, chunked and approximate top-k."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
