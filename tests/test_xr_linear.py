import dataclasses

import numpy as np
import pytest
from toy_data import planted

from jxmc.checkpoint import TrainCheckpoints, load_params, save_params
from jxmc.models.tree_linear import xr_linear as xr

_data = planted


CFG = xr.Config(max_leaf_size=4, nr_splits=2, beam_size=4, predict_batch_size=64)


def test_fit_predict_learns_and_save_load_is_identical(tmp_path):
    X, Y = _data()
    params = xr.fit(X[:240], Y[:240], CFG, seed=0, progress=False)
    assert tuple(params["branching"])[-1] <= 4
    top = xr.predict(params, X[240:], CFG, k=3)
    assert top.ids.shape == (60, 3) and top.ids.dtype == np.int32
    p1 = np.mean([Y[240 + i, top.ids[i, 0]] for i in range(60)])
    assert p1 > 0.7
    save_params(tmp_path / "params", params)
    again = xr.predict(load_params(tmp_path / "params"), X[240:], CFG, k=3)
    np.testing.assert_array_equal(top.ids, again.ids)
    np.testing.assert_array_equal(top.scores, again.scores)


class _Interrupt(TrainCheckpoints):
    """Checkpoints that stop the run (as a kill would) right after the first save."""

    def save(self, step, state):
        super().save(step, state)
        raise KeyboardInterrupt


def _assert_same_tree(a, b):
    import jax

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_man_negatives_resume_after_interruption_is_bit_identical(tmp_path):
    X, Y = _data(seed=1)
    cfg = dataclasses.replace(CFG, negatives="tfn+man")
    full = xr.fit(X, Y, cfg, seed=0, progress=False)
    assert len(full["branching"]) >= 2  # so the interruption falls mid-run
    with pytest.raises(KeyboardInterrupt):
        xr.fit(X, Y, cfg, seed=0, ckpt=_Interrupt(tmp_path / "ck"), progress=False)
    ck = TrainCheckpoints(tmp_path / "ck")
    assert ck.latest_step() == 1 < len(full["branching"])  # one level of several saved
    resumed = xr.fit(X, Y, cfg, seed=0, ckpt=ck, progress=False)
    assert ck.latest_step() == len(full["branching"])
    _assert_same_tree(full, resumed)


def test_levels_trained_at_once_equal_one_after_another():
    """TFN levels solved side by side on a shared device pool give the same model."""
    X, Y = _data()
    one = xr.fit(X, Y, dataclasses.replace(CFG, level_workers=1), seed=0, progress=False)
    two = xr.fit(X, Y, dataclasses.replace(CFG, level_workers=2), seed=0, progress=False)
    assert set(one["levels"]) == set(two["levels"]) and len(one["levels"]) >= 3
    for name, lv in one["levels"].items():
        for key, a in lv.items():
            np.testing.assert_array_equal(np.asarray(a), np.asarray(two["levels"][name][key]))
