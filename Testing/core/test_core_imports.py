"""The core's rooms (../shared/DESIGN.md): ``losslab`` has no import cycle between its modules, never imports
the web app (``LossLabWeb``, trame), the Lib layers or Slicer, and its domain packages never import ``cli``.

Read from the source (every ``import`` anywhere in a module, function-level ones included: a lazy import that
closes a cycle is still a cycle), so nothing is imported and the check takes a fraction of a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "LossLab" / "losslab"
#: what the core must never import: the web room, the Lib layers and Slicer / Qt / VTK
FORBIDDEN = {
    "LossLabWeb": "the web app (Web/): launch it from outside the core",
    "trame": "the web stack",
    "trame_slicer": "the web stack",
    "LossLabLib": "a Lib layer (it calls the core, not the other way)",
    "ICEEditingLib": "a Lib layer",
    "FetalParcellationLib": "a Lib layer",
    "slicer": "Slicer",
    "qt": "Qt",
    "vtk": "VTK",
}
#: domain packages that never import the command line
DOMAIN = ("metrics", "losses", "ice", "labelsets", "nets", "engine", "models")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imports_of(name: str) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in module ``name`` (relative imports resolved; ``from a
    import b`` gives ``a.b`` when that is a module of the core, else ``a``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.append((child if child in MODULES else module, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in imports_of(name) if m in MODULES and m != name} for name in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_core_has_no_import_cycle():
    assert len(MODULES) > 40 and "losslab.engine.trainer" in MODULES
    graph = _graph()
    # packages import their own submodules (``__init__`` re-exports); a submodule importing its package back
    # closes a cycle and is reported like any other
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in the core: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = _graph()
    graph["losslab.engine.trainer"].add("losslab.engine.ensemble")  # the cycle this test was written for
    assert ["losslab.engine.ensemble", "losslab.engine.trainer"] in find_cycles(graph)


@pytest.mark.parametrize(
    "name",
    [n for n in MODULES],
)
def test_the_core_never_imports_web_lib_or_slicer(name):
    bad = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {module} ({FORBIDDEN[module.split('.')[0]]})"
        for module, line in imports_of(name)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "; ".join(bad)


def test_domain_packages_never_import_the_command_line():
    bad = [
        f"{name}:{line} imports {module}"
        for name in MODULES
        if name.split(".")[1:2] and name.split(".")[1] in DOMAIN
        for module, line in imports_of(name)
        if module == "losslab.cli" or module.startswith("losslab.cli.")
    ]
    assert not bad, "; ".join(bad)
