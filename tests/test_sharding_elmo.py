"""``--method elmo`` on a device mesh (8 host devices, a fresh process).

(1) ELMO's flat head split by rows on ``model``
(:func:`jxmc.nn.flat_head.head_step_sharded`): two steps on ``data=2,model=4``,
``data=4,model=2`` (and ``data=1,model=8`` in bf16) equal one device's
:func:`jxmc.nn.flat_head.head_step` -- the tables bit for bit, also a bf16 table with
Kahan rows and stochastic rounding (a chunk's rounding key is its global index), the
loss and the input gradient to float rounding (the ``psum`` over ``model`` adds the
shards' parts in another order).  The compiled step's collectives move at most the
``n x h`` embeddings gathered over ``data`` and the ``n / D x h`` input gradient
(+ the loss scalar, the positives' ids and valid flags); XLA's own partitioning of
the one-device step (the control) gathers the table.

(2) The method fitted and predicted on ``data=2,model=2`` (an f32 table: no rounding)
equals one device's fit and prediction; a one-device model predicts the same on the
mesh; the train state's table is split on ``model``, the encoder replicated.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_sharding import collectives, run_worker

MESHES = ("data=2,model=4", "data=4,model=2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("elmo")
    run_worker("elmo", str(out), "--devices", "8", timeout=600)
    return out, np.load(out / "elmo.npz"), json.loads((out / "elmo.json").read_text())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sharded_head_step_equals_one_device(run, dtype):
    _, r, info = run
    meshes = MESHES + (("data=1,model=8",) if dtype == "bfloat16" else ())
    for spec in meshes:
        for part in ("kb", "wp")[dtype == "float32":]:  # the table after two steps (bits)
            np.testing.assert_array_equal(r[f"{dtype}/{spec}/{part}"], r[f"{dtype}/one/{part}"],
                                          err_msg=f"{spec} {part}")
        for i in range(2):
            np.testing.assert_allclose(r[f"{dtype}/{spec}/loss{i}"], r[f"{dtype}/one/loss{i}"],
                                       rtol=1e-6, err_msg=spec)
            np.testing.assert_allclose(r[f"{dtype}/{spec}/g_e{i}"], r[f"{dtype}/one/g_e{i}"],
                                       rtol=1e-5, atol=1e-6, err_msg=spec)
        kb_spec, wp_spec = info["meshes"][spec][dtype]
        assert wp_spec == "P('model',)"  # (an f32 table has no Kahan block)
        assert kb_spec == ("P(None, 'model')" if dtype == "bfloat16" else None)
    if dtype == "bfloat16":
        assert r["bfloat16/one/kb"].shape == (2, info["kc"], info["h"]) and info["kc"] > 0
        comp = r["bfloat16/one/kb"][1]
        assert (comp != 0).any()  # the compensation rows moved, and match the mesh's
    assert float(np.abs(r[f"{dtype}/one/g_e0"]).max()) > 1e-3


def test_sharded_head_step_moves_only_the_input_gradient(run):
    out, _, info = run
    n, h, m = info["n"], info["h"], info["m"]
    found = collectives((out / "head-mesh.hlo.txt").read_text())
    assert sorted(op for op, _ in found) == ["all-gather"] * 3 + ["all-reduce"], found
    assert all(size <= n * h for _, size in found), found
    reduced = [size for op, size in found if op == "all-reduce"]
    assert reduced == [n // 2 * h]  # the data shard's input gradient (with the loss)
    gathered = sorted(size for op, size in found if op == "all-gather")
    assert gathered == sorted([n * h, n * m, n])  # embeddings, positives, valid flags
    # the check can fail: XLA's own partitioning of the one-device step moves the table
    naive = collectives((out / "head-xla.hlo.txt").read_text())
    assert max(size for _, size in naive) >= info["Lp"] * h > n * h, naive


def test_method_on_a_mesh_equals_one_device(run):
    _, r, info = run
    one, mesh = r["method/one/w"], r["method/mesh/w"]
    L = one.shape[0]
    np.testing.assert_allclose(mesh[:L], one, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mesh[L:], 0.0)  # the mesh layout's padding rows
    assert float(np.abs(one).max()) > 0.05
    for where in ("mesh", "one-on-mesh"):
        np.testing.assert_array_equal(r[f"method/{where}/ids"], r["method/one/ids"], err_msg=where)
        np.testing.assert_allclose(r[f"method/{where}/scores"], r["method/one/scores"], rtol=1e-5,
                                   atol=1e-6, err_msg=where)
    assert (r["method/one/ids"] >= 0).all()
    f32, bf16 = info["method_layouts"]  # the train states' layouts
    assert "w/0" not in f32 and bf16["w/0"] == "P(None, 'model')"  # f32: no Kahan block
    for lay in (f32, bf16):
        assert lay["w/1"] == "P('model',)"
        assert {v for k, v in lay.items() if k.startswith("params/")} == {"P()"}
    # the default bf16 table trains and predicts on the mesh too
    assert (r["method/bf16-mesh/ids"] >= 0).all() and np.isfinite(r["method/bf16-mesh/w"]).all()
    assert float(np.abs(r["method/bf16-mesh/w"]).max()) > 0.05
