"""The modules of app/ import each other without cycles, and the layers stay where they are (.importlinter).

Every module is parsed with `ast` (nothing is imported or executed). An import anywhere in a module counts, at
module level or inside a function: a function-level import only postpones a cycle, it does not remove it.
`from app import x` counts as an import of `app.x` when `x` is a submodule, else of the package `app`; relative
imports are resolved the same way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

def modules_of(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `package_dir` (a package is its __init__.py)."""
    root = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` itself when it is one of `modules`, else its longest prefix that is (`import app.x.y` as a
    module that does not exist is still an import of `app.x`), else None (not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `module` imports anywhere in its source."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from base import x`: the submodule base.x when it exists, else a name defined in base.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(known for name in names if (known := _known(name, modules)) is not None)
    found.discard(module)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = modules_of(package_dir)
    return {module: imports_of(module, modules) for module in modules}


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm): each is a set of
    modules that all reach each other through imports."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """The shortest way from the component's first module back to itself (breadth-first), as a path."""
    members, start = set(component), component[0]
    paths = {target: [start, target] for target in sorted(graph[start]) if target in members}
    queue = list(paths)
    while start not in paths:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return paths[start]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (its first module repeated at the end) per tangle."""
    return [shortest_cycle(graph, component) for component in tangles(graph)]


def describe(graph: dict[str, set[str]]) -> str:
    lines = []
    for component in tangles(graph):
        cycle = shortest_cycle(graph, component)
        others = sorted(set(component) - set(cycle))
        lines.append("  " + " -> ".join(cycle) + (f"   (the same loop takes in {', '.join(others)})" if others else ""))
    return "\n".join(lines)


def test_app_has_no_import_cycles():
    graph = import_graph(REPO_ROOT / "app")
    assert not tangles(graph), "import cycles in app/:\n" + describe(graph)


def test_metrics_is_a_leaf():
    """Every module counts through app.telemetry.metrics, so it may import nothing of the app."""
    assert import_graph(REPO_ROOT / "app")["app.telemetry.metrics"] == set()


def test_layer_contracts_hold():
    """The folders of app/ are layers (.importlinter; docs/architecture.md): `lint-imports` checks every contract.
    CI runs it in scripts/lint as well; here it guards a local `scripts/test` run."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the checker itself, on a package made for the purpose -------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "pkg"


def test_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def later():\n    from pkg import a\n",
    })
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_checker_resolves_relative_imports_and_package_names(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.sub.c import make\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from .. import helper\nfrom . import d\n",
        "pkg/sub/d.py": "import pkg.helper.missing\n",
        "pkg/helper.py": "import json\nfrom pkg import VERSION\n",
    })
    graph = import_graph(package)
    assert graph["pkg.sub.c"] == {"pkg.helper", "pkg.sub.d"}
    assert graph["pkg.sub.d"] == {"pkg.helper"}
    assert graph["pkg.helper"] == {"pkg"}  # a name from the package's __init__: an import of the package
    assert cycles(graph) == [["pkg", "pkg.sub.c", "pkg.helper", "pkg"]]


def test_checker_accepts_a_layered_package(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "def factory():\n    from pkg import top\n",
        "pkg/top.py": "from pkg import low\nfrom pkg.low import x\n",
        "pkg/low.py": "import os\n",
    })
    assert cycles(import_graph(package)) == []
