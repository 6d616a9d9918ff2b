"""PLST, CPLST, LEML and the linear algebra under them (jxmc.ops.linalg)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import shared_dataset

from jxmc import metrics
from jxmc.checkpoint import TrainCheckpoints
from jxmc.data.synthetic import SyntheticConfig, generate
from jxmc.errors import ConfigError
from jxmc.models.embedding import core as le
from jxmc.models.embedding import cplst, leml, plst
from jxmc.ops import linalg

TINY = SyntheticConfig(n_train=600, n_test=200, n_labels=40, n_features=300, branching=(4, 4))


@pytest.fixture(scope="module")
def data():
    return generate(TINY)


def _dense_problem(n=300, d=20, L=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = (rng.random((n, L)) < 0.3).astype(np.float32)
    return sp.csr_matrix(X), sp.csr_matrix(Y)


def _precision(ids, Y, k):
    """P@k in numpy (``jxmc.metrics`` is tested on its own; this skips its compilation)."""
    Y = sp.csr_matrix(Y)
    return float(np.mean([Y[i, ids[i, :k]].sum() / k for i in range(ids.shape[0])]))


def _numpy_z_h(X, Y, lam, bias=1.0):
    X1 = np.hstack([X.toarray(), np.full((X.shape[0], 1), bias)]).astype(np.float64)
    Yd = Y.toarray().astype(np.float64)
    Z = Yd - Yd.mean(0)
    H = X1 @ np.linalg.solve(X1.T @ X1 + lam * np.eye(X1.shape[1]), X1.T)
    return X1, Yd, Z, H


# --------------------------------------------------------------------------- linear algebra


def test_randomized_svd_matches_numpy_on_low_rank():
    rng = np.random.default_rng(0)
    A = (rng.normal(size=(300, 12)) * np.logspace(1, -1, 12)) @ rng.normal(size=(12, 200))
    A = (A + 1e-4 * rng.normal(size=A.shape)).astype(np.float32)
    U, s, Vt = jax.jit(lambda A, key: linalg.randomized_svd(A, 8, key=key, power_iters=2))(
        jnp.asarray(A), jax.random.PRNGKey(0))
    s_np = np.linalg.svd(A, compute_uv=False)[:8]
    np.testing.assert_allclose(np.asarray(s), s_np, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(Vt) @ np.asarray(Vt).T, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(np.asarray(U).T @ A, np.asarray(s)[:, None] * np.asarray(Vt),
                               atol=1e-3)
    with pytest.raises(ValueError, match="rank"):
        linalg.randomized_svd(A, 201, key=jax.random.PRNGKey(0))


def test_randomized_eigh_matches_numpy():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(80, 10)) * np.linspace(3, 1, 10)
    S = (B @ B.T).astype(np.float32)
    w, V = linalg.randomized_eigh(jnp.asarray(S), 80, 5, key=jax.random.PRNGKey(0))
    w_np = np.sort(np.linalg.eigvalsh(S))[::-1][:5]
    np.testing.assert_allclose(np.asarray(w), w_np, rtol=1e-4)
    np.testing.assert_allclose(S @ np.asarray(V), np.asarray(V) * np.asarray(w), atol=2e-3)


def test_cg_and_sparse_products_match_numpy():
    X, _ = _dense_problem(n=200, d=30)
    X = sp.csr_matrix(X.multiply(np.random.default_rng(0).random(X.shape) < 0.3))
    coo = linalg.coo_from_csr(X, chunk=256)  # several chunks
    assert coo.rows.shape[0] > 1
    B = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(linalg.spmm(coo, jnp.asarray(B), 200)), X @ B,
                               rtol=1e-5, atol=1e-5)
    U = np.random.default_rng(3).normal(size=(200, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(linalg.spmm_t(coo, jnp.asarray(U), 30)), X.T @ U,
                               rtol=1e-5, atol=1e-5)
    G = (X.T @ X).toarray() + 0.5 * np.eye(30)
    sol = linalg.cg(lambda W: jnp.asarray(G, jnp.float32) @ W, jnp.asarray(B),
                    precond=jnp.asarray(np.diag(G), jnp.float32)[:, None], iters=200, tol=1e-6)
    np.testing.assert_allclose(np.asarray(sol), np.linalg.solve(G, B), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- methods


def test_plst_full_rank_equals_least_squares_ovr():
    X, Y = _dense_problem()
    cfg = plst.Config(rank=Y.shape[1], ridge=1e-5)
    params = plst.fit(X, Y, cfg, progress=False)
    topk = plst.predict(params, X, cfg, k=Y.shape[1])
    X1 = np.hstack([X.toarray(), np.ones((X.shape[0], 1), np.float32)]).astype(np.float64)
    W, *_ = np.linalg.lstsq(X1, Y.toarray().astype(np.float64), rcond=None)
    ref = X1 @ W
    np.testing.assert_allclose(topk.scores, -np.sort(-ref, axis=1), atol=1e-3)
    np.testing.assert_array_equal(topk.ids[:, 0], np.argmax(ref, axis=1))


def test_cplst_basis_is_orthonormal_and_beats_plst_on_its_objective():
    X, Y = _dense_problem(n=400, d=25, L=12, seed=3)
    cfg = cplst.Config(rank=4, ridge=0.5)
    V_c = cplst.fit(X, Y, cfg, progress=False)["V"].astype(np.float64)
    V_p = plst.fit(X, Y, plst.Config(rank=4, ridge=0.5), progress=False)["V"].astype(np.float64)
    np.testing.assert_allclose(V_c.T @ V_c, np.eye(4), atol=1e-5)
    _, _, Z, H = _numpy_z_h(X, Y, 0.5)
    K = Z.T @ H @ Z

    def objective(V):
        return np.trace(V.T @ K @ V)

    assert objective(V_c) >= objective(V_p) - 1e-6
    # and it is the optimum: the sum of K's top eigenvalues
    np.testing.assert_allclose(objective(V_c), np.sort(np.linalg.eigvalsh(K))[-4:].sum(),
                               rtol=1e-4)


def test_leml_objective_decreases_monotonically(data):
    Xtr, Ytr, _, _ = data
    finals = []
    for exact_max_dim in (4096, 0):  # exact U-steps, then CG U-steps on the sparse data
        cfg = leml.Config(rank=8, ridge=1.0, iters=6, exact_max_dim=exact_max_dim, cg_iters=20)
        history = [J for _, _, _, J in leml.alternate(Xtr, Ytr, cfg)]
        assert len(history) == 6
        assert all(b <= a + 1e-5 * abs(a) for a, b in zip(history, history[1:], strict=False))
        finals.append(history[-1])
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-2)
    # the reported objective is J(U, V) as written
    *_, (_, U, V, J) = leml.alternate(Xtr, Ytr, dataclasses.replace(cfg, iters=2))
    X1 = np.hstack([Xtr.toarray(), np.ones((Xtr.shape[0], 1))])
    U, V = np.asarray(U, np.float64), np.asarray(V, np.float64)
    direct = (np.square(Ytr.toarray() - X1 @ U @ V.T).sum()
              + 1.0 * (np.square(U).sum() + np.square(V).sum()))
    np.testing.assert_allclose(J, direct, rtol=1e-4)
    np.testing.assert_allclose(float(leml.objective(le.setup_problem(Xtr, Ytr, cfg, "leml")[0],
                                                    jnp.asarray(U, jnp.float32),
                                                    jnp.asarray(V, jnp.float32), lam=1.0)),
                               direct, rtol=1e-4)


@pytest.mark.parametrize("method", [plst, cplst])
def test_exact_and_matrix_free_paths_agree(data, method):
    Xtr, Ytr, Xte, Yte = data
    exact = method.Config(rank=12)
    free = method.Config(rank=12, exact_max_dim=0, cg_iters=300 if method is not leml else 60,
                         cg_tol=1e-6, oversample=20)
    s_exact = method.predict(method.fit(Xtr, Ytr, exact, progress=False), Xte, exact, k=5)
    s_free = method.predict(method.fit(Xtr, Ytr, free, progress=False), Xte, free, k=5)
    for k in (1, 5):
        assert abs(_precision(s_exact.ids, Yte, k) - _precision(s_free.ids, Yte, k)) < 0.03
    head = np.asarray(Yte.sum(0)).max() / Yte.shape[0]
    assert _precision(s_exact.ids, Yte, 1) > max(0.4, 2 * head)


def test_predict_shapes_and_padding(data):
    Xtr, Ytr, Xte, _ = data
    cfg = plst.Config(rank=10, predict_batch_size=64)
    params = plst.fit(Xtr, Ytr, cfg, progress=False)
    assert params["W"].shape == (Xtr.shape[1], 10) and params["V"].shape == (40, 10)
    assert params["b"].shape == (10,) and params["mu"].shape == (40,)
    topk = plst.predict(params, Xte, cfg, k=5)
    assert topk.ids.shape == (200, 5) and topk.ids.dtype == np.int32
    assert topk.scores.dtype == np.float32
    assert (np.diff(topk.scores, axis=1) <= 1e-6).all()
    wide = plst.predict(params, Xte[:3], cfg, k=45)
    assert (wide.ids[:, 40:] == -1).all() and np.isneginf(wide.scores[:, 40:]).all()
    assert sorted(wide.ids[0, :40].tolist()) == list(range(40))
    # rank above L (or n) is clipped
    assert le.effective_rank(plst.Config(rank=500), 600, 40) == 40
    assert le.effective_rank(plst.Config(rank=500), 30, 40) == 30
    with pytest.raises(ValueError, match="features"):
        plst.predict(params, Xte[:, :10], cfg, k=5)


def test_refuses_over_memory_budget():
    X = sp.csr_matrix((200, 3_000_000), dtype=np.float32)
    Y = sp.csr_matrix((200, 2_000_000), dtype=np.float32)
    for method in (plst, cplst, leml):
        with pytest.raises(ConfigError, match=r"d=3000000 features, L=2000000 labels, rank r=100"):
            method.fit(X, Y, method.Config(), progress=False)
    X, Y = _dense_problem()
    params = plst.fit(X, Y, plst.Config(rank=4), progress=False)
    with pytest.raises(ConfigError, match="predict_batch_size"):
        plst.predict(params, X, plst.Config(memory_budget_gb=1e-9), k=3)
    with pytest.raises(ConfigError, match="ridge"):
        cplst.fit(X, Y, cplst.Config(ridge=0.0), progress=False)


class _Interrupting(TrainCheckpoints):
    def save(self, step, state):
        super().save(step, state)
        if step == 1:
            raise KeyboardInterrupt


def test_leml_resumes_to_the_same_model(tmp_path, data):
    Xtr, Ytr, _, _ = data
    cfg = leml.Config(rank=8, iters=2)
    full = leml.fit(Xtr, Ytr, cfg, progress=False)
    with pytest.raises(KeyboardInterrupt):
        leml.fit(Xtr, Ytr, cfg, ckpt=_Interrupting(tmp_path / "ck"), progress=False)
    resumed = leml.fit(Xtr, Ytr, cfg, ckpt=TrainCheckpoints(tmp_path / "ck"), progress=False)
    for key in full:
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-4, atol=1e-5)


def test_methods_are_named():
    assert (plst.METHOD.name, cplst.METHOD.name, leml.METHOD.name) == ("plst", "cplst", "leml")
    assert cplst.METHOD.Config is cplst.Config and leml.METHOD.fit is leml.fit


@pytest.mark.slow
def test_cplst_on_bibtex_reaches_published_minus_one_point():
    from jxmc.data.dataset import load_dataset

    ds = load_dataset(str(shared_dataset("bibtex")))
    cfg = cplst.Config()
    topk = cplst.predict(cplst.fit(ds.train.X, ds.train.Y, cfg, progress=False), ds.test.X, cfg,
                         k=5)
    assert metrics.evaluate(topk.ids, ds.test.Y, ks=(1,))["P@1"] >= 0.6138
