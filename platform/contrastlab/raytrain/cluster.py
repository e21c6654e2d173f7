"""The checks that must pass before a worker group starts.

Every check here fails with a message that says what to change, before any training
work is scheduled: a wrong resource request or a storage path that other hosts cannot see
would otherwise surface minutes later as a hang or as Ray's generic storage error.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import ray

from contrastlab.config import ConfigError, ExperimentConfig

log = logging.getLogger("contrastlab")
SOURCE = "<resources>"


# -- the run's own request ----------------------------------------------------------------
def check_distributed_config(cfg: ExperimentConfig) -> None:
    """Resource settings that cannot work, whatever the cluster."""
    res = cfg.resources
    if cfg.optim.batch_size % res.workers:
        raise ConfigError(
            SOURCE, "optim.batch_size", f"a multiple of resources.workers ({res.workers}); got {cfg.optim.batch_size}"
        )
    if res.device == "cuda" and res.gpus_per_worker == 0:
        raise ConfigError(SOURCE, "resources.gpus_per_worker", "> 0 when resources.device is cuda (--gpus-per-worker)")
    if res.device == "cpu" and res.gpus_per_worker > 0:
        raise ConfigError(SOURCE, "resources.device", "auto or cuda when GPUs are reserved (gpus_per_worker > 0)")
    if cfg.model.sync_batchnorm and res.workers > 1 and res.gpus_per_worker == 0:
        raise ConfigError(
            SOURCE, "model.sync_batchnorm", "false on CPU workers (torch's SyncBatchNorm runs on GPUs only)"
        )


def backend_for(cfg: ExperimentConfig) -> str:
    """NCCL when every worker owns a GPU; gloo otherwise (NCCL cannot put two ranks on one GPU)."""
    gpus = cfg.resources.gpus_per_worker
    if 0 < gpus < 1 and cfg.resources.workers > 1:
        log.warning("gpus_per_worker=%s shares GPUs between workers: using gloo, which is slower than NCCL", gpus)
    return "nccl" if gpus >= 1 else "gloo"


def check_cluster_resources(cfg: ExperimentConfig, strict: bool) -> None:
    """Enough CPUs/GPUs for the worker group; `strict` for a local instance that cannot grow.

    A joined cluster may be autoscaled, so there a shortfall is only a warning.
    """
    res = cfg.resources
    total = ray.cluster_resources()
    wanted = {"CPU": res.workers * res.cpus_per_worker, "GPU": res.workers * res.gpus_per_worker}
    short = {k: (need, total.get(k, 0)) for k, need in wanted.items() if need > total.get(k, 0) + 1e-9}
    if not short:
        return
    detail = ", ".join(f"{k}: {need:g} needed, {have:g} in the cluster" for k, (need, have) in short.items())
    if strict:
        raise ConfigError(
            SOURCE,
            "resources",
            f"a request that fits this machine ({detail}); "
            "lower --workers/--cpus-per-worker/--gpus-per-worker or join a cluster with --address",
        )
    log.warning("the cluster lacks resources for this run (%s); it waits until the autoscaler adds nodes", detail)


def node_fit_problem(cfg: ExperimentConfig, nodes: Iterable[Mapping[str, float]], where: str) -> str | None:
    """Why no node of `nodes` (their resources) can hold one worker of `cfg`, or None."""
    res = cfg.resources
    shapes = list(nodes)
    if any(
        node.get("CPU", 0) + 1e-9 >= res.cpus_per_worker and node.get("GPU", 0) + 1e-9 >= res.gpus_per_worker
        for node in shapes
    ):
        return None
    cpus = max((node.get("CPU", 0) for node in shapes), default=0)
    gpus = max((node.get("GPU", 0) for node in shapes), default=0)
    return (
        f"a worker that fits one node {where} (a worker asks {res.cpus_per_worker:g} CPUs and "
        f"{res.gpus_per_worker:g} GPUs; the largest node has {cpus:g} CPUs, {gpus:g} GPUs): "
        "lower cpus_per_worker/gpus_per_worker and use more workers"
    )


def check_node_fit(cfg: ExperimentConfig, strict: bool, node_types: list[dict[str, float]] | None = None) -> None:
    """One worker must fit one node: Ray never splits a worker's bundle across nodes.

    `strict` (a local instance) judges the nodes there are. A joined cluster may grow: there
    the autoscaler's node types (`node_types`, when the caller could read them) decide, and
    without them a worker no node holds yet is only a warning.
    """
    alive = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    problem = node_fit_problem(cfg, alive, "of this cluster")
    if problem is None:
        return
    if strict:
        raise ConfigError(SOURCE, "resources", problem)
    if node_types:
        problem = node_fit_problem(cfg, node_types, "type the autoscaler can start")
        if problem is not None:
            raise ConfigError(SOURCE, "resources", problem)
        log.warning("no node holds one worker yet; it waits until the autoscaler starts a larger node")
        return
    log.warning("no node holds one worker yet (expected %s); the run waits until such a node joins", problem)


# -- shared storage -------------------------------------------------------------------------
def is_uri(path: str) -> bool:
    return "://" in path


def resolve_storage(storage: str | None, run_dir: Path) -> str:
    """Absolute storage location (Ray workers change directory); default `run_dir/ray`."""
    if storage is None:
        return str(Path(run_dir).resolve() / "ray")
    if is_uri(storage):
        return storage
    return str(Path(storage).expanduser().resolve())


def shared_storage_problem(
    storage: str, hosts: Iterable[str], driver_host: str, visible_on: Callable[[str], bool]
) -> str | None:
    """Why `storage` cannot hold this run's checkpoints, or None when it can.

    `hosts` are the addresses of the alive nodes; nodes on the driver's own host share its
    file system, so only other hosts are asked (`visible_on(host)`) whether they see it.
    """
    others = sorted(set(hosts) - {driver_host})
    if is_uri(storage) or not others:
        return None
    blind = [host for host in others if not visible_on(host)]
    if not blind:
        return None
    return (
        f"storage {storage!r} is a local path that the nodes on {', '.join(blind)} cannot see. A run on "
        "several machines needs shared storage for its checkpoints: pass --storage with a path on a "
        "shared file system mounted on every node (NFS, e.g. /mnt/nfs/contrastlab) or a cloud URI "
        "(s3://bucket/contrastlab, gs://bucket/contrastlab)"
    )


def check_shared_storage(storage: str) -> None:
    """Fail before training when another host of the cluster cannot see `storage`."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node["NodeManagerAddress"]: node["NodeID"] for node in nodes}
    driver_host = ray.util.get_node_ip_address()
    if is_uri(storage) or set(hosts) <= {driver_host}:
        return
    marker = Path(storage) / f".contrastlab-shared-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        problem = shared_storage_problem(
            storage, hosts, driver_host, lambda host: _exists_on_node(hosts[host], str(marker))
        )
    finally:
        marker.unlink(missing_ok=True)
    if problem:
        raise ConfigError(SOURCE, "--storage", problem)


def _exists_on_node(node_id: str, path: str) -> bool:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(os.path.exists).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    )
    return bool(ray.get(probe.remote(path), timeout=120))


__all__ = [
    "backend_for",
    "check_cluster_resources",
    "check_distributed_config",
    "check_node_fit",
    "check_shared_storage",
    "is_uri",
    "node_fit_problem",
    "resolve_storage",
    "shared_storage_problem",
]
