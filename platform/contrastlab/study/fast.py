"""The fast path of a one-worker trial: the engine's `Trainer` inside the Tune trial itself.

No Train controller, worker group or process group is started: the Tune actor holds the
trial's resources (`contrastlab.study.trial.trial_resources`), reports each epoch and its
checkpoint through `tune.report`, and after a relaunch resumes from the newer of
`tune.get_checkpoint()` and the run folder's own checkpoint (`study.checkpoints.resume_point`).
Tune reuses actors between trials, and a reused actor keeps the dataset it loaded
(`cached_bundle`, keyed by the data config and the seed that draws the subset).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from contrastlab.config import ExperimentConfig
from contrastlab.data import DataBundle, load_dataset

log = logging.getLogger("contrastlab")

# Test hook, read only here: "STEP:MARKER" ends the trial's process at global step STEP, once
# (MARKER is a file created just before), as a lost actor or node would.
EXIT_ONCE_ENV = "CONTRASTLAB_TEST_EXIT_ONCE"
# Test hook, read only here: "STEP:NTH:LOG" holds the NTH trial process that reaches global
# step STEP there (each one appends a line to LOG) for up to HOLD_SECONDS, so that a test can
# kill the driver while that trial is known to be mid-run.
HOLD_ENV = "CONTRASTLAB_TEST_HOLD"
HOLD_SECONDS = 300

# One dataset per actor: trials of a study or an ablation seed share it, and memory stays bounded.
_BUNDLES: dict[str, DataBundle] = {}


def bundle_key(cfg: ExperimentConfig) -> str:
    """What the loaded data depends on: the data section and the seed (it draws `data.subset`)."""
    return json.dumps({"data": cfg.to_dict()["data"], "seed": cfg.seed}, sort_keys=True, default=str)


def cached_bundle(cfg: ExperimentConfig) -> DataBundle:
    """The dataset of `cfg`, loaded once per actor for the same data config and seed."""
    key = bundle_key(cfg)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = load_dataset(cfg.data, cfg.seed, source=f"<run {cfg.name}>")
    else:
        log.info("dataset %s already loaded in this actor", cfg.data.name)
    return _BUNDLES[key]


def trial_threads(cfg: ExperimentConfig) -> int:
    """Torch threads of a trial: the CPUs it reserves (at least one)."""
    return max(1, int(cfg.resources.cpus_per_worker))


class TuneReporter:
    """`Trainer` reporter: each epoch's metrics, and its checkpoint when one was written, to Tune."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        from ray import tune

        # Tune copies the folder to the trial's storage; the run folder keeps its own copy.
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)


def fit_here(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Run `cfg` in this Tune trial's process, resuming from Tune's checkpoint when relaunched."""
    from ray import tune

    from contrastlab.engine.checkpoint import recover_checkpoint
    from contrastlab.engine.loop import Trainer
    from contrastlab.raytrain.trainer import absolute_data_paths
    from contrastlab.raytrain.worker import arm_fail_once
    from contrastlab.study.checkpoints import resume_point

    cfg = absolute_data_paths(cfg)
    torch.set_num_threads(trial_threads(cfg))
    log.info("trial %s: in the Tune trial (one worker, %d torch thread(s))", cfg.name, torch.get_num_threads())
    trainer = Trainer(cfg, run_dir, reporter=TuneReporter(), bundle=cached_bundle(cfg))
    arm_fail_once(trainer, 0)  # the Train path's test hook, for rank 0: this process
    arm_exit_once(trainer)
    arm_hold(trainer)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        trainer.run()  # from the run folder's own checkpoint, if an earlier attempt left one
        return
    with checkpoint.as_directory() as directory:
        start = resume_point(directory, recover_checkpoint(trainer.checkpoint_dir))
        log.info("resuming from %s (Tune's copy: %s)", start, checkpoint.path)
        trainer.run(start)


def arm_exit_once(trainer) -> None:
    """Install the `CONTRASTLAB_TEST_EXIT_ONCE` hook on this trial, if it is set."""
    spec = os.environ.get(EXIT_ONCE_ENV)
    if not spec:
        return
    step, marker = spec.split(":", 1)
    marker_path, exit_step = Path(marker), int(step)
    step_function = trainer.method.train_step

    def train_step(model, batch, tools):
        if batch.step == exit_step and not marker_path.exists():
            marker_path.touch()
            os._exit(1)
        return step_function(model, batch, tools)

    trainer.method.train_step = train_step


def arm_hold(trainer) -> None:
    """Install the `CONTRASTLAB_TEST_HOLD` hook on this trial, if it is set."""
    spec = os.environ.get(HOLD_ENV)
    if not spec:
        return
    step, nth, log_file = spec.split(":", 2)
    hold_step, log_path = int(step), Path(log_file)
    step_function = trainer.method.train_step

    def train_step(model, batch, tools):
        if batch.step == hold_step:
            with log_path.open("a") as handle:
                handle.write(f"{os.getpid()}\n")
            if len(log_path.read_text().splitlines()) == int(nth):
                time.sleep(HOLD_SECONDS)
        return step_function(model, batch, tools)

    trainer.method.train_step = train_step


__all__ = ["EXIT_ONCE_ENV", "HOLD_ENV", "TuneReporter", "bundle_key", "cached_bundle", "fit_here", "trial_threads"]
