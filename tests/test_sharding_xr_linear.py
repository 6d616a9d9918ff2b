"""XR-Linear on a device mesh (:mod:`jxmc.models.tree_linear.mesh`): the rankers'
chunks solved on the mesh's devices give a bit-identical model, and the beam
search with every level's rankers split on ``model`` and the queries on ``data``
gives the single-device predictions, with no collective larger than the beam's
``n / n_data x b x B`` child scores."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest
from test_sharding import collectives, run_worker

from jxmc.models.tree_linear import mesh as XM
from jxmc.ops import sparse_weights as sw


def _random_level(n_parents: int, n_children: int, d: int, seed: int) -> dict:
    """A stored level (sparse_weights' CSR over parents) with random slots and weights;
    some parents empty, some slots heavy (more than 8 children)."""
    rng = np.random.default_rng(seed)
    parts = []
    for u in range(n_parents):
        n_slots = 0 if u % 5 == 3 else int(rng.integers(1, 12))
        feats = np.sort(rng.choice(d, size=n_slots, replace=False)).astype(np.int32)
        counts = rng.integers(1, n_children + 1, size=n_slots)
        children = np.concatenate([np.sort(rng.choice(n_children, size=c, replace=False))
                                   for c in counts] or [np.zeros(0, np.int64)])
        values = rng.standard_normal(int(counts.sum())).astype(np.float32)
        parts.append((np.full(n_slots, u), feats, counts, children, values))
    return sw.assemble_level(parts, n_parents, n_children)


@pytest.mark.parametrize("n_shards", [1, 3, 4])
def test_split_level_scores_add_up_exactly(n_shards):
    P_, B, d = 11, 12, 30
    level = _random_level(P_, B, d, seed=n_shards)
    light, heavy, shapes = sw.scoring_layout(level, B)
    assert light is not None and heavy is not None  # both parts exercised
    l_sh, h_sh, ranges = XM.split_level(light, heavy, P_, B, n_shards)
    assert ranges[0, 0] == 0 and ranges[-1, 1] == P_ and (ranges[1:, 0] == ranges[:-1, 1]).all()
    rng = np.random.default_rng(0)
    n, b, z = 6, 4, 7
    q_idx = np.stack([rng.choice(d, size=z, replace=False) for _ in range(n)]).astype(np.int32)
    q_val = rng.random((n, z)).astype(np.float32)
    parents = rng.integers(-1, P_, size=(n, b)).astype(np.int32)
    l_steps, l_width, h_steps = shapes

    def score(lt, hv, par):
        lt, hv = jax.tree.map(jax.numpy.asarray, (lt, hv))
        return (sw.score_children(lt, q_idx, q_val, par, n_children=B, steps=l_steps,
                                  width=l_width)
                + sw.score_dense_rows(hv, q_idx, q_val, par, steps=h_steps))

    ref = np.asarray(score(light, heavy, parents))
    total = np.zeros_like(ref)
    for m in range(n_shards):
        lo, hi = ranges[m]
        mine = np.where((parents >= lo) & (parents < hi), parents - lo, -1).astype(np.int32)
        part = np.asarray(score({k: v[m] for k, v in l_sh.items()},
                                {k: v[m] for k, v in h_sh.items()}, mine))
        assert (part[mine < 0] == 0).all()  # a shard adds exact zeros for parents it lacks
        total = total + part
    np.testing.assert_array_equal(total, ref)
    assert np.abs(ref).max() > 0


def test_parent_bounds_balance_the_cost():
    cost = np.array([5, 1, 1, 1, 1, 1, 5, 0, 0, 5], float)
    b = XM.parent_bounds(cost, 3)
    assert b[0] == 0 and b[-1] == len(cost) and (np.diff(b) >= 0).all()
    sums = [cost[b[i]:b[i + 1]].sum() for i in range(3)]
    assert max(sums) <= 10 and sum(sums) == cost.sum()
    assert XM.parent_bounds(np.ones(1), 4).tolist() in ([0, 0, 0, 0, 1], [0, 1, 1, 1, 1])


def test_balanced_bounds_lower_the_padded_bytes():
    rng = np.random.default_rng(0)
    # two parts whose sizes peak in different parents: balancing their sum pads both
    sizes = np.stack([rng.integers(0, 100, 60) * (np.arange(60) < 30),
                      rng.integers(0, 100, 60) * (np.arange(60) >= 30)], axis=1).astype(float)
    w = np.array([1.0, 3.0])

    def padded(b):
        return sum(w[j] * max(sizes[b[m]:b[m + 1], j].sum() for m in range(4)) for j in range(2))

    start = XM.parent_bounds(sizes @ w + 1e-3, 4)
    b = XM.balanced_bounds(sizes, w, 4)
    assert b[0] == 0 and b[-1] == 60 and (np.diff(b) >= 0).all()
    assert padded(b) < padded(start)
    prefix = np.vstack([np.zeros((1, 2)), np.cumsum(sizes, 0)])
    best = min((np.diff(prefix[[0, *c, 60]], axis=0).max(0) * w).sum()  # every cut: brute force
               for c in itertools.combinations_with_replacement(range(61), 3))
    assert padded(b) <= 1.05 * best


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("xrl")
    run_worker("xrl", str(out / "one"), "--devices", "1", timeout=600)
    run_worker("xrl", str(out / "mesh"), "--devices", "4", "--mesh", "data=2,model=2",
               timeout=600)
    return out


def test_mesh_training_is_bit_identical_and_uses_the_mesh(runs):
    one, mesh = (np.load(runs / name / "xrl.npz") for name in ("one", "mesh"))
    i1, im = (json.loads((runs / name / "xrl.json").read_text()) for name in ("one", "mesh"))
    assert i1["branching"] == im["branching"] and len(i1["branching"]) >= 3
    level_keys = [k for k in one.files if k.startswith("levels/")]
    assert len(level_keys) == 5 * len(i1["branching"])
    for key in level_keys + ["perm"]:
        assert one[key].dtype == mesh[key].dtype, key
        np.testing.assert_array_equal(one[key], mesh[key], err_msg=key)
    # the same chunks, on one device there and on every device of the mesh here
    assert len(i1["chunk_devices"]) == len(im["chunk_devices"]) > 2 * 4
    assert {tuple(d) for d in i1["chunk_devices"]} == {(0,)}
    assert sorted({d for ds in im["chunk_devices"] for d in ds}) == im["mesh_devices"]
    assert all(len(d) == 1 for d in im["chunk_devices"])


def test_mesh_beam_search_equals_one_device(runs):
    one, mesh = (np.load(runs / name / "xrl.npz") for name in ("one", "mesh"))
    np.testing.assert_array_equal(mesh["ids"], one["ids"])
    np.testing.assert_array_equal(mesh["scores"], one["scores"])
    assert (one["ids"][:, 0] >= 0).all()


def test_mesh_beam_moves_only_beam_scores_and_splits_the_model(runs):
    info = json.loads((runs / "mesh" / "xrl.json").read_text())
    found = collectives((runs / "mesh" / "beam.hlo.txt").read_text())
    n_local = info["n"] // info["data"]
    bound = n_local * 3 * max(info["branching"])  # n / n_data x beam x B
    assert found and {op for op, _ in found} == {"all-reduce"}, found
    assert all(size <= bound for _, size in found), (found, bound)
    n_labels = int(np.prod(info["branching"]))
    assert bound < info["n"] * n_labels  # the check can fail: all scores would exceed it
    # every device holds a part of every level; together about one copy per data row
    per_device = list(info["level_bytes_per_device"].values())
    assert len(per_device) == 4
    assert max(per_device) < 0.8 * info["one_device_layout_bytes"], info


def test_one_device_mesh_in_process():
    from jxmc import sharding as S
    from jxmc.models.tree_linear import xr_linear

    X, Y = _small()
    # host_queries=0: the device path, which the mesh's equals bit for bit
    cfg = xr_linear.Config(max_leaf_size=3, nr_splits=2, beam_size=3, max_epochs=3, host_queries=0)
    params = xr_linear.fit(X, Y, cfg, seed=0, progress=False)
    mesh = S.mesh_from_string("data=1,model=1", jax.devices()[:1])
    a = xr_linear.predict(params, X[:9], cfg, k=3)
    b = xr_linear.predict(params, X[:9], cfg, k=3, mesh=mesh)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def _small():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    Y = sp.csr_matrix((rng.random((40, 8)) < 0.3).astype(np.float32))
    X = sp.csr_matrix(rng.random((40, 12)) * (rng.random((40, 12)) < 0.4) + Y @ rng.random((8, 12)))
    return sp.csr_matrix(X / np.linalg.norm(X.toarray(), axis=1, keepdims=True)), Y
