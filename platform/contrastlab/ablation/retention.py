"""Bounded disk for an ablation: every run that finished keeps its last checkpoint in its run
folder (`runs/<variant>/seed<k>/checkpoints/last`) and Ray's copies are removed, as each run
finishes and again when the grid ends (the rule of `contrastlab.study.checkpoints`; an
ablation has no best runs, its report needs every run's metrics, not their checkpoints).
Both kinds of copies go: Ray Train's (`STORAGE/train/<run name>`) and, for a fast-path run,
Tune's own in the trial's folder of the grid's experiment.

A failed or interrupted run keeps Ray's copies: `ablate --resume` restores its Train run
under the same name, and Ray Train resumes from the newest copy its storage records."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from contrastlab.study.checkpoints import prune_run, tune_trial_storage

log = logging.getLogger("contrastlab")


class RunCheckpointRetention(Callback):
    def __init__(self, runs: dict[str, dict[str, Any]], run_key: str):
        self.runs, self.run_key = runs, run_key

    def prune(self, trial) -> None:
        run = self.runs.get(str(trial.config.get(self.run_key)))
        if run is None:
            return
        try:
            prune_run(Path(run["run_dir"]), run["storage"], run["train_name"], keep_copies=False)
            tune_storage, trial_folder = tune_trial_storage(trial)
            prune_run(Path(run["run_dir"]), tune_storage, trial_folder, keep_copies=False)
        except Exception as err:  # disk housekeeping must never stop a study
            log.warning("could not remove old checkpoints of %s: %s: %s", run["train_name"], type(err).__name__, err)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.prune(trial)

    def on_experiment_end(self, trials: list, **info) -> None:
        for trial in trials:
            if trial.status == Trial.TERMINATED:
                self.prune(trial)


__all__ = ["RunCheckpointRetention"]
