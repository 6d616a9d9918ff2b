"""Multi-host start-up: two processes on localhost (2 CPU devices each, gloo
collectives, ``jax.distributed.initialize``) run the sharded top-k, three
sharded train steps and XR-Linear's fit and sharded beam search on a
``data=2,model=2`` mesh over their 4 devices, and agree with each other and with
one process holding 4 devices."""

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


def test_two_processes_agree_with_one(tmp_path):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), "dist", str(tmp_path / "two"),
                               "--devices", "2", "--num-processes", "2", "--process-id", str(i),
                               "--port", str(port)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    errors = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=400)
            if p.returncode != 0:
                errors.append(err[-3000:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not errors, "\n---\n".join(errors)
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
