"""How much of a cluster a study's trials take, and how many fit at once."""

from __future__ import annotations

import math
from collections.abc import Mapping

from contrastlab.config import ExperimentConfig

# The Tune trial of a Ray Train run is a light driver; its Train workers hold the real
# resources. (One-worker trials take the fast path instead and reserve their run's CPUs
# themselves: no driver, so two 1-CPU trials fit 2 CPUs.)
DRIVER_RESOURCES = {"CPU": 0.01}


def uses_fast_path(cfg: ExperimentConfig) -> bool:
    """One worker and `resources.trial_path: auto`: the run goes in the Tune trial itself."""
    return cfg.resources.workers == 1 and cfg.resources.trial_path == "auto"


def trials_at_once(cfg: ExperimentConfig, cluster: Mapping[str, float], limit: int | None, count: int) -> int:
    """Trials of `cfg`'s resources that fit `cluster` at once (at least one, at most `count`);
    a `limit` from the spec replaces the arithmetic."""
    if limit:
        return min(limit, count)
    res = cfg.resources
    driver_cpus = 0 if uses_fast_path(cfg) else DRIVER_RESOURCES["CPU"]  # a fast-path trial has no driver
    per_trial_cpus = res.workers * res.cpus_per_worker + driver_cpus
    fits = math.floor((cluster.get("CPU", 0) + 1e-9) / per_trial_cpus)
    if res.gpus_per_worker > 0:
        fits = min(fits, math.floor((cluster.get("GPU", 0) + 1e-9) / (res.workers * res.gpus_per_worker)))
    return max(1, min(fits, count))


__all__ = ["DRIVER_RESOURCES", "trials_at_once", "uses_fast_path"]
