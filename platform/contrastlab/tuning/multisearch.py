"""The searcher of a study with several objectives.

Optuna keeps no intermediate values for a multi-objective trial (nothing prunes on them),
so the per-epoch results only reach TensorBoard and Tune's logs; a trial that trained its
planned epochs is told every objective's value at its last epoch, in the spec's order.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from contrastlab.tuning.sampler import make_sampler
from contrastlab.tuning.spec import StudySpec
from contrastlab.tuning.study import (
    EPOCHS_TRAINED,
    FAIL_REASON,
    FINAL_METRICS,
    STOPPED_BY,
    StudySearcher,
    failure_reason,
    held_out_metrics,
)

# The objectives' values of a finished trial by metric name (costs such as train_seconds
# are not held-out metrics, so they are kept here for the tables).
OBJECTIVE_VALUES = "objective_values"


class MultiObjectiveSearcher(StudySearcher):
    """`StudySearcher` told a list of values: one per objective."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Multi-objective Optuna trials take no intermediate values."""

    def decide(self, trial_id: str, result: dict, error: bool) -> tuple[TrialState, list[float] | None, dict[str, Any]]:
        epochs = int(result.get("epoch", 0) or 0)
        attrs: dict[str, Any] = {EPOCHS_TRAINED: epochs}
        if error:
            attrs[FAIL_REASON] = failure_reason(trial_id)
            return TrialState.FAIL, None, attrs
        if epochs < self._targets.get(trial_id, self._max_t):
            attrs[STOPPED_BY] = "scheduler" if epochs else "stopped before its first epoch"
            return TrialState.PRUNED, None, attrs
        values = []
        for metric in self.metric:
            value = result.get(metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                attrs[FAIL_REASON] = f"objective {metric!r} missing or not finite at the last epoch ({value!r})"
                return TrialState.FAIL, None, attrs
            values.append(float(value))
        attrs[FINAL_METRICS] = held_out_metrics(result)
        attrs[OBJECTIVE_VALUES] = dict(zip(self.metric, values))
        return TrialState.COMPLETE, values, attrs


def multi_searcher(spec: StudySpec, storage: optuna.storages.BaseStorage, points: list[dict[str, Any]]):
    return MultiObjectiveSearcher(
        spec.space,
        spec.metrics,
        spec.modes,
        spec.study_name,
        storage,
        make_sampler(spec.sampler),
        base_epochs=spec.base.optim.epochs,
        max_t=spec.max_t,
        points_to_evaluate=points,
    )


__all__ = ["OBJECTIVE_VALUES", "MultiObjectiveSearcher", "multi_searcher"]
