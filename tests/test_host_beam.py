"""The host (numpy) beam of the tree-linear models against the device (XLA) beam."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from toy_data import planted

from jxmc.errors import ConfigError
from jxmc.models.tree_linear import host_beam, scoring
from jxmc.models.tree_linear import xr_linear as xr
from jxmc.ops.sparse import add_bias

CFG = xr.Config(max_leaf_size=4, nr_splits=2, beam_size=4, predict_batch_size=64, host_queries=8)


@pytest.fixture(scope="module")
def trained():
    X, Y = planted(seed=3)
    return X, xr.fit(X[:240], Y[:240], CFG, seed=0, progress=False)


def _device(params, X, cfg, k):
    levels = scoring.device_levels(params, scoring.tree_of(params).depth)
    return scoring.beam(params, levels, add_bias(sp.csr_matrix(X, dtype=np.float32), cfg.bias),
                        cfg, k=k)


@pytest.mark.parametrize("transform", ["l3-hinge", "l2-hinge"])
@pytest.mark.parametrize("k", [3, 30])  # k beyond the labels a beam reaches: -1 padding
def test_host_beam_equals_device_beam(trained, transform, k):
    X, params = trained
    cfg = dataclasses.replace(CFG, transform=transform)
    Xt = sp.csr_matrix(X[240:], dtype=np.float32)
    host = host_beam.beam(host_beam.host_model(params), Xt, bias=cfg.bias,
                          beam_size=cfg.beam_size, k=k, transform=transform)
    dev = _device(params, Xt, cfg, k)
    assert host.ids.shape == dev.ids.shape == (60, k) and host.ids.dtype == np.int32
    np.testing.assert_array_equal(host.ids, dev.ids)
    np.testing.assert_allclose(host.scores, dev.scores, rtol=1e-5, atol=1e-6)
    if k == 30:
        assert (host.ids == -1).any() and np.isneginf(host.scores[host.ids == -1]).all()


def test_host_beam_merges_label_copies_as_the_device_does():
    X, Y = planted(seed=4)
    cfg = dataclasses.replace(CFG, clusters_per_label=2)
    params = xr.fit(X[:240], Y[:240], cfg, seed=0, progress=False)
    model = host_beam.host_model(params)
    assert model.copies
    Xt = sp.csr_matrix(X[240:], dtype=np.float32)
    host = host_beam.beam(model, Xt, bias=cfg.bias, beam_size=cfg.beam_size, k=5)
    dev = _device(params, Xt, cfg, 5)
    np.testing.assert_array_equal(host.ids, dev.ids)
    np.testing.assert_allclose(host.scores, dev.scores, rtol=1e-5, atol=1e-6)
    for row in host.ids:  # a label once per list
        row = row[row >= 0]
        assert len(set(row)) == len(row)


def test_with_bias_is_add_bias():
    X = sp.random(7, 5, density=0.4, format="lil", dtype=np.float32, random_state=0)
    X[3] = 0  # an empty row
    X = sp.csr_matrix(X)
    indptr, indices, data = host_beam.with_bias(X, 0.5)
    ref = add_bias(X, 0.5)
    got = sp.csr_matrix((data, indices, indptr), shape=ref.shape)
    np.testing.assert_array_equal(got.toarray(), ref.toarray())


def test_predict_takes_the_host_path_for_few_queries_only(trained, monkeypatch):
    X, params = trained
    model = xr.prepare(params, CFG)
    calls = []
    real = host_beam.beam
    monkeypatch.setattr(host_beam, "beam", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    few = xr.predict(model, X[240:248], CFG, k=3)  # 8 queries: host
    assert calls == [1] and model.state._device is None  # nothing laid out on the device
    many = xr.predict(model, X[240:249], CFG, k=3)  # 9: device
    assert calls == [1] and model.state._device is not None
    np.testing.assert_array_equal(few.ids, many.ids[:8])
    off = dataclasses.replace(CFG, host_queries=0)
    xr.predict(model, X[240:241], off, k=3)
    assert calls == [1]
    with pytest.raises(ConfigError, match="host_queries"):
        xr.fit(X[:10], np.eye(10, 3), dataclasses.replace(CFG, host_queries=-1))
