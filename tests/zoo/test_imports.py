"""The zoo's modules import each other without a cycle (function-level imports included)."""

import ast
import pathlib

import pytest

ZOO = pathlib.Path(__file__).parents[2] / "zoo"


def _module_name(path):
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, modules):
    """The zoo modules `path` imports: `from zoo.x import y` names zoo.x, or zoo.x.y when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zoo":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zoo.")}
    return found


@pytest.mark.one_backend  # source text only
def test_no_import_cycles_inside_zoo():
    # Every module and subpackage but the top-level package (which imports them all).
    modules = {_module_name(p): p for p in ZOO.rglob("*.py") if p != ZOO / "__init__.py"}
    assert {"zoo.models.resnet", "zoo.tasks.fcn", "zoo._builder"} <= set(modules)
    graph = {m: {d for d in _imports(p, modules) if d in modules and d != m} for m, p in modules.items()}
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
