"""The Tune trainable of a study: one run per trial, in the trial or on Ray Train.

It lives in an importable module (never `__main__`), so `Tuner.restore` finds it again.
The Train run is named after the Tune trial id: a relaunched trial (after a failure or a
resumed study) continues its own run from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ray import tune

from contrastlab.config import ExperimentConfig, config_from_dict
from contrastlab.study.checkpoints import take_over_checkpoint
from contrastlab.study.trial import check_final_error, run_in_trial
from contrastlab.tuning.orphans import RESUME_KEY

log = logging.getLogger("contrastlab")

ATTEMPTS_FILE = "attempts.jsonl"


def trial_context(base: ExperimentConfig, trials_dir: Path, train_storage: str) -> dict[str, Any]:
    """What every trial needs besides its parameters (constant across the study)."""
    from contrastlab.raytrain.trainer import forwarded_environment

    return {
        "base": base.to_dict(),
        "trials_dir": str(Path(trials_dir).resolve()),
        "train_storage": train_storage,
        # The tune command's CONTRASTLAB_* settings (data cache, test hooks), for trials that
        # run in the trial's own process on a cluster started from another shell.
        "env": forwarded_environment(),
    }


def trial_config(base: dict[str, Any], overrides: dict[str, Any], trial_id: str) -> ExperimentConfig:
    cfg = config_from_dict(base, f"<trial {trial_id}>")
    return cfg.with_overrides({**overrides, "name": f"{cfg.name}-{trial_id}"}, f"<trial {trial_id}>")


def record_attempt(run_dir: Path, trial_id: str) -> int:
    """Append one line per driver start: a resumed study shows which trials were relaunched."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ATTEMPTS_FILE
    previous = len(path.read_text().splitlines()) if path.is_file() else 0
    with path.open("a") as handle:
        handle.write(json.dumps({"trial_id": trial_id, "attempt": previous + 1, "time": time.time()}) + "\n")
    return previous + 1


def run_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Tune function trainable: build the trial's config, run it (`run_in_trial`), report per epoch.

    `context` (from `trial_context`, bound with `tune.with_parameters`) stays out of Tune's
    trial config, so Tune's tables and files show only the tuned parameters.
    """
    trial_id = tune.get_context().get_trial_id()
    os.environ.update(context.get("env", {}))
    cfg = trial_config(context["base"], config.get("params", {}), trial_id)
    run_dir = Path(context["trials_dir"]) / trial_id
    if config.get(RESUME_KEY):  # continues the Optuna trial of a trial orphaned by a killed driver
        take_over_checkpoint(Path(context["trials_dir"]) / config[RESUME_KEY], run_dir)
    check_final_error(run_dir)  # before counting: a relaunch after the run's own error trains nothing
    attempt = record_attempt(run_dir, trial_id)
    log.info("trial %s: attempt %d, run folder %s", trial_id, attempt, run_dir)
    run_in_trial(cfg, run_dir, trial_id, context["train_storage"])


__all__ = ["run_trial", "trial_config", "trial_context"]
