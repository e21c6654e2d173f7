"""One run inside a Tune trial, as both kinds of study run it.

A one-worker run takes the fast path (`contrastlab.study.fast`: the engine's `Trainer` in
the trial itself, the trial holding the run's CPUs and GPU share); a run of several workers,
or one whose `resources.trial_path` is `train`, is a Ray Train run driven from the trial.

A failed run becomes `TrialFailed`, whose message is the root cause in one line: that is
what a study keeps as the trial's reason and what a report shows. Tune relaunches a trial
whose actor or node was lost (`resources.trial_retries`), resuming from its checkpoint; an
error of the run itself (a NaN loss, a config error, out of memory) is not retried: it is
recorded in the run folder, and a relaunched attempt stops at once with the same reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from contrastlab.config import ExperimentConfig
from contrastlab.study.resources import DRIVER_RESOURCES, uses_fast_path

log = logging.getLogger("contrastlab")

# A Train controller that cannot start its workers (a starved cluster) retries forever by
# default; inside a study that would hang the trial instead of failing it.
CONTROLLER_FAILURE_LIMIT = 2
# An error of the run itself, kept in the run folder for the relaunches of the same trial.
FINAL_ERROR_FILE = "trial_error.json"


class TrialFailed(RuntimeError):
    """A trial's run failed; the message is the one-line reason kept in the study."""


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


def is_final(err: BaseException) -> bool:
    """Whether the run's own error ends the trial: retrying would only repeat it."""
    import torch

    from contrastlab.engine.loop import NonFiniteLossError
    from contrastlab.errors import UserError

    final = (NonFiniteLossError, UserError, MemoryError, torch.OutOfMemoryError)
    return isinstance(err, final) or isinstance(root_cause(err), final)


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What the Tune trial reserves: the run's CPUs and (fractional) GPUs on the fast path,
    only the driver's bookkeeping when Ray Train workers hold them."""
    if not uses_fast_path(cfg):
        return dict(DRIVER_RESOURCES)
    res = cfg.resources
    wanted = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        wanted["GPU"] = res.gpus_per_worker
    return wanted


def fit_in_trial(cfg: ExperimentConfig, run_dir: Path, name: str, storage: str) -> None:
    """One Ray Train run inside a Tune trial: per-epoch metrics reach Tune, and a failure
    becomes `TrialFailed` carrying its root cause in one line."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from contrastlab.raytrain.trainer import make_trainer

    log.info("trial %s: on Ray Train (%d worker(s))", name, cfg.resources.workers)
    trainer = make_trainer(cfg, run_dir, name=name, storage=storage, callbacks=[TuneReportCallback()])
    trainer.run_config.failure_config.controller_failure_limit = CONTROLLER_FAILURE_LIMIT
    try:
        trainer.fit()
    except Exception as err:
        raise TrialFailed(one_line(err)) from err


def run_in_trial(cfg: ExperimentConfig, run_dir: Path, name: str, storage: str) -> None:
    """Run `cfg` in this Tune trial on its path; any failure becomes `TrialFailed`."""
    from ray import tune

    from contrastlab.study.fast import fit_here

    run_dir = Path(run_dir)
    trial_id = tune.get_context().get_trial_id()
    check_final_error(run_dir)
    try:
        if uses_fast_path(cfg):
            fit_here(cfg, run_dir)
        else:
            fit_in_trial(cfg, run_dir, name, storage)
    except Exception as err:
        reason = one_line(err)
        if is_final(err):
            record_final_error(run_dir, trial_id, reason)
        raise TrialFailed(reason) from err


def check_final_error(run_dir: Path) -> None:
    """Stop a relaunched attempt at once when an earlier attempt of the same Tune trial ended
    with an error of the run itself: Tune relaunches every failed trial, this does not retrain."""
    from ray import tune

    earlier = final_error(Path(run_dir), tune.get_context().get_trial_id())
    if earlier is not None:
        log.info("not retried: %s", earlier)
        raise TrialFailed(earlier)


def record_final_error(run_dir: Path, trial_id: str, reason: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FINAL_ERROR_FILE).write_text(json.dumps({"trial_id": trial_id, "reason": reason}) + "\n")


def final_error(run_dir: Path, trial_id: str) -> str | None:
    """The reason an earlier attempt of this same Tune trial ended for good, if it did (a new
    trial on the same run folder, as a later ablation run, starts afresh)."""
    path = run_dir / FINAL_ERROR_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved.get("reason") if saved.get("trial_id") == trial_id else None


__all__ = [
    "CONTROLLER_FAILURE_LIMIT",
    "FINAL_ERROR_FILE",
    "TrialFailed",
    "check_final_error",
    "fit_in_trial",
    "is_final",
    "one_line",
    "root_cause",
    "run_in_trial",
    "trial_resources",
    "uses_fast_path",
]
