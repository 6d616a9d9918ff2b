"""The README's Python snippet runs as written (the block after ``<!-- python-snippet``)."""

from __future__ import annotations

import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _snippet() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"<!-- python-snippet[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert found, "README.md has no python-snippet block"
    return found.group(1)


def test_readme_python_snippet_runs_and_learns():
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(_snippet(), "README.md", "exec"), scope)
    printed = eval(out.getvalue().strip().splitlines()[-1])  # the dict the snippet prints
    assert set(printed) == {"P@1", "P@5", "PSP@5"}
    assert printed["P@1"] > 50, printed  # the synthetic set is easy; a broken path scores ~1
    assert scope["top"].ids.shape == (500, 10)


def _tables():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "readme_tables.py")
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_result_tables_are_the_results_files():
    """Every generated block of the README is what experiments/readme_tables.py writes from
    experiments/results/ (so no figure is pasted by hand)."""
    tables = _tables()
    with open(README, encoding="utf-8") as f:
        text = f.read()
    names = [m.group(2) for m in tables.BLOCK.finditer(text)]
    assert {"side-by-side", "seeds", "other-methods", "mesh", "scale", "simd", "serve",
            "calibration"} <= set(names), names
    assert tables.render(text) == text, "README is stale: run python experiments/readme_tables.py"


def test_readme_tables_follow_a_changed_results_file(tmp_path):
    """The comparison can fail: a results file with another figure gives another README."""
    import json
    import shutil

    tables = _tables()
    results = os.path.join(os.path.dirname(__file__), "..", "experiments", "results")
    for name in os.listdir(results):
        if name.endswith(".json"):
            shutil.copy(os.path.join(results, name), tmp_path / name)
    res = json.loads((tmp_path / "debtags.json").read_text())
    res["results"]["jxmc:xr-linear"]["metrics"]["P@1"] = 12.3456
    (tmp_path / "debtags.json").write_text(json.dumps(res))
    with open(README, encoding="utf-8") as f:
        text = f.read()
    changed = tables.render(text, str(tmp_path))
    assert changed != text and "| debtags | jxmc `xr-linear` | 12.35" in changed
