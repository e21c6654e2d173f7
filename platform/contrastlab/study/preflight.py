"""Checks against the connected cluster that `tune` and `ablate` share, before any trial or run.

A request no node can ever hold (on a local instance, more than the machine has; on a joined
cluster, a worker larger than every node type its autoscaler may start), GPUs that are not
there, and storage other hosts cannot see fail once, in one line naming the spec file and
the field (`ConfigError`, exit code 2), before a study or a grid creates anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.study.resources import DRIVER_RESOURCES, uses_fast_path


@contextmanager
def named(source: str, prefix: str = "") -> Iterator[None]:
    """A check that knew no file (Ray's resource checks) names the spec, and the part of the
    spec (a sampled value, a variant) whose request it judged."""
    try:
        yield
    except ConfigError as err:
        field = f"{prefix}{err.field}" if prefix else err.field
        raise ConfigError(source, field, err.expected) from None


def check_cluster_fit(
    source: str, requests: Iterable[tuple[str, ExperimentConfig]], ray_storage: str, joins_cluster: bool
) -> None:
    """Each `(prefix, config)` of `requests` against the connected cluster: resources a run can
    never get (strict on a local instance; on a joined cluster, beyond every node type an
    autoscaler may start), then the storage other hosts must see."""
    import ray

    from contrastlab.raytrain.cluster import check_cluster_resources, check_node_fit, check_shared_storage
    from contrastlab.study.internals import autoscaler_node_types

    node_types = autoscaler_node_types() if joins_cluster else None
    for prefix, cfg in requests:
        with named(source, prefix):
            check_cluster_resources(cfg, strict=not joins_cluster)
            check_node_fit(cfg, strict=not joins_cluster, node_types=node_types)
            if not joins_cluster:
                check_driver_fits(cfg, ray.cluster_resources().get("CPU", 0.0))
    with named(source):
        check_shared_storage(ray_storage)


def check_driver_fits(cfg: ExperimentConfig, cpus: float) -> None:
    """On the Ray Train path a trial's driver holds a little CPU beside its workers: a worker
    group that takes every CPU of a machine that cannot grow would wait for ever."""
    if uses_fast_path(cfg):
        return
    res = cfg.resources
    needed = res.workers * res.cpus_per_worker + DRIVER_RESOURCES["CPU"]
    if needed > cpus + 1e-9:
        raise ConfigError(
            "<spec>",
            "resources.cpus_per_worker",
            f"workers × cpus_per_worker plus the trial driver's {DRIVER_RESOURCES['CPU']:g} CPU within the "
            f"{cpus:g} CPUs of this machine ({res.workers} × {res.cpus_per_worker:g} + "
            f"{DRIVER_RESOURCES['CPU']:g} = {needed:g}); e.g. cpus_per_worker: "
            f"{math.floor((cpus - DRIVER_RESOURCES['CPU']) / res.workers * 100) / 100:g}",
        )


def distinct_requests(labelled: Iterable[tuple[str, ExperimentConfig]]) -> list[tuple[str, ExperimentConfig]]:
    """The first of each distinct `resources` section (one check, one message per request)."""
    seen: set[str] = set()
    kept = []
    for prefix, cfg in labelled:
        key = repr(sorted(cfg.to_dict()["resources"].items()))
        if key not in seen:
            seen.add(key)
            kept.append((prefix, cfg))
    return kept


__all__ = ["check_cluster_fit", "check_driver_fits", "distinct_requests", "named"]
