"""The PECOS virtual environment: ``experiments/.peers-venv`` (git-ignored).

libpecos 1.2.8 is built against numpy 1.x and breaks on numpy 2, which jxmc's
environment has; so PECOS runs in its own venv, made here when missing:

1. ``python3 -m venv experiments/.peers-venv`` (the base interpreter of the
   Python running the harness; libpecos 1.2.8 ships wheels for CPython 3.7-3.11);
2. ``pip install 'numpy<2' 'scipy<1.14' scikit-learn`` -- PECOS's runtime
   dependencies for XR-Linear (scikit-learn brings joblib and threadpoolctl);
3. ``pip install --no-deps libpecos==1.2.8`` -- without its declared
   dependencies, which pull torch and transformers (only needed by XR-Transformer);
4. an import check of ``pecos.xmc.xlinear`` and a marker file ``.jxmc-bench-ok``
   holding the installed versions.

A venv without the marker (an interrupted install) is deleted and made again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

PECOS_VERSION = "1.2.8"
DEPS = ["numpy<2", "scipy<1.14", "scikit-learn"]
MARKER = ".jxmc-bench-ok"
CHECK = ("import json, numpy, scipy, sklearn, pecos; "
         "from pecos.xmc.xlinear.model import XLinearModel; "
         "from pecos.xmc import Indexer, LabelEmbeddingFactory; "
         "print(json.dumps({'libpecos': pecos.__version__, 'numpy': numpy.__version__, "
         "'scipy': scipy.__version__, 'scikit-learn': sklearn.__version__}))")


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def base_python() -> str:
    """The interpreter the harness's venv was made from (a venv of a venv is avoided)."""
    base = getattr(sys, "_base_executable", None)
    if base and os.path.exists(base):
        return base
    return shutil.which("python3") or sys.executable


def ensure(venv: str, *, log=print) -> dict:
    """Makes the PECOS venv when missing or unfinished; returns its versions.

    Raises:
      RuntimeError: a step failed (its output is in the message).
    """
    marker = os.path.join(venv, MARKER)
    if os.path.isfile(marker) and os.path.exists(venv_python(venv)):
        with open(marker, encoding="utf-8") as f:
            return json.load(f)
    if os.path.exists(venv):
        log(f"[peers-venv] {venv} is unfinished (no {MARKER}); making it again")
        shutil.rmtree(venv)
    py = base_python()
    log(f"[peers-venv] creating {venv} with {py} (libpecos {PECOS_VERSION}, numpy<2; about a minute)")
    pip = [venv_python(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = [
        [py, "-m", "venv", venv],
        pip + DEPS,
        pip + ["--no-deps", f"libpecos=={PECOS_VERSION}"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"[peers-venv] failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    proc = subprocess.run([venv_python(venv), "-c", CHECK], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"[peers-venv] PECOS does not import in {venv}:\n{proc.stderr[-3000:]}")
    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(marker + ".tmp", "w", encoding="utf-8") as f:
        json.dump(versions, f)
    os.replace(marker + ".tmp", marker)
    log(f"[peers-venv] ready: {versions}")
    return versions
