"""experiments/gpu_check.py in its tiny setting: every method x dataset runs and
records seq/s, FLOPs, MFU, peak memory, P@k and provenance (issues 15, 16)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import REPO, SHARED_DATA, shared_dataset

SCRIPT = REPO / "experiments" / "gpu_check.py"


def test_gpu_check_tiny_records_every_run(tmp_path):
    shared_dataset("debtags")
    shared_dataset("debian-deps")
    out = tmp_path / "out"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--allow-dirty", "--out", str(out),
                           "--data-root", str(SHARED_DATA)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# Transformer methods")

    prov = result["provenance"]
    for key in ("command", "date", "git", "machine"):
        assert key in prov, key
    assert {"commit", "dirty"} <= set(prov["git"])
    assert result["compute_dtype"] == "float32"  # jxmc's choice on a CPU

    from jxmc.models import METHODS

    methods = ["cascadexml", "lightxml", "xr-transformer"] + (["elmo"] if "elmo" in METHODS else [])
    runs = {(r["dataset"], r["method"]): r for r in result["runs"]}
    assert set(runs) == {(d, m) for d in ("debtags", "debian-deps") for m in methods}
    for key, r in runs.items():
        assert r["status"] == "ok", (key, r.get("error"))
        assert math.isfinite(r["seq_s"]) and r["seq_s"] > 0, key
        assert r["encoder_step_flops"] > 0, key
        assert math.isfinite(r["mfu"]) and r["mfu"] > 0, key
        assert r["peak_memory_bytes"] > 0, key
        for k in ("P@1", "P@3", "P@5"):
            assert 0.0 <= r[k] <= 100.0, (key, k, r[k])
        assert r["train_docs"] == 4 * 8 and r["config"]["max_len"] == 16, key
        assert r["phases"] >= 1 and r["epoch_lines"], key
    # the same encoder at the same batch shape: the same XLA FLOPs in every run
    assert len({r["encoder_step_flops"] for r in runs.values()}) == 1


def test_provenance_without_git_takes_the_stated_commit(monkeypatch):
    """On a device machine the working tree arrives without .git: the commit is the one
    the caller states in $JXMC_COMMIT, marked as stated; with none, 'unknown'."""
    sys.path.insert(0, str(REPO / "experiments" / "harness"))
    import provenance

    monkeypatch.setattr(provenance, "git", lambda *a: "")
    monkeypatch.setenv("JXMC_COMMIT", "0123abc")
    assert provenance.git_state() == {"commit": "0123abc", "dirty": None, "dirty_paths": [],
                                      "commit_source": "JXMC_COMMIT"}
    monkeypatch.delenv("JXMC_COMMIT")
    assert provenance.git_state()["commit"] == "unknown"
    monkeypatch.undo()
    state = provenance.git_state()  # this checkout: a real commit, no stated source
    assert len(state["commit"]) == 40 and "commit_source" not in state
