"""The Tune callbacks of a study: TensorBoard per trial, hparams for every trial, and the
console's table of trials (`TrialConsole`).

The engine writes its hparams summary when a run ends; a trial that ASHA stops never gets
there. So the study keeps its own TensorBoard folder, written from the driver side: one
run per trial (its per-epoch metrics as Tune received them) and an hparams session for
every trial, whatever its end, with the tuned parameters and its state.
The experiment summary (which columns the hparams table has, typed from the search space)
and the custom-scalars layout are written once, at the root (`contrastlab.tuning.tensorboard`).
Scalars go under their grouped tags (`train/loss`, `val/knn_top1`, `system/throughput`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Callback
from torch.utils.tensorboard import SummaryWriter

from contrastlab.raytrain.ray_logs import LOG_FILE
from contrastlab.study.console_callback import StudyConsole
from contrastlab.study.metrics import numeric_metrics
from contrastlab.tracking.hparams import session_summary
from contrastlab.tracking.tags import grouped
from contrastlab.tuning.space import SearchSpace
from contrastlab.tuning.study import failure_reason, register_trials, target_epochs
from contrastlab.tuning.tensorboard import STATE_PARAM, session_values, write_study_tensorboard


def write_experiment_summary(root: Path, space: SearchSpace, metric: str) -> None:
    """Declare the hparams table once (typed columns, metric tags) with the study's layout."""
    write_study_tensorboard(root, space, metric)


def write_trial_session(
    log_dir: Path, params: dict[str, Any], state: str, space: SearchSpace | None = None, name: str | None = None
) -> None:
    """One hparams session (tuned values typed as their columns, the state) in the trial's own
    run; the table's metric columns read the last value of the trial's scalars."""
    writer = SummaryWriter(str(log_dir))
    writer.file_writer.add_summary(session_summary(session_values(params, state, space), group=name))
    writer.close()


class StudyCallback(Callback):
    """Per-trial TensorBoard and the live-trial registry that failure reasons come from."""

    def __init__(
        self, tensorboard_dir: str | Path, metric: str, base_epochs: int, max_t: int, space: SearchSpace | None = None
    ):
        self.tensorboard_dir = str(tensorboard_dir)
        self.space = space
        self.metric = metric
        self.base_epochs = base_epochs
        self.max_t = max_t
        self._writers: dict[str, SummaryWriter] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; open writers are not picklable.
        state = self.__dict__.copy()
        state["_writers"] = {}
        return state

    def _writer(self, trial_id: str) -> SummaryWriter:
        if trial_id not in self._writers:
            self._writers[trial_id] = SummaryWriter(str(Path(self.tensorboard_dir) / trial_id))
        return self._writers[trial_id]

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        register_trials(trials)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        register_trials([trial])

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        writer = self._writer(trial.trial_id)
        for tag, value in grouped(numeric_metrics(result)).items():
            if math.isfinite(value):
                writer.add_scalar(tag, value, epoch)
        writer.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, error=True)

    def _finish(self, trial, error: bool) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()
        result = trial.last_result or {}
        params = dict(trial.config.get("params", {}))
        if error:
            state = "FAIL"
        else:
            target = target_epochs(params, self.base_epochs, self.max_t)
            state = "COMPLETE" if int(result.get("epoch", 0) or 0) >= target else "PRUNED"
        space = getattr(self, "space", None)  # absent in a callback pickled by an older version
        write_trial_session(Path(self.tensorboard_dir) / trial.trial_id, params, state, space, trial.trial_id)

    def on_experiment_end(self, trials: list, **info) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class TrialConsole(StudyConsole):
    """The study's console: one row per trial; a trial ASHA stops early is PRUNED; a failed
    trial's line gives the reason the study records."""

    stopped = "PRUNED"

    def __init__(self, name: str, output: Path, metric: str, mode: str, samples: int, base_epochs: int, max_t: int):
        start = (
            f"study {name}: {samples} trials into {output} (Ray's logs: {output / 'logs' / LOG_FILE}); "
            f"tensorboard --logdir {output / 'tensorboard'}"
        )
        test = metric.replace("val/", "test/", 1) if metric.startswith("val/") else None
        super().__init__(start, metric, mode, total=samples, shown=[name for name in (test,) if name])
        self.base_epochs, self.max_t = base_epochs, max_t

    def epochs(self, trial) -> int | None:
        return target_epochs(dict(trial.config.get("params", {})), self.base_epochs, self.max_t)

    def reason(self, trial) -> str:
        register_trials([trial])
        return failure_reason(trial.trial_id)


__all__ = ["STATE_PARAM", "StudyCallback", "TrialConsole", "write_experiment_summary", "write_trial_session"]
