"""ASHA that survives a resumed study.

Tune does not save a scheduler's state with the experiment: after `Tuner.restore` the ASHA
rungs start empty, so the first trials after a resume could never be stopped (no cutoff
yet) and a resumed study would prune differently from an uninterrupted one. The study
database already holds every trial's per-epoch values, so the rungs are rebuilt from it,
once, before the first trial is added; ASHA's own rule records each value, in epoch order.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler

from contrastlab.study.internals import asha_bracket
from contrastlab.tuning.study import TUNE_TRIAL_ID

log = logging.getLogger("contrastlab")


class StudyASHA(AsyncHyperBandScheduler):
    """ASHA on the engine's `epoch` axis whose rungs are rebuilt from the Optuna study."""

    def __init__(self, study_name: str, storage: optuna.storages.BaseStorage, *, mode: str, **kwargs):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, not {mode!r}")
        super().__init__(time_attr="epoch", mode=mode, **kwargs)
        self.study_name = study_name
        self.study_storage = storage
        # ASHA's rungs hold "higher is better" values: a minimised metric is negated.
        self.sign = 1.0 if mode == "max" else -1.0
        self.rungs_rebuilt = False

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self.rungs_rebuilt:
            self.rungs_rebuilt = True
            self.rebuild_rungs()
        super().on_trial_add(tune_controller, trial)

    def rebuild_rungs(self) -> int:
        """Record every trial's reported values in the rungs; returns how many trials were seen."""
        study = optuna.load_study(study_name=self.study_name, storage=self.study_storage)
        bracket = asha_bracket(self)  # one bracket (Tune's default); trials of others cannot be told apart
        seen = 0
        for frozen in study.get_trials(deepcopy=False):
            trial_id = frozen.user_attrs.get(TUNE_TRIAL_ID)
            if not trial_id or not frozen.intermediate_values:
                continue
            seen += 1
            stand_in = SimpleNamespace(trial_id=trial_id)
            for step in sorted(frozen.intermediate_values):
                bracket.on_result(stand_in, step, self.sign * frozen.intermediate_values[step])
        if seen:
            log.info("ASHA rungs rebuilt from %d trials of study %s", seen, self.study_name)
        return seen


__all__ = ["StudyASHA"]
