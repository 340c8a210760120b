"""The house's rules, checked on the source: lower modules never import higher ones, and the
command lines are imported by nothing (README, Layout)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# The command lines; the root scripts train.py and stylize.py only start theirs (the package
# train shadows train.py, so nothing could import that one anyway).
ENTRY_MODULES = {"stylize", "utils", "app", "train.main", "stylization.main"}
SCRIPTS = {"train.py", "stylize.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    skip = {"tests", "notebook", ".ci"}
    return {module_name(p): p for p in ROOT.rglob("*.py")
            if p.relative_to(ROOT).parts[0] not in skip and str(p.relative_to(ROOT)) not in SCRIPTS}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules path imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {n for n in names if n in known}
    return found


def test_common_imports_nothing_of_the_project_but_config():
    modules = project_modules()
    for name, path in modules.items():
        if name == "common" or name.startswith("common."):
            outside = {m for m in imports(path, set(modules)) if m != "config" and not m.startswith("common")}
            assert not outside, (name, outside)


def test_nothing_imports_an_entry_module():
    modules = project_modules()
    for name, path in modules.items():
        # benchmarks/tiling.py starts stylize.py in a subprocess: a string, not an import
        assert not imports(path, ENTRY_MODULES - {name}), name


def test_there_is_no_import_circle():
    modules = project_modules()
    graph = {name: imports(path, set(modules)) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
