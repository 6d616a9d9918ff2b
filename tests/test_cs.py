"""``--method cs`` (:mod:`jxmc.models.embedding.cs`): its parts on small data.

OMP recovers an exactly s-sparse vector from noiseless measurements; the
projections have the shapes, dtypes and column norms documented; the ranking of
the recovered vector puts the support first and breaks the zeros' ties by the
proxy; end to end on synthetic data with a planted linear structure cs beats
random ranking by a wide margin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from jxmc import metrics
from jxmc.errors import ConfigError
from jxmc.models.embedding import cs


@pytest.mark.parametrize("kind", cs.PROJECTIONS)
def test_projection_shapes_dtypes_and_unit_columns(kind):
    A = cs.projection(jax.random.PRNGKey(3), 32, 100, kind)
    assert A.shape == (32, 100) and A.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(A), axis=0), 1.0, rtol=1e-5)
    if kind == "rademacher":
        np.testing.assert_allclose(np.abs(np.asarray(A)), 1 / np.sqrt(32), rtol=1e-6)
    # seeded: the same key draws the same matrix, another key another one
    np.testing.assert_array_equal(A, cs.projection(jax.random.PRNGKey(3), 32, 100, kind))
    assert not np.allclose(A, cs.projection(jax.random.PRNGKey(4), 32, 100, kind))


def test_unknown_projection_is_refused():
    with pytest.raises(ConfigError, match="projection"):
        cs.projection(jax.random.PRNGKey(0), 4, 8, "hadamard")
    X = sp.random(20, 6, density=0.5, format="csr", dtype=np.float32, random_state=0)
    Y = sp.csr_matrix(np.eye(20, 5, dtype=np.float32))
    with pytest.raises(ConfigError, match="projection"):
        cs.fit(X, Y, cs.Config(projection="sparse"), progress=False)


@pytest.mark.parametrize("nonnegative", [True, False])
def test_omp_recovers_an_exactly_sparse_vector_from_noiseless_measurements(nonnegative):
    L, m, s, B = 256, 64, 6, 16
    A = cs.projection(jax.random.PRNGKey(0), m, L, "gaussian")
    rng = np.random.default_rng(0)
    Y = np.zeros((B, L), np.float32)
    for b in range(B):
        Y[b, rng.choice(L, s, replace=False)] = rng.uniform(0.5, 2.0, s)
    Z = jnp.asarray(Y) @ A.T
    support, coef = jax.jit(lambda Z, A: cs.omp(Z, A, s, nonnegative=nonnegative))(Z, A)
    assert support.shape == coef.shape == (B, s)
    assert support.dtype == jnp.int32 and coef.dtype == jnp.float32
    rec = np.zeros_like(Y)
    rec[np.arange(B)[:, None], np.asarray(support)] = np.asarray(coef)
    for b in range(B):
        assert set(np.asarray(support[b]).tolist()) == set(np.flatnonzero(Y[b]).tolist())
    np.testing.assert_allclose(rec, Y, atol=1e-4)


def test_omp_with_a_precomputed_gram_matches_and_never_selects_twice():
    L, m, s = 40, 12, 12  # s = m: the last columns are nearly in the span of the others
    A = cs.projection(jax.random.PRNGKey(1), m, L, "rademacher")
    Z = jax.random.normal(jax.random.PRNGKey(2), (5, m))
    s1, c1 = cs.omp(Z, A, s)
    s2, c2 = cs.omp(Z, A, s, gram=A.T @ A)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(c1, c2, rtol=1e-4, atol=1e-4)
    for row in np.asarray(s1):
        assert len(set(row.tolist())) == s
    # s = m columns span R^m: the residual of the full selection is ~0
    A_np = np.asarray(A)
    for b in range(5):
        fit = A_np[:, np.asarray(s1[b])] @ np.asarray(c1[b])
        np.testing.assert_allclose(fit, np.asarray(Z[b]), atol=1e-3)


def test_rank_recovered_support_first_then_zeros_by_proxy():
    support = jnp.array([[4, 1]], jnp.int32)
    coef = jnp.array([[0.5, -0.2]])
    proxy = jnp.array([[9.0, 0.0, 3.0, 1.0, 2.0, 5.0]])
    ids, scores = cs.rank_recovered(support, coef, proxy, 6)
    # 4 (0.5), then the zeros 0, 5, 2, 3 by proxy, then 1 (-0.2)
    np.testing.assert_array_equal(ids, [[4, 0, 5, 2, 3, 1]])
    np.testing.assert_allclose(scores, [[0.5, 0, 0, 0, 0, -0.2]])
    ids3, _ = cs.rank_recovered(support, coef, proxy, 3)
    np.testing.assert_array_equal(ids3, [[4, 0, 5]])


def _planted(n, d, L, seed):
    """Points whose labels are the top-3 of a hidden linear score of their features."""
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(d, L))
    X = rng.random((n, d)) * (rng.random((n, d)) < 0.3)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)
    top = np.argsort(-(X @ T), axis=1)[:, :3]
    Y = np.zeros((n, L), np.float32)
    Y[np.arange(n)[:, None], top] = 1
    return sp.csr_matrix(X.astype(np.float32)), sp.csr_matrix(Y)


def test_end_to_end_beats_random_on_planted_data():
    L = 60
    X, Y = _planted(700, 30, L, seed=0)
    Xtr, Ytr, Xte, Yte = X[:500], Y[:500], X[500:], Y[500:]
    config = cs.Config(m=30, sparsity=5, ridge=0.1)
    params = cs.fit(Xtr, Ytr, config, seed=0, progress=False)
    assert params["W"].shape == (30, 30) and params["A"].shape == (30, L)
    assert all(a.dtype == np.float32 for a in params.values())
    top = cs.predict(params, Xte, config, k=5)
    assert top.ids.shape == (200, 5) and top.ids.dtype == np.int32
    p1 = metrics.evaluate(top.ids, Yte, ks=(1,))["P@1"]
    assert p1 > 3 * (3 / L) and p1 > 0.4, p1  # random ranking: P@1 = 3/L = 0.05
    # fewer iterations change the recovered vector, the ranking stays sound
    few = cs.predict(params, Xte, cs.Config(m=30, sparsity=2, ridge=0.1), k=5)
    assert ((np.asarray(few.scores) != 0).sum(axis=1) <= 2).all()


def test_bad_options_are_refused():
    X = sp.random(20, 6, density=0.5, format="csr", dtype=np.float32, random_state=0)
    Y = sp.csr_matrix(np.eye(20, 5, dtype=np.float32))
    for bad in (cs.Config(m=0), cs.Config(sparsity=0), cs.Config(ridge=0.0),
                cs.Config(predict_batch_size=0)):
        with pytest.raises(ConfigError):
            cs.fit(X, Y, bad, progress=False)
    cs.check_prediction_memory(1000, 100, 10, cs.Config())
    with pytest.raises(ConfigError, match="budget"):  # G = A^T A alone is 40 GB
        cs.check_prediction_memory(100_000, 100, 10, cs.Config())
