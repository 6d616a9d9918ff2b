"""The package's shape (issue 13): no import cycle between jxmc's modules, counting
imports inside functions too, and no module over 400 lines but the two long ones
that hold one concept each (metrics.py, data/xc.py)."""

from __future__ import annotations

import ast
import pathlib

import jxmc

ROOT = pathlib.Path(jxmc.__file__).parent
LONG_ALLOWED = {"jxmc.metrics", "jxmc.data.xc"}
MAX_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The jxmc module ``name`` names (or the package holding a name imported from it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the jxmc modules it imports, at any depth of its code (functions too)."""
    modules = _modules()
    graph = {}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                if n.split(".")[0] != "jxmc":
                    continue
                target = _resolve(n, modules)
                if target and target != mod and not mod.startswith(target + "."):
                    deps.add(target)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle_sees_a_cycle_through_function_imports(tmp_path):
    graph = {"jxmc.a": {"jxmc.b"}, "jxmc.b": {"jxmc.c"}, "jxmc.c": {"jxmc.a"}, "jxmc.d": set()}
    assert find_cycle(graph) == ["jxmc.a", "jxmc.b", "jxmc.c", "jxmc.a"]
    assert find_cycle({"jxmc.a": {"jxmc.b"}, "jxmc.b": set()}) is None


def test_import_graph_reads_imports_inside_functions():
    graph = import_graph()
    # jxmc.cli imports jxmc.commands inside main() (so start-up stays fast)
    assert "jxmc.commands" in graph["jxmc.cli"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_400_lines():
    long = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in _modules().items()}
    over = {m: n for m, n in long.items() if n > MAX_LINES and m not in LONG_ALLOWED}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
