"""One Ray Train run inside a Tune trial, as both kinds of study run it.

A failed run becomes `TrialFailed`, whose message is the root cause in one line: that is
what a study keeps as the trial's reason and what a report shows.
"""

from __future__ import annotations

from pathlib import Path

from contrastlab.config import ExperimentConfig

# A Train controller that cannot start its workers (a starved cluster) retries forever by
# default; inside a study that would hang the trial instead of failing it.
CONTROLLER_FAILURE_LIMIT = 2


class TrialFailed(RuntimeError):
    """A trial's Train run failed; the message is the one-line reason kept in the study."""


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


def fit_in_trial(cfg: ExperimentConfig, run_dir: Path, name: str, storage: str) -> None:
    """One Ray Train run inside a Tune trial: per-epoch metrics reach Tune, and a failure
    becomes `TrialFailed` carrying its root cause in one line."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from contrastlab.raytrain.trainer import make_trainer

    trainer = make_trainer(cfg, run_dir, name=name, storage=storage, callbacks=[TuneReportCallback()])
    trainer.run_config.failure_config.controller_failure_limit = CONTROLLER_FAILURE_LIMIT
    try:
        trainer.fit()
    except Exception as err:
        raise TrialFailed(one_line(err)) from err


__all__ = ["CONTROLLER_FAILURE_LIMIT", "TrialFailed", "fit_in_trial", "one_line", "root_cause"]
