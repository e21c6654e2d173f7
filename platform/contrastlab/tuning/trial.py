"""The Tune trainable of a study: a light driver that runs one Ray Train run per trial.

It lives in an importable module (never `__main__`), so `Tuner.restore` finds it again.
The Train run is named after the Tune trial id: a relaunched trial (after a failure or a
resumed study) continues its own run from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ray import tune

from contrastlab.config import ExperimentConfig, config_from_dict

log = logging.getLogger("contrastlab")

ATTEMPTS_FILE = "attempts.jsonl"
# A Train controller that cannot start its workers (a starved cluster) retries forever by
# default; inside a study that would hang the trial instead of failing it.
CONTROLLER_FAILURE_LIMIT = 2
DRIVER_RESOURCES = {"CPU": 0.01}


class TrialFailed(RuntimeError):
    """A trial's Train run failed; the message is the one-line reason kept in the study."""


def trial_context(base: ExperimentConfig, trials_dir: Path, train_storage: str) -> dict[str, Any]:
    """What every trial needs besides its parameters (constant across the study)."""
    return {"base": base.to_dict(), "trials_dir": str(Path(trials_dir).resolve()), "train_storage": train_storage}


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


def root_cause(err: BaseException) -> BaseException:
    """The exception that started it: through Train's worker-group and controller errors,
    Ray's task-error wrappers and explicit chaining."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        failures = getattr(err, "worker_failures", None)
        nested = failures[min(failures)] if failures else None
        nested = nested or getattr(err, "controller_failure", None) or getattr(err, "cause", None) or err.__cause__
        if not isinstance(nested, BaseException):
            break
        err = nested
    return err


def one_line(err: BaseException) -> str:
    """The root cause's type and first line: what a person needs to see in the study."""
    cause = root_cause(err)
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


def run_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Tune function trainable: build the trial's config, run it on Ray Train, report per epoch.

    `context` (from `trial_context`, bound with `tune.with_parameters`) stays out of Tune's
    trial config, so Tune's tables and files show only the tuned parameters.
    """
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(context["base"], config.get("params", {}), trial_id)
    run_dir = Path(context["trials_dir"]) / trial_id
    attempt = record_attempt(run_dir, trial_id)
    log.info("trial %s: attempt %d, run folder %s", trial_id, attempt, run_dir)
    fit_in_trial(cfg, run_dir, trial_id, context["train_storage"])


def fit_in_trial(cfg: ExperimentConfig, run_dir: Path, name: str, storage: str) -> None:
    """One Ray Train run inside a Tune trial: per-epoch metrics reach Tune, and a failure
    becomes `TrialFailed` carrying its root cause in one line."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from contrastlab.raytrain import make_trainer

    trainer = make_trainer(cfg, run_dir, name=name, storage=storage, callbacks=[TuneReportCallback()])
    trainer.run_config.failure_config.controller_failure_limit = CONTROLLER_FAILURE_LIMIT
    try:
        trainer.fit()
    except Exception as err:
        raise TrialFailed(one_line(err)) from err


__all__ = ["DRIVER_RESOURCES", "TrialFailed", "fit_in_trial", "run_trial", "trial_config", "trial_context"]
