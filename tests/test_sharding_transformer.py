"""The transformer cascade and XR-Transformer on a device mesh.

(1) A cascade whose dense first level has ``K_1 = 64`` nodes, on ``data=2,model=4``:
with ``mesh=`` (:mod:`jxmc.nn.cascade`: the dense level's top-k by
:func:`jxmc.ops.topk.sharded_top_k`, shortlists scored shard by shard) the compiled
prediction has no collective beyond the merged top-k candidates
(``n / D x beam x M``) and one shortlist's ``n / D x beam x B_2`` scores, and the train
step gathers no ``n / D x K_1`` level; XLA's own partitioning of the same functions
(the control) gathers them.  Predictions and losses equal one device's.

(2) XR-Transformer predicted on 4-device meshes: the encoder pass runs replicated on
every device with the texts split on ``data``, and the top-k equals one device's.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_sharding import collectives, run_worker


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transformer")
    run_worker("transformer", str(out), "--devices", "8", timeout=600)
    return out, np.load(out / "transformer.npz"), json.loads((out / "transformer.json").read_text())


def _hlo(out, name):
    return (out / f"{name}.hlo.txt").read_text()


def test_cascade_on_a_mesh_equals_one_device(run):
    _, r, _ = run
    for name in ("mesh", "xla"):
        np.testing.assert_array_equal(r[f"{name}/pred_ids"], r["one/pred_ids"], err_msg=name)
        np.testing.assert_allclose(r[f"{name}/pred_scores"], r["one/pred_scores"], rtol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(r[f"{name}/losses"], r["one/losses"], rtol=1e-5, err_msg=name)
    assert (r["one/pred_ids"] >= 0).all() and len(np.unique(r["one/pred_ids"])) > 10


def test_cascade_prediction_moves_only_top_k_candidates(run):
    out, _, info = run
    n_local = info["n"] // info["data"]
    M, beam, K1 = info["model"], info["beam"], info["K1"]
    topk_bound = n_local * beam * M  # the merged candidates: M shards x beam each
    shortlist = n_local * beam * max(info["branching"][1:])  # a level's n/D x c scores
    hlo = _hlo(out, "predict-mesh")
    found = collectives(hlo)
    assert sorted(op for op, _ in found) == ["all-gather", "all-gather", "all-reduce"], found
    assert all(size <= max(topk_bound, shortlist) for _, size in found), found
    gathers = [line for line in hlo.splitlines() if re.search(r"\ball-gather\(", line)]
    assert len(gathers) == 2 and all("sharded_top_k" in g for g in gathers)
    assert sum(size for op, size in found if op == "all-gather") == 2 * topk_bound
    # the check can fail: XLA's partitioning of the same prediction gathers the dense level
    naive = collectives(_hlo(out, "predict-xla"))
    assert max(size for _, size in naive) >= n_local * K1 > max(topk_bound, shortlist)


def test_cascade_train_step_gathers_no_dense_level(run):
    out, _, info = run
    n_local = info["n"] // info["data"]
    big = n_local * info["K1"]
    mesh = [s for op, s in collectives(_hlo(out, "train-mesh")) if op == "all-gather"]
    xla = [s for op, s in collectives(_hlo(out, "train-xla")) if op == "all-gather"]
    assert mesh and max(mesh) <= n_local * info["beam"] * info["model"] < big, mesh
    assert max(xla) >= big, xla  # the control gathers the n/D x K_1 dense scores


@pytest.mark.parametrize("mesh", ["data=2,model=2", "data=4,model=1"])
def test_xr_transformer_predicts_on_the_mesh_like_one_device(run, mesh):
    _, r, info = run
    np.testing.assert_array_equal(r[f"xrt/{mesh}/ids"], r["xrt/one/ids"])
    np.testing.assert_allclose(r[f"xrt/{mesh}/scores"], r["xrt/one/scores"], rtol=1e-4, atol=1e-6)
    assert (r["xrt/one/ids"][:, 0] >= 0).all()
    lay = info["xrt"][mesh]
    assert lay["encoder_devices"] == [0, 1, 2, 3] and lay["encoder_specs"] == ["P()"]
    assert lay["predict_steps"] == [[4]]  # the encoder pass: one step over the mesh's 4 devices
