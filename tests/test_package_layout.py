"""The package's shape: layers that only import downwards, no import cycle, no file past 400 lines.

The import graph is read from the source with `ast`: imports inside functions count, and so
do `importlib.import_module("contrastlab...")` calls with a literal name; imports under
`if TYPE_CHECKING:` serve annotations only and do not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PLATFORM = Path(__file__).resolve().parents[1] / "platform"
PACKAGE = PLATFORM / "contrastlab"
MAX_LINES = 400

# Bottom to top; a package imports only from its own layer or the layers below it (the
# table in docs/architecture.md and CONTRIBUTING.md).
LAYERS = (
    ("errors", "shutdown", "progress"),
    ("yamlfile", "sections"),
    ("losses", "models", "optim", "data", "distributed", "evaluation"),
    ("methods",),
    ("config",),
    ("tracking",),
    ("engine",),
    ("raytrain",),
    ("study",),
    ("tuning", "ablation"),
    ("commands",),
    ("cli",),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
# Same-layer imports that are allowed: an ablation retunes its variants with a real study.
SIDEWAYS = {("ablation", "tuning"): {"contrastlab.ablation.retune", "contrastlab.ablation.retune_run"}}


def module_name(path: Path, root: Path = PLATFORM) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def imported_names(path: Path, root: Path = PLATFORM) -> list[str]:
    """The dotted names `path` imports at run time (absolute; `from a import b` gives a.b)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.extend(f"{source}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found.extend(a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def imported_modules(path: Path, known: set[str], root: Path = PLATFORM) -> set[str]:
    """The package's modules that `path` imports: each name cut to its deepest known module."""
    name = module_name(path, root)
    found = set()
    for target in imported_names(path, root):
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(root: Path = PLATFORM) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in (root / "contrastlab").rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known, root) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path `[a, b, ..., a]`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def top_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(graph.items()):
        src = top_package(source)
        for target in sorted(targets):
            dst = top_package(target)
            if src is None or dst is None or src == dst:
                continue
            if src not in RANK or dst not in RANK:
                wrong.append(f"{source} -> {target}: a package missing from LAYERS")
            elif RANK[dst] > RANK[src] or (RANK[dst] == RANK[src] and source not in SIDEWAYS.get((src, dst), set())):
                wrong.append(f"{source} -> {target}: {src} may not import {dst}")
    return wrong


# -- the checks check -------------------------------------------------------------------------
def test_cycle_finder_sees_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_scan_sees_function_level_relative_and_dynamic_imports_but_not_annotations(tmp_path):
    pkg = tmp_path / "contrastlab"
    (pkg / "methods").mkdir(parents=True)
    (pkg / "engine").mkdir()
    for init in (pkg, pkg / "methods", pkg / "engine"):
        (init / "__init__.py").write_text("")
    (pkg / "config.py").write_text("")
    (pkg / "engine" / "loop.py").write_text("")
    (pkg / "methods" / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from contrastlab.config import ExperimentConfig\n"
        "def f():\n    from ..engine.loop import Trainer\n    import importlib\n"
        "    return importlib.import_module('contrastlab.engine')\n"
    )
    graph = import_graph(tmp_path)
    assert graph["contrastlab.methods.x"] == {"contrastlab.engine.loop", "contrastlab.engine"}
    assert layer_violations(graph) == [
        "contrastlab.methods.x -> contrastlab.engine: methods may not import engine",
        "contrastlab.methods.x -> contrastlab.engine.loop: methods may not import engine",
    ]


def test_ablation_may_import_tuning_only_to_retune():
    graph = {
        "contrastlab.ablation.runner": {"contrastlab.tuning.runner"},
        "contrastlab.ablation.retune": {"contrastlab.tuning.space"},
    }
    assert layer_violations(graph) == [
        "contrastlab.ablation.runner -> contrastlab.tuning.runner: ablation may not import tuning"
    ]


# -- the package -------------------------------------------------------------------------------
def test_every_package_has_a_layer():
    packages = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert packages - {"__init__"} == set(RANK)


def test_packages_import_only_downwards():
    graph = import_graph()
    assert len(graph) > 50, "the package was not found"
    assert layer_violations(graph) == []
    # The rule is not vacuous: the engine does use the methods, and ablation retunes with tuning.
    assert any(top_package(t) == "methods" for s, ts in graph.items() if top_package(s) == "engine" for t in ts)
    assert any(top_package(t) == "tuning" for s, ts in graph.items() if top_package(s) == "ablation" for t in ts)


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PLATFORM)))
def test_no_file_past_the_size_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PLATFORM)} has {lines} lines (limit {MAX_LINES}): split it"


def test_the_architecture_page_shows_the_same_layers():
    page = (PLATFORM.parent / "docs" / "architecture.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "`" in line.split("|")[2]]
    shown = tuple(tuple(re.findall(r"`(\w+)`", line.split("|")[2].split("(")[0])) for line in rows)
    assert shown == LAYERS
