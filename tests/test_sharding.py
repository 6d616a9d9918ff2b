"""jxmc.sharding and jxmc.ops.topk: mesh parsing, layouts, the two-stage
sharded top-k (equal to ``lax.top_k``; no collective larger than ``n x k x M``)
and the sharded transformer train step (equal to the single-device one).

The multi-device checks run ``tests/sharding_worker.py`` in a subprocess with 8
fake CPU devices (``XLA_FLAGS`` must be set before JAX is imported); this
process only compares what it writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jxmc import sharding as S
from jxmc.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "sharding_worker.py"


def run_worker(*args: str, timeout: float = 300) -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, r.stderr[-4000:]


# ------------------------------------------------------------------ in this process


def test_parse_mesh():
    assert S.parse_mesh("data=2,model=4") == S.MeshConfig(2, 4)
    assert S.parse_mesh(" model=4 , data=2 ") == S.MeshConfig(2, 4)
    assert S.parse_mesh("model=4", n_devices=8) == S.MeshConfig(2, 4)
    assert S.parse_mesh("data=8", n_devices=8) == S.MeshConfig(8, 1)
    assert S.parse_mesh("model=2") == S.MeshConfig(1, 2)
    for bad in ("", "data=2,pipe=2", "data=two", "data=0", "data=2,data=2", "data:2", "model=3"):
        with pytest.raises(ConfigError):
            S.parse_mesh(bad, n_devices=8)


def test_make_mesh_checks_the_device_count():
    mesh = S.mesh_from_string("data=1,model=1", jax.devices()[:1])
    assert mesh.axis_names == (S.DATA, S.MODEL)
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ConfigError, match="needs 8 devices, there are 1"):
        S.make_mesh(S.MeshConfig(2, 4), jax.devices()[:1])


def test_rules_pick_label_tables():
    mesh = S.mesh_from_string("data=1,model=1", jax.devices()[:1])
    tree = {"heads": {"level_1": {"w": np.zeros((4, 3)), "b": np.zeros(4),
                                  "proj_w": np.zeros((3, 3))}},
            "encoder": {"kernel": np.zeros((3, 3))}, "count": np.zeros(())}
    sh = S.tree_shardings(tree, mesh)
    assert sh["heads"]["level_1"]["w"].spec == S.P(S.MODEL)
    assert sh["heads"]["level_1"]["b"].spec == S.P(S.MODEL)
    assert sh["heads"]["level_1"]["proj_w"].spec == S.P()
    assert sh["encoder"]["kernel"].spec == S.P() and sh["count"].spec == S.P()
    # optax moments carry their parameter's path, so the same rule applies
    path = "opt_state/1/inner_states/heads/inner_state/0/mu/heads/level_2/w"
    assert re.search(S.LABEL_TABLES[0][0], path)
    assert S.padded_size(10, 4) == 12 and S.padded_size(12, 4) == 12


def test_initialize_from_env():
    assert S.initialize_from_env({}) is False
    with pytest.raises(ConfigError, match="JXMC_NUM_PROCESSES"):
        S.initialize_from_env({"JXMC_COORDINATOR_ADDRESS": "localhost:1"})
    with pytest.raises(ConfigError, match="not an integer"):
        S.initialize_from_env({"JXMC_COORDINATOR_ADDRESS": "localhost:1",
                               "JXMC_NUM_PROCESSES": "two", "JXMC_PROCESS_ID": "0"})


def test_one_device_top_k_and_step_helpers():
    from jxmc.ops.topk import sharded_table_top_k, sharded_top_k

    mesh = S.mesh_from_string("data=1,model=1", jax.devices()[:1])
    s = np.random.default_rng(0).standard_normal((3, 11)).astype(np.float32)
    v, i = sharded_top_k(s, 4, mesh=mesh)
    rv, ri = jax.lax.top_k(s, 4)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(v, rv)
    with pytest.raises(ValueError):
        sharded_top_k(s, 12, mesh=mesh)
    with pytest.raises(ValueError):
        sharded_table_top_k(s[:, :2], np.zeros((5, 2), np.float32), None, 6, mesh=mesh)
    with pytest.raises(ConfigError, match="multiple of 1"):
        S.shard_batch({"x": np.zeros(())}, mesh)


# ------------------------------------------------------------------ on 8 fake devices

COLLECTIVE = re.compile(r"=\s*(\(.*?\)|\S+)\s+(all-gather|all-reduce|all-to-all|reduce-scatter|"
                        r"collective-permute|collective-broadcast|ragged-all-to-all)(-start)?\(")


def collectives(hlo: str) -> list[tuple[str, int]]:
    """``(opcode, elements of its largest result array)`` of every collective in
    compiled HLO text (an ``-start`` op stands for its async pair)."""
    out = []
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m:
            dims = re.findall(r"[a-z]+\d*\[([\d,]*)\]", m.group(1))
            sizes = [int(np.prod([int(d) for d in ds.split(",") if d])) for ds in dims]
            out.append((m.group(2), max(sizes)))
    return out


@pytest.fixture(scope="module")
def topk_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("topk")
    run_worker("topk", str(out))
    return out


def test_sharded_top_k_equals_lax_top_k(topk_run):
    r = np.load(topk_run / "topk.npz")
    scores = r["scores"]
    ref_v, ref_i = (np.asarray(a) for a in jax.lax.top_k(scores, 5))
    for spec in ("data=2,model=4", "data=1,model=8", "data=4,model=2", "data=8,model=1"):
        np.testing.assert_array_equal(r[f"{spec}/ids"], ref_i, err_msg=spec)
        np.testing.assert_array_equal(r[f"{spec}/values"], ref_v, err_msg=spec)
    assert ref_i[1].tolist() == [0, 1, 2, 3, 4]  # all-equal row: lowest ids first
    odd_v, odd_i = (np.asarray(a) for a in jax.lax.top_k(scores[:14, :997], 7))
    np.testing.assert_array_equal(r["odd/ids"], odd_i)
    np.testing.assert_array_equal(r["odd/values"], odd_v)
    dense = r["x"] @ r["w"].T + r["b"]
    tv, ti = (np.asarray(a) for a in jax.lax.top_k(dense, 5))
    for chunk in ("None", "48"):
        np.testing.assert_array_equal(r[f"table{chunk}/ids"], ti, err_msg=chunk)
        np.testing.assert_array_equal(r[f"table{chunk}/values"], tv, err_msg=chunk)


def test_no_collective_moves_more_than_n_k_shards(topk_run):
    info = json.loads((topk_run / "topk.json").read_text())
    n, L, k, M = info["n"], info["L"], info["k"], info["shards"]
    bound = n * k * M
    for name in ("sharded", "table"):
        found = collectives((topk_run / f"{name}.hlo.txt").read_text())
        assert [op for op, _ in found].count("all-gather") >= 1, (name, found)
        assert all(size <= bound for _, size in found), (name, found, bound)
        # per device: the values and ids of n/D points from M shards, k each
        assert sum(size for _, size in found) <= 2 * (n // info["data"]) * k * M, (name, found)
    # the check can fail: XLA's own partitioning of top_k gathers all n x L scores
    naive = collectives((topk_run / "naive.hlo.txt").read_text())
    assert max(size for _, size in naive) >= n * L > bound


def test_sharded_train_step_equals_single_device(tmp_path):
    run_worker("step", str(tmp_path), timeout=600)
    r = np.load(tmp_path / "step.npz")
    info = json.loads((tmp_path / "step.json").read_text())
    one, mesh = "single", "data=2,model=4"
    # label tables split on model (K_3 = 16 rows: 4 per device), the encoder replicated
    assert info["table_spec"] == "P('model',)" and info["encoder_spec"] == "P()"
    assert info["table_shard_shapes"] == [[4, 16]] * 8
    assert "P('model',)" in info["mu_specs"] and info["predict_spec"] == "P('data',)"
    np.testing.assert_allclose(r[f"{mesh}/losses"], r[f"{one}/losses"], rtol=1e-5)
    keys = [k for k in r.files if k.startswith(f"{one}/params/")]
    assert len(keys) > 10
    for key in keys:
        np.testing.assert_allclose(r[mesh + key[len(one):]], r[key], rtol=1e-3, atol=2e-4,
                                   err_msg=key)
    # training moved the label tables and the encoder (the comparison is not of untouched values)
    for key in (f"{one}/params/heads/level_3/w", f"{one}/params/encoder/layer_0/query/kernel"):
        assert np.abs(r[key] - r["init" + key[len(one):]]).max() > 1e-3, key
    np.testing.assert_array_equal(r[f"{mesh}/pred_ids"], r[f"{one}/pred_ids"])
    np.testing.assert_allclose(r[f"{mesh}/pred_scores"], r[f"{one}/pred_scores"], rtol=1e-5)
