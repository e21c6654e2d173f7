"""The layering of the study packages, read from the source (imports inside functions count).

`contrastlab.study` is the floor of both kinds of study: it imports neither `tuning` nor
`ablation`; `tuning` does not import `ablation`; and `ablation` imports `tuning` only where
it really runs a study (retuning). No import cycle runs through these packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "platform"
LAYERED = ("contrastlab.study", "contrastlab.tuning", "contrastlab.ablation", "contrastlab.raytrain")
ABLATION_MODULES_THAT_RUN_STUDIES = {"contrastlab.ablation.retune", "contrastlab.ablation.retune_run"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (PACKAGE_ROOT / "contrastlab").rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every contrastlab module `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name` reads the package (its __init__), and the submodule when `name` is one.
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(t for t in targets if t in modules)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # ablation/runner.py imports retune_run inside run_ablation only.
    assert "contrastlab.ablation.retune_run" in graph["contrastlab.ablation.runner"]


def test_no_import_cycle_through_the_study_packages() -> None:
    graph = import_graph()
    touching = [c for c in cycles(graph) if any(in_package(m, p) for m in c for p in LAYERED)]
    assert not touching, f"import cycles: {touching}"


def test_the_floor_imports_neither_tuning_nor_ablation() -> None:
    graph = import_graph()
    wrong = {
        (src, dst)
        for src, targets in graph.items()
        if in_package(src, "contrastlab.study")
        for dst in targets
        if in_package(dst, "contrastlab.tuning") or in_package(dst, "contrastlab.ablation")
    }
    assert not wrong, f"contrastlab.study must not import the studies built on it: {sorted(wrong)}"


def test_tuning_does_not_import_ablation() -> None:
    graph = import_graph()
    wrong = {
        (src, dst)
        for src, targets in graph.items()
        if in_package(src, "contrastlab.tuning")
        for dst in targets
        if in_package(dst, "contrastlab.ablation")
    }
    assert not wrong, sorted(wrong)


def test_ablation_imports_tuning_only_to_retune() -> None:
    graph = import_graph()
    users = {
        src
        for src, targets in graph.items()
        if in_package(src, "contrastlab.ablation") and any(in_package(d, "contrastlab.tuning") for d in targets)
    }
    assert users <= ABLATION_MODULES_THAT_RUN_STUDIES, sorted(users - ABLATION_MODULES_THAT_RUN_STUDIES)
    assert users, "the retune modules run their searches with the tuning package"
