from __future__ import annotations

import numpy as np
import pytest

from jxmc import metrics
from jxmc.checkpoint import TrainCheckpoints
from jxmc.data.synthetic import SyntheticConfig, generate
from jxmc.errors import ConfigError
from jxmc.models import get_method, ovr

TINY = SyntheticConfig(n_train=1200, n_test=300, n_labels=64, n_features=500, branching=(4, 4))
FAST = ovr.Config(epochs=3, batch_size=128, learning_rate=0.05)


@pytest.fixture(scope="module")
def data():
    return generate(TINY)


@pytest.fixture(scope="module")
def trained(data):
    Xtr, Ytr, _, _ = data
    return ovr.fit(Xtr, Ytr, FAST, seed=0, progress=False)


def test_learns_far_above_chance(data, trained):
    _, _, Xte, Yte = data
    topk = ovr.predict(trained, Xte, FAST, k=5)
    assert topk.ids.shape == (300, 5) and topk.ids.dtype == np.int32
    assert (np.diff(topk.scores, axis=1) <= 1e-6).all()  # best first
    p1 = metrics.evaluate(topk.ids, Yte, ks=(1,))["P@1"]
    # chance is about the head label's frequency; the planted signal gives far more
    head = np.asarray(Yte.sum(0)).max() / Yte.shape[0]
    assert p1 > max(0.4, 2 * head)


def test_predict_pads_beyond_label_count(data, trained):
    _, _, Xte, _ = data
    topk = ovr.predict(trained, Xte[:3], FAST, k=70)
    assert (topk.ids[:, 64:] == -1).all() and np.isneginf(topk.scores[:, 64:]).all()
    assert sorted(topk.ids[0, :64].tolist()) == list(range(64))


def test_sparse_updates_match_dense_step():
    # the lazy update touches only the batch's rows: one step from zero equals a dense step
    # (optax's Adam on the full f32[d, L] weights), because untouched rows get g = 0
    import jax
    import optax

    Xtr, Ytr, _, _ = generate(SyntheticConfig(n_train=64, n_test=8, n_labels=16, n_features=40,
                                              branching=(2, 2)))
    cfg = ovr.Config(epochs=1, batch_size=64, learning_rate=0.1)
    p = ovr.fit(Xtr, Ytr, cfg, seed=0, progress=False)
    # the dense reference: the same batch (same order as fit's epoch 0), full gradient
    n, d = Xtr.shape
    L = Ytr.shape[1]
    order = np.random.default_rng([0, 0]).permutation(n)
    Xb, Yb = Xtr[order], Ytr[order]
    coo, _ = ovr._coo_batch(Xb, d, local=False)
    m = int(Yb.getnnz(axis=1).max())
    labels = np.full((n, m), -1, np.int32)
    for i in range(n):
        ids = Yb.indices[Yb.indptr[i]:Yb.indptr[i + 1]]
        labels[i, :len(ids)] = ids
    params0 = {"w": np.zeros((d, L), np.float32), "b": np.full((L,), -1.0, np.float32)}
    tx = ovr._optimizer(cfg, 1)
    grads = jax.grad(ovr._loss)(params0, coo, labels, np.ones(n, bool), loss=cfg.loss,
                                n_labels=L)
    updates, _ = tx.update(grads, tx.init(params0), params0)
    dense = jax.tree_util.tree_map(np.asarray, optax.apply_updates(params0, updates))
    assert (np.abs(dense["w"]) > 0).sum() > 10  # the reference step moves many weights
    np.testing.assert_allclose(p["w"], dense["w"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p["b"], dense["b"], rtol=1e-5, atol=1e-7)
    untouched = np.asarray(Xtr.sum(0)).ravel() == 0
    assert (p["w"][untouched] == 0).all()


def test_refuses_over_memory_budget():
    import scipy.sparse as sp

    X = sp.csr_matrix((10, 300_000), dtype=np.float32)
    Y = sp.csr_matrix((10, 50_000), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"ovr keeps dense weights: d=300000 .* L=50000 .*xr-linear"):
        ovr.fit(X, Y, ovr.Config(), progress=False)


def test_unknown_loss():
    Xtr, Ytr, _, _ = generate(TINY)
    with pytest.raises(ConfigError, match="unknown loss"):
        ovr.fit(Xtr, Ytr, ovr.Config(loss="hinge3"), progress=False)


class _Interrupting(TrainCheckpoints):
    def save(self, step, state):
        super().save(step, state)
        if step == 2:
            raise KeyboardInterrupt


def test_resume_after_interruption_gives_the_same_model(tmp_path, data, trained):
    Xtr, Ytr, _, _ = data
    with pytest.raises(KeyboardInterrupt):
        ovr.fit(Xtr, Ytr, FAST, seed=0, ckpt=_Interrupting(tmp_path / "ck"), progress=False)
    ckpt = TrainCheckpoints(tmp_path / "ck")
    assert ckpt.latest_step() == 2
    resumed = ovr.fit(Xtr, Ytr, FAST, seed=0, ckpt=ckpt, progress=False)
    np.testing.assert_allclose(resumed["w"], trained["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed["b"], trained["b"], rtol=1e-5, atol=1e-6)


def test_registered_as_a_method():
    assert get_method("ovr").fit is ovr.fit
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("nope")
