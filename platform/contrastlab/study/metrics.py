"""What a study keeps of a Tune result, and how a value shows in TensorBoard's hparams."""

from __future__ import annotations

from typing import Any

from ray.tune.result import AUTO_RESULT_KEYS

EXCLUDED_KEYS = set(AUTO_RESULT_KEYS) | {
    "done",
    "trial_id",
    "experiment_tag",
    "should_checkpoint",
    "checkpoint_path",
    "iterations_since_restore",
    "time_this_iter_s",
}


def hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard's hparams take bools, numbers and strings; anything else as its text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The engine's metrics in a Tune result (Tune's own bookkeeping keys left out)."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in EXCLUDED_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


__all__ = ["EXCLUDED_KEYS", "hparam_value", "numeric_metrics"]
