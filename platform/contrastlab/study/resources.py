"""How much of a cluster a study's trials take, and how many may run at once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from contrastlab.config import ExperimentConfig

# The Tune trial of a Ray Train run is a light driver; its Train workers hold the real
# resources. (One-worker trials take the fast path instead and reserve their run's CPUs
# themselves: no driver, so two 1-CPU trials fit 2 CPUs.)
DRIVER_RESOURCES = {"CPU": 0.01}
# How long one reading of the cluster's resources stands for the cluster (seconds).
PACE_REFRESH_S = 2.0


def uses_fast_path(cfg: ExperimentConfig) -> bool:
    """One worker and `resources.trial_path: auto`: the run goes in the Tune trial itself."""
    return cfg.resources.workers == 1 and cfg.resources.trial_path == "auto"


def trials_at_once(cfg: ExperimentConfig, cluster: Mapping[str, float], limit: int | None, count: int) -> int:
    """Trials of `cfg`'s resources that fit `cluster` at once (at least one, at most `count`
    and at most `limit`, the spec's cap, when it gives one)."""
    res = cfg.resources
    driver_cpus = 0 if uses_fast_path(cfg) else DRIVER_RESOURCES["CPU"]  # a fast-path trial has no driver
    per_trial_cpus = res.workers * res.cpus_per_worker + driver_cpus
    fits = math.floor((cluster.get("CPU", 0) + 1e-9) / per_trial_cpus)
    if res.gpus_per_worker > 0:
        fits = min(fits, math.floor((cluster.get("GPU", 0) + 1e-9) / (res.workers * res.gpus_per_worker)))
    if limit:
        fits = min(fits, limit)
    return max(1, min(fits, count))


def _ray_cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


class ClusterPace:
    """How many of a study's trials may be alive now: what the cluster holds at this moment,
    read again every `refresh_s` seconds, capped by the spec's `limit`, and at least one.

    A trial's Tune actor is a light driver; its Train workers ask for the real resources, and a
    worker group that waits too long for them fails. So the study starts a trial only when the
    cluster as it is now holds its workers: on a small cluster the others wait in the study's
    queue (not yet created), and they start as nodes join (an autoscaler's, or by hand).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        limit: int | None,
        refresh_s: float = PACE_REFRESH_S,
        resources: Callable[[], Mapping[str, float]] | None = None,
    ):
        self.cfg = cfg
        self.limit = limit
        self.refresh_s = refresh_s
        self.resources = resources
        self.read_at = -math.inf
        self.current = 1

    def allowed(self) -> int:
        now = time.monotonic()
        if now - self.read_at >= self.refresh_s:
            cluster = (self.resources or _ray_cluster_resources)()
            self.current = trials_at_once(self.cfg, cluster, self.limit, math.inf)
            self.read_at = now
        return self.current

    def __getstate__(self) -> dict:
        # Saved with Tune's searcher: a restored study reads its cluster afresh.
        return {**self.__dict__, "resources": None, "read_at": -math.inf}


__all__ = ["DRIVER_RESOURCES", "PACE_REFRESH_S", "ClusterPace", "trials_at_once", "uses_fast_path"]
