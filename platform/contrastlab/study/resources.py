"""How much of a cluster a study's trials take, and how many fit at once."""

from __future__ import annotations

import math
from collections.abc import Mapping

from contrastlab.config import ExperimentConfig

# The Tune trial of a Ray Train run is a light driver; its Train workers hold the real
# resources. It reserves no CPU (a fraction would cost a whole trial slot: two 1-CPU trials
# plus their drivers would not fit 2 CPUs), only a little memory, since Ray needs a resource.
DRIVER_RESOURCES = {"CPU": 0, "memory": 64 * 2**20}


def trials_at_once(cfg: ExperimentConfig, cluster: Mapping[str, float], limit: int | None, count: int) -> int:
    """Trials of `cfg`'s resources that fit `cluster` at once (at least one, at most `count`);
    a `limit` from the spec replaces the arithmetic."""
    if limit:
        return min(limit, count)
    res = cfg.resources
    per_trial_cpus = res.workers * res.cpus_per_worker + DRIVER_RESOURCES.get("CPU", 0)
    fits = math.floor((cluster.get("CPU", 0) + 1e-9) / per_trial_cpus)
    if res.gpus_per_worker > 0:
        fits = min(fits, math.floor((cluster.get("GPU", 0) + 1e-9) / (res.workers * res.gpus_per_worker)))
    return max(1, min(fits, count))


__all__ = ["DRIVER_RESOURCES", "trials_at_once"]
