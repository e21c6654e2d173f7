"""Optuna trials that a killed driver left RUNNING, unknown to the experiment Tune restores.

Tune saves its experiment state (the trials, the searcher) every few seconds and whenever a
trial reports a checkpoint, not each time it creates a trial. A trial asked of Optuna after
the last save, and killed with the driver before its own first checkpoint, is RUNNING in the
database but absent from the restored experiment (an orphan). The restored experiment asks
for as many trials as it has not created yet, orphans' places included, so each orphan is
resumed by the next trial the resumed study asks for: that Tune trial takes the orphan's
Optuna trial (its number, parameters and intermediate values) and continues from the last
checkpoint of the orphan's run folder (`RESUME_KEY` in its config, `trial.adopt_run_folder`).

An orphan no new trial takes (the resumed study had none left to ask for) is recorded as
FAIL with that reason when the study ends: never left RUNNING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

log = logging.getLogger("contrastlab")

# In the config of a Tune trial that resumes an orphan: the orphan's Tune trial id.
RESUME_KEY = "resumes_trial"
# User attribute of the Optuna trial: the Tune trial ids it ran under before this one.
RESUMED_FROM = "resumed_from"
ORPHAN_REASON = (
    "started just before the driver was interrupted, after Tune last saved its state, and not "
    "resumed: the resumed study asked for no further trial to continue it"
)


def orphans(study: optuna.Study, known: Iterable[int]) -> list[int]:
    """Numbers of the study's RUNNING trials not in `known` (those the experiment knows)."""
    known = set(known)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sorted(t.number for t in running if t.number not in known)


def fail_orphan(storage: optuna.storages.BaseStorage, trial_id: int, number: int, reason_attr: str) -> None:
    """Record the orphan (storage id `trial_id`) as FAIL, `ORPHAN_REASON` in `reason_attr`."""
    storage.set_trial_user_attr(trial_id, reason_attr, ORPHAN_REASON)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    log.warning("Optuna trial #%d was orphaned by the interruption and not resumed: recorded as FAIL", number)


def fail_unresumed(
    storage: optuna.storages.BaseStorage, study_name: str, tune_trial_ids: Iterable[str], id_attr: str, reason_attr: str
) -> int:
    """At the end of a study, every RUNNING Optuna trial whose Tune trial (user attribute
    `id_attr`) is not among the experiment's `tune_trial_ids` is an orphan no trial resumed:
    FAIL, with the reason. A RUNNING trial the experiment knows belongs to an interrupted
    study and stays RUNNING for `--resume`. Returns how many were recorded."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    ids = set(tune_trial_ids)
    study_id = storage.get_study_id_from_name(study_name)
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(id_attr) not in ids:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            fail_orphan(storage, trial_id, trial.number, reason_attr)
            count += 1
    return count


__all__ = ["ORPHAN_REASON", "RESUMED_FROM", "RESUME_KEY", "fail_orphan", "fail_unresumed", "orphans"]
