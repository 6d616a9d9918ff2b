"""``--mesh data=D,model=M`` on ``jxmc train`` and ``jxmc predict``: parsed, built,
passed to methods that take a ``mesh``, refused (exit 2, one line) otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from jxmc import commands
from jxmc.errors import ConfigError
from jxmc.models import get_method
from jxmc.models.base import usable_mesh


def _run(*argv, devices: int | None = None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", "jxmc", *argv], capture_output=True, text=True,
                          env=env, timeout=120)


def test_mesh_goes_only_to_methods_that_support_it():
    one, eight = SimpleNamespace(size=1), SimpleNamespace(size=8)
    with_mesh, without = get_method("xr-linear"), get_method("ovr")
    assert with_mesh.supports_mesh and not without.supports_mesh
    assert usable_mesh(with_mesh, eight, "training") is eight
    assert usable_mesh(without, one, "training") is None
    assert usable_mesh(without, None, "training") is None
    with pytest.raises(ConfigError, match="asks for 8 devices"):
        usable_mesh(without, eight, "training")
    mesh = commands._mesh(SimpleNamespace(mesh="data=1,model=1"))
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    assert commands._mesh(SimpleNamespace(mesh=None)) is None


@pytest.mark.parametrize("argv, devices, message", [
    (("train", "--mesh", "data=2,model=4"), 1, "needs 8 devices, there are 1"),
    (("train", "--mesh", "data=2,pipe=4"), None, "--mesh expects data=D,model=M"),
    (("train", "--method", "ovr", "--mesh", "data=2,model=4"), 8,
     "--method ovr training does not run on a device mesh; --mesh asks for 8 devices"),
    (("predict", "--data", "x", "--out", "y", "--mesh", "model=3"), 8,
     "--mesh model=3 does not divide the 8 devices"),
])
def test_bad_mesh_exits_2_in_one_line(tmp_path, argv, devices, message):
    r = _run(*argv, "--model-dir", str(tmp_path / "m"), devices=devices)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("jxmc: error: ") and message in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


SMALL = "synthetic:n_train=400,n_test=60,n_labels=48,n_features=300,branching=4/4"


def test_xr_linear_trains_and_predicts_on_a_mesh(tmp_path):
    """``jxmc train/predict --mesh`` run XR-Linear on 4 fake devices; the predictions
    file equals the one of the same model predicted without a mesh."""
    model = str(tmp_path / "m")
    sets = ["--set", "max_leaf_size=4", "--set", "max_epochs=3"]
    r = _run("train", "--data", SMALL, "--model-dir", model, "--no-progress", *sets,
             "--mesh", "data=2,model=2", devices=4)
    assert r.returncode == 0, r.stderr
    assert "P " in r.stdout
    r = _run("predict", "--data", SMALL, "--model-dir", model, "--out", str(tmp_path / "mesh.txt"),
             "--mesh", "data=2,model=2", devices=4)
    assert r.returncode == 0, r.stderr
    r = _run("predict", "--data", SMALL, "--model-dir", model, "--out", str(tmp_path / "one.txt"),
             "--set", "host_queries=0", devices=1)  # the device path: the mesh's, bit for bit
    assert r.returncode == 0, r.stderr
    mesh, one = ((tmp_path / f"{n}.txt").read_text().splitlines() for n in ("mesh", "one"))
    assert len(one) == 60 and all(one)
    assert mesh == one
