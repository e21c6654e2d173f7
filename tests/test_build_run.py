"""The layering of the packages (methods below the engine) and `build_run` against the Trainer."""

from __future__ import annotations

import ast
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from contrastlab.engine import Trainer, build_run
from contrastlab.engine.loop import step_seed
from contrastlab.methods import StepTools, TrainBatch
from tests.helpers import tiny_config

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "contrastlab"
LAYERED = ("engine", "methods", "config", "sections", "optim", "data", "distributed")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, root: Path = PACKAGE) -> list[str]:
    """Every module `path` imports at run time, at module level or inside functions (imports
    under `if TYPE_CHECKING:` only serve annotations and are left out); relative imports are
    resolved against the file's package."""
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            found.extend(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found.extend(arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "contrastlab" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERED else None


def layer_files(layer: str) -> list[Path]:
    folder = PACKAGE / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    root = tmp_path / "contrastlab"
    path = root / "methods" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from contrastlab.config import ExperimentConfig\n"
        "def f():\n    from ..engine.loop import Trainer\n    import importlib\n"
        "    return importlib.import_module('contrastlab.data')\n"
    )
    modules = imported_modules(path, root)
    assert "contrastlab.engine.loop" in modules and "contrastlab.data" in modules
    assert not [m for m in modules if layer_of(m) == "config"]


@pytest.mark.parametrize("path", layer_files("methods"), ids=lambda p: p.name)
def test_methods_never_import_the_engine_or_the_config(path):
    modules = imported_modules(path)
    assert not [m for m in modules if layer_of(m) == "engine"], f"{path.name} imports the engine"
    assert not [m for m in modules if layer_of(m) == "config"], f"{path.name} imports contrastlab.config"


def test_no_import_cycle_between_the_layered_packages():
    edges: dict[str, set[str]] = {layer: set() for layer in LAYERED}
    for layer in LAYERED:
        for path in layer_files(layer):
            edges[layer].update(other for m in imported_modules(path) if (other := layer_of(m)) not in (None, layer))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(layer for layer in LAYERED if reaches(layer, layer, {layer}))
    assert not cycles, f"import cycle through {cycles}: {edges}"
    assert "methods" in edges["engine"]  # the scan sees the engine's own imports


def test_importing_every_method_leaves_the_engine_unloaded():
    code = (
        "import sys; from contrastlab.methods import available_methods, get_method_class; "
        "[get_method_class(n) for n in available_methods()]; "
        "print(sorted(m for m in sys.modules if m.startswith(('contrastlab.engine', 'contrastlab.config'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- build_run gives what the Trainer trains -----------------------------------------------
METHODS = [
    {"name": "simclr", "temperature": 0.5},
    {"name": "sscl", "base": "moco", "queue_size": 64, "hard_pool_size": 16, "synthetic_count": 4},
    {"name": "mcl", "stages": 1, "clusters": 3},
]


def first_step(run, cfg) -> dict[str, torch.Tensor]:
    """The first training step of epoch 0, as the Trainer's loop takes it."""
    sampler = run.method.batch_sampler(run.ctx)
    indices = next(iter(sampler.epoch(0)))
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, 0, 0, 0))
    views = run.augment.two_views(run.train_images[indices], generator)
    batch = TrainBatch(views, indices, 0, 0, generator)
    scalars = run.method.train_step(run.model, batch, StepTools(run.optimizers, nullcontext, cfg.optim.grad_clip))
    for schedule in run.schedules:
        schedule.step()
    return scalars


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["name"])
def test_build_run_gives_the_trainers_model_and_optimisers(tmp_path, method):
    cfg = tiny_config(method, optim={"epochs": 2, "warmup_epochs": 1})
    trainer = Trainer(cfg, tmp_path / "run")
    run = build_run(cfg)
    ours = {name: value.clone() for name, value in run.method.state_dict().items()}
    theirs = trainer.method.state_dict()
    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert run.steps_per_epoch == trainer.steps_per_epoch
    assert len(run.optimizers) == len(trainer.optimizers) == len(run.method.optimizer_groups())
    for mine, other in zip(run.optimizers, trainer.optimizers):
        assert type(mine) is type(other)
        strip = [{k: v for k, v in g.items() if k != "params"} for g in mine.param_groups]
        assert strip == [{k: v for k, v in g.items() if k != "params"} for g in other.param_groups]
    assert [s.get_last_lr() for s in run.schedules] == [s.get_last_lr() for s in trainer.schedules]

    step_ours = first_step(run, cfg)
    step_theirs = first_step(trainer.parts, cfg)
    assert torch.isfinite(step_ours["loss"])
    assert torch.equal(step_ours["loss"], step_theirs["loss"])
    after_ours, after_theirs = run.method.state_dict(), trainer.method.state_dict()
    changed = [name for name in after_ours if not torch.equal(after_ours[name], ours[name])]
    assert changed  # the step trained something
    for name in after_ours:
        assert torch.equal(after_ours[name], after_theirs[name]), name


def test_build_run_is_seeded_by_the_config():
    cfg = tiny_config()
    first = build_run(cfg).method.state_dict()
    other = build_run(cfg.with_overrides({"seed": 1})).method.state_dict()
    assert any(not torch.equal(first[name], other[name]) for name in first)
