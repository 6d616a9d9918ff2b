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
