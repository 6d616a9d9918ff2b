"""jxmc.models.tree_linear.rankers: both solvers give the same per-level rankers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toy_data import planted

from jxmc.embed import pifa
from jxmc.models.tree_linear import rankers
from jxmc.ops.sparse import add_bias
from jxmc.tree.kmeans import build_tree


def _dense(level, n_parents, B, d):
    """The stored level as dense ``f32[n_parents, d, B]`` weights."""
    W = np.zeros((n_parents, d, B), np.float32)
    indptr, feats = level["indptr"], level["features"]
    slot_ptr, children, values = level["slot_ptr"], level["children"], level["values"]
    for u in range(n_parents):
        for s in range(indptr[u], indptr[u + 1]):
            for e in range(slot_ptr[s], slot_ptr[s + 1]):
                W[u, feats[s], children[e]] = values[e]
    return W


def make_problem():
    X, Y = planted(160, 30, 12, 0, density=0.3, noise=0.1, noise_density=0.2)
    tree = build_tree(pifa(Y, X), max_leaf_size=3, nr_splits=2, seed=0)
    return add_bias(X, 1.0), Y, tree


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.mark.parametrize("level", [1, 2])
def test_dual_cd_and_newton_agree(problem, level):
    Xb, Y, tree = problem
    B = tree.branching[level - 1]
    n_parents = int(np.prod(tree.branching[: level - 1]))
    dual = rankers.train_level(Xb, Y, tree, level, rankers.Options(
        threshold=0.0, eps=1e-5, max_epochs=500, lanes=2))
    newton = rankers.train_level(Xb, Y, tree, level, rankers.Options(
        solver="newton", threshold=0.0, newton_iters=30, cg_iters=50))
    a, b = (_dense(lv, n_parents, B, Xb.shape[1]) for lv in (dual, newton))
    assert np.abs(a).max() > 0.1
    np.testing.assert_allclose(a, b, atol=5e-3)


def test_threshold_drops_small_weights_and_unknown_solver(problem):
    Xb, Y, tree = problem
    kept = rankers.train_level(Xb, Y, tree, 2, rankers.Options(threshold=0.1))
    assert np.all(np.abs(kept["values"]) >= 0.1)
    with pytest.raises(ValueError, match="solver"):
        rankers.train_level(Xb, Y, tree, 2, rankers.Options(solver="sgd"))


def test_piece_width_follows_row_lengths():
    assert rankers.piece_width(np.array([3, 4, 5, 6])) == 16
    assert rankers.piece_width(np.array([50] * 10 + [90] * 30)) == 128
    assert rankers.piece_width(np.array([1000] * 8)) == 128


def test_balanced_plan_covers_every_parent_within_limits():
    rng = np.random.default_rng(1)
    pairs = rng.integers(1, 200, 60)
    pairs[7] = 1000  # one giant parent, as debian-deps' libc6 cluster
    slots = rng.integers(1, 50, 60)
    plan = rankers.plan_balanced(pairs, slots, n_lanes=4, slot_limit=400)
    got = np.sort(np.concatenate(plan))
    np.testing.assert_array_equal(got, np.arange(60))
    for ps in plan:
        assert np.all(np.diff(ps) > 0)
        assert (slots[ps] + 1).sum() <= 400
        lane = rankers.svm_dual.assign_lanes(pairs[ps], 4)
        assert np.bincount(lane, weights=pairs[ps]).max() <= pairs[ps].max() * 1.5
    assert any(7 in ps and len(ps) > 1 for ps in plan)  # the giant parent's lanes get company


def test_one_lane_plan_takes_parents_one_after_another():
    rng = np.random.default_rng(2)
    pairs = rng.integers(1, 200, 60)
    pairs[7] = 1000
    slots = rng.integers(1, 50, 60)
    min_length = int(pairs.sum()) // 8
    plan = rankers.plan_balanced(pairs, slots, n_lanes=1, slot_limit=10**6, min_length=min_length)
    np.testing.assert_array_equal(np.sort(np.concatenate(plan)), np.arange(60))
    assert len(plan) <= 10  # not one chunk per parent
    for ps in plan:
        assert pairs[ps].sum() <= max(min_length, pairs[ps].max())


def test_lanes_chosen_by_the_cpu_cost_model():
    # one giant parent of a wide level: lanes would only slow its steps down
    pairs = np.array([21597] + [2000] * 7)
    assert rankers.choose_lanes(pairs, 128, 75, 2, 16) == 1
    # many small parents of a narrow level: lanes side by side pay for themselves
    assert rankers.choose_lanes(np.full(512, 100), 16, 8, 2, 16) > 1
    assert rankers.choose_lanes(np.full(512, 100), 16, 8, 2, 1) == 1
    assert rankers.step_us(1, 128, 75) < rankers.step_us(2, 128, 75) / 2


CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
import jax
from test_rankers import make_problem
from jxmc.models.tree_linear import rankers
assert len(jax.local_devices()) == 2
Xb, Y, tree = make_problem()
lv = rankers.train_level(Xb, Y, tree, 2, rankers.Options(lanes=2, chunk_weights=64))
np.savez({out!r}, **lv)
"""


def test_chunks_on_two_host_devices_give_the_same_rankers(problem, tmp_path):
    Xb, Y, tree = problem  # chunk_weights=64: several chunks, so both devices get work
    here = rankers.train_level(Xb, Y, tree, 2, rankers.Options(lanes=2, chunk_weights=64))
    out = tmp_path / "level.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    there = np.load(out)
    for key, value in here.items():
        np.testing.assert_array_equal(there[key], value, err_msg=key)


def test_device_pool_prefers_a_device_that_has_compiled_the_program():
    import threading
    from types import SimpleNamespace

    devices = [SimpleNamespace(id=0), SimpleNamespace(id=1)]
    pool = rankers.DevicePool(devices)
    gate = threading.Event()

    def work(device):
        gate.wait(30)
        return device.id

    try:
        futs = [pool.submit(1e5, work, program="level 2"),  # no device has it: device 0
                pool.submit(1e5, work, program="level 2"),  # queued behind, no compilation
                pool.submit(1e5, work),                     # no program: least loaded
                pool.submit(5e6, work, program="level 2"),  # device 1 would compile: 0
                pool.submit(1e5, work, program="level 2")]  # device 1, compiling, is sooner
        gate.set()
        assert [f.result(30) for f in futs] == [0, 0, 1, 0, 1]
    finally:
        gate.set()
        pool.shutdown()


def test_level_shape_known_before_layout_is_the_chunks_largest(problem, monkeypatch):
    """The padded shape computed from counts (before any chunk is laid out) is the
    maxima of the laid-out chunks' own shapes: no chunk exceeds it, none is wasted."""
    Xb, Y, tree = problem
    seen = []

    def record(chunk, seed, caps, options, device):
        seen.append((chunk, caps))
        return np.zeros((caps["n_slots"], chunk.y.shape[1]), np.float32)

    monkeypatch.setattr(rankers, "_solve_chunk", record)
    for lanes in (1, 2):
        seen.clear()
        rankers.train_level(Xb, Y, tree, 2, rankers.Options(lanes=lanes, chunk_weights=64))
        chunks = [c for c, _ in seen]
        assert len(chunks) > 1 and all(caps == seen[0][1] for _, caps in seen)
        assert seen[0][1] == dict(n_slots=max(int(c.idx.max()) for c in chunks) + 1,
                                  rows=max(c.y.shape[0] - 1 for c in chunks),
                                  pieces=max(c.idx.shape[0] - 1 for c in chunks),
                                  steps=max(c.sched.shape[0] for c in chunks))
