"""The zoo's modules import each other without a cycle (function-level imports included)."""

import ast
import pathlib

import pytest

ZOO = pathlib.Path(__file__).parents[2] / "zoo"


def _imports(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "zoo":
            found |= {f"zoo.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zoo.")}
    return found


@pytest.mark.one_backend  # source text only
def test_no_import_cycles_inside_zoo():
    modules = {f"zoo.{p.stem}": p for p in ZOO.glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                pytest.fail(f"import cycle: {' -> '.join(path[path.index(d) :] + [d])}")
            if d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
