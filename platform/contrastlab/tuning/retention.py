"""Bounded disk for a study: the checkpoint rule of `contrastlab.study.checkpoints`, applied
as trials finish and once more when the study ends.

The best `keep_checkpoints` trials are the complete ones with the best objective in the
Optuna study (the searcher has recorded a trial before Tune calls the callbacks); a trial
that drops out of them as better ones finish loses Ray's copies then. Both kinds of copies
are covered: Ray Train's (`STORAGE/train/<trial id>`) and, for a fast-path trial, Tune's own
(`STORAGE/tune/<trial id>`, the trial's folder in the experiment).
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.experiment import Trial

from contrastlab.study.checkpoints import best_runs, prune_run
from contrastlab.tuning.study import TUNE_TRIAL_ID

log = logging.getLogger("contrastlab")
FINISHED = (Trial.TERMINATED, Trial.ERROR)


def complete_values(study: optuna.Study) -> dict[str, float]:
    """Tune trial id -> objective of each complete trial."""
    return {
        t.user_attrs[TUNE_TRIAL_ID]: float(t.values[0])  # the first objective of several
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if TUNE_TRIAL_ID in t.user_attrs and t.values is not None
    }


class CheckpointRetention(Callback):
    """Removes the checkpoints a finished trial no longer needs (see the module's rule)."""

    def __init__(
        self,
        trials_dir: str | Path,
        train_storage: str,
        study_name: str,
        storage: optuna.storages.BaseStorage,
        mode: str,
        keep: int,
        tune_storage: str | None = None,
    ):
        self.trials_dir, self.train_storage, self.tune_storage = Path(trials_dir), train_storage, tune_storage
        self.study_name, self.storage, self.mode, self.keep = study_name, storage, mode, keep

    def best(self) -> set[str]:
        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        return best_runs(complete_values(study), self.mode, self.keep)

    def sweep(self, trials: list) -> int:
        """Apply the rule to every trial Tune has finished. The one whose completion calls
        this is not among them yet (a trial stopped by ASHA may still be writing its last
        checkpoint): the next completion or the study's end takes care of it."""
        return self.prune({t.trial_id for t in trials if t.status in FINISHED})

    def sweep_study(self) -> int:
        """Apply the rule to every trial the Optuna study records as finished (the study's
        end, also for a study resumed from a driver that had no such callback)."""
        study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        finished = {
            t.user_attrs[TUNE_TRIAL_ID]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
            if TUNE_TRIAL_ID in t.user_attrs
        }
        return self.prune(finished)

    def prune(self, finished: set[str]) -> int:
        if not finished:
            return 0
        best = self.best()
        removed = 0
        for trial_id in sorted(finished):
            # A study's trial folders, in the Train storage and in Tune's experiment, are named
            # by the trial id (runner.short_trial_dirname); a trial has copies in one of them.
            for storage in filter(None, (self.train_storage, self.tune_storage)):
                removed += prune_run(self.trials_dir / trial_id, storage, trial_id, trial_id in best).removed
        return removed

    def _safely(self, trials: list) -> None:
        try:
            self.sweep(trials)
        except Exception as err:  # disk housekeeping must never stop a study
            log.warning("could not remove old checkpoints: %s: %s", type(err).__name__, err)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._safely(trials)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._safely(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self._safely(trials)


__all__ = ["CheckpointRetention", "complete_values"]
