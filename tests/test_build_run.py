"""`build_run` against the Trainer, and methods that load without the engine.

The static layering of the packages is checked in test_package_layout.py."""

from __future__ import annotations

import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch

from contrastlab.engine import Trainer, build_run
from contrastlab.engine.loop import step_seed
from contrastlab.methods import StepTools, TrainBatch
from tests.helpers import tiny_config


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
