"""Multi-host start-up: two processes on localhost (2 CPU devices each, gloo
collectives, ``jax.distributed.initialize``) run the sharded top-k, three
sharded train steps and XR-Linear's fit and sharded beam search on a
``data=2,model=2`` mesh over their 4 devices, and agree with each other and with
one process holding 4 devices.

A second pair trains cascadexml (a tiny random encoder) on that mesh with its train
state checkpointed shard by shard (each process writes its own shards), is stopped
dead right after the first epoch's checkpoint, resumes from it, and ends with the
model and predictions of one uninterrupted process; the finished checkpoint then
restores onto another mesh (one process, ``data=1,model=4``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
from test_sharding import REPO, WORKER, run_worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_pair(scenario: str, out, *extra: str) -> list[subprocess.Popen]:
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return [subprocess.Popen([sys.executable, str(WORKER), scenario, str(out),
                              "--devices", "2", "--num-processes", "2", "--process-id", str(i),
                              "--port", str(port), *extra],
                             env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]


def _wait(procs: list[subprocess.Popen], expect: int = 0) -> None:
    errors = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=400)
            if p.returncode != expect:
                errors.append(f"exit {p.returncode}: {err[-3000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not errors, "\n---\n".join(errors)


def _run_pair(scenario: str, out, *extra: str, expect: int = 0) -> None:
    _wait(_start_pair(scenario, out, *extra), expect)


def test_two_processes_agree_with_one(tmp_path):
    _run_pair("dist", tmp_path / "two")
    run_worker("dist", str(tmp_path / "one"), "--devices", "4")

    infos = [json.loads((tmp_path / "two" / f"dist{i}.json").read_text()) for i in range(2)]
    assert all(i == {"process_count": 2, "devices": 4, "local_devices": 2,
                     "mesh": {"data": 2, "model": 2}} for i in infos)
    single = json.loads((tmp_path / "one" / "dist0.json").read_text())
    assert single["process_count"] == 1 and single["devices"] == 4
    a, b = (np.load(tmp_path / "two" / f"dist{i}.npz") for i in range(2))
    one = np.load(tmp_path / "one" / "dist0.npz")
    assert sorted(a.files) == sorted(b.files) == sorted(one.files)
    assert len(a.files) > 5
    for key in a.files:  # the two processes see the same global values
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a["topk_ids"], one["topk_ids"])
    np.testing.assert_array_equal(a["topk_values"], one["topk_values"])
    for key in a.files:
        np.testing.assert_allclose(a[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert a["losses"][-1] < a["losses"][0]
    assert (a["xrl_ids"][:, 0] >= 0).all()  # XR-Linear predicted (compared above)


def test_two_processes_checkpoint_killed_resume_and_agree_with_one(tmp_path):
    ck = str(tmp_path / "ck")
    pair = _start_pair("dist-text", tmp_path / "two", "--mesh", "data=2,model=2", "--ckpt", ck,
                       "--stop-after", "1", "--tag", "killed")
    # meanwhile the reference: one process, the same 4-device mesh, never interrupted
    run_worker("dist-text", str(tmp_path / "one"), "--devices", "4", "--mesh", "data=2,model=2",
               "--ckpt", str(tmp_path / "ck1"))
    _wait(pair, expect=17)  # both exited at once after saving step 1 (nothing else written)
    assert not list((tmp_path / "two").glob("killed*"))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name.isdigit()) == ["1"]
    _run_pair("dist-text", tmp_path / "two", "--mesh", "data=2,model=2", "--ckpt", ck,
              "--tag", "resumed")
    # the finished two-process checkpoint onto another mesh in one process: restored only
    run_worker("dist-text", str(tmp_path / "other"), "--devices", "4", "--mesh",
               "data=1,model=4", "--ckpt", ck)

    infos = [json.loads((tmp_path / "two" / f"resumed{i}.json").read_text()) for i in range(2)]
    for info in infos:
        assert info == {"process_count": 2, "devices": 4, "mesh": {"data": 2, "model": 2},
                        "resumed_from": 1, "latest": 2, "handed": ["global"]}, info
    one = json.loads((tmp_path / "one" / "run0.json").read_text())
    assert one["process_count"] == 1 and one["resumed_from"] == 0 and one["latest"] == 2
    other = json.loads((tmp_path / "other" / "run0.json").read_text())
    assert other["resumed_from"] == 2 and other["mesh"] == {"data": 1, "model": 4}
    a, b = (np.load(tmp_path / "two" / f"resumed{i}.npz") for i in range(2))
    ref, moved = np.load(tmp_path / "one" / "run0.npz"), np.load(tmp_path / "other" / "run0.npz")
    keys = [k for k in a.files if k.startswith("params/")]
    assert len(keys) > 15 and sorted(a.files) == sorted(ref.files) == sorted(moved.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # the same global values
        np.testing.assert_allclose(a[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)
        if key.startswith("params/"):  # restored onto another mesh: the same values
            np.testing.assert_array_equal(moved[key], a[key], err_msg=key)
    np.testing.assert_array_equal(a["ids"], ref["ids"])
    np.testing.assert_array_equal(moved["ids"], a["ids"])  # predicted there, compiled anew
    np.testing.assert_allclose(moved["scores"], a["scores"], rtol=1e-5)
    assert (a["ids"][:, 0] >= 0).all()
