"""Building the TorchTrainer for one run, and running it from the command line.

A run is identified by (storage, name): running the same `TorchTrainer` again with the
same pair resumes it from its latest checkpoint, which is how a stopped run continues and
how Tune relaunches a trial.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from contrastlab.config import ExperimentConfig
from contrastlab.raytrain.cluster import (
    backend_for,
    check_cluster_resources,
    check_distributed_config,
    check_shared_storage,
    resolve_storage,
)
from contrastlab.raytrain.session import RaySession
from contrastlab.raytrain.worker import train_loop_per_worker

log = logging.getLogger("contrastlab")

# Checkpoints kept in Ray storage: the latest, plus one in case the latest is cut short.
CHECKPOINTS_KEPT = 2
FORWARDED_ENV_PREFIX = "CONTRASTLAB_"


def scaling_config(cfg: ExperimentConfig) -> ScalingConfig:
    res = cfg.resources
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    return ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0, resources_per_worker=per_worker)


def absolute_data_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Data paths made absolute against the driver's directory (Ray workers run elsewhere)."""
    updates = {}
    for field in ("root", "cache_dir"):
        value = getattr(cfg.data, field)
        if value and not Path(value).expanduser().is_absolute():
            updates[f"data.{field}"] = str(Path(value).expanduser().resolve())
    return cfg.with_overrides(updates) if updates else cfg


# Secrets the workers never need: not forwarded, so no runtime environment carries them.
NOT_FORWARDED = frozenset({"CONTRASTLAB_STUDY_STORAGE"})


def forwarded_environment() -> dict[str, str]:
    """The driver's CONTRASTLAB_* variables (data cache, test hooks), for every worker."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX) and k not in NOT_FORWARDED}


def make_trainer(
    cfg: ExperimentConfig,
    run_dir: Path,
    name: str,
    storage: str,
    callbacks: Sequence = (),
    max_failures: int | None = None,
) -> TorchTrainer:
    """The TorchTrainer of one run: `cfg.resources` workers running `train_loop_per_worker`.

    `name` and `storage` identify the run (same pair: resume); `max_failures` overrides
    `cfg.resources.max_failures` (worker-group restarts from the latest checkpoint).
    """
    failures = cfg.resources.max_failures if max_failures is None else max_failures
    run_config = RunConfig(
        name=name,
        storage_path=storage,
        callbacks=list(callbacks),
        failure_config=FailureConfig(max_failures=failures),
        checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        worker_runtime_env={"env_vars": forwarded_environment()},
    )
    loop_config = {"config": absolute_data_paths(cfg).to_dict(), "run_dir": str(Path(run_dir).resolve())}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend_for(cfg)),
        scaling_config=scaling_config(cfg),
        run_config=run_config,
    )


def run_name(run_dir: Path) -> str:
    """The Ray run name: the run folder's name, so the same command finds the same run."""
    return Path(run_dir).resolve().name


def run_ray_training(
    cfg: ExperimentConfig, run_dir: Path | str, address: str | None = None, storage: str | None = None
) -> dict[str, Any]:
    """Pretrain `cfg` on Ray Train and return rank 0's final metrics.

    Without `address` a local Ray instance is started (and stopped at the end); with it the
    run joins that cluster. `storage` defaults to `run_dir/ray`; clusters of several
    machines need a shared path or a cloud URI, checked before any worker starts.
    """
    check_distributed_config(cfg)
    run_dir = Path(run_dir).resolve()
    storage = resolve_storage(storage, run_dir)
    with RaySession(address) as session:
        session.ensure()
        # A local instance cannot grow; a joined cluster may be autoscaled.
        check_cluster_resources(cfg, strict=not session.joins_cluster)
        check_shared_storage(storage)
        name = run_name(run_dir)
        log.info("Ray Train run %r: %d worker(s), storage %s", name, cfg.resources.workers, storage)
        result = make_trainer(cfg, run_dir, name, storage).fit()
        return dict(result.metrics or {})


__all__ = ["make_trainer", "run_name", "run_ray_training", "scaling_config"]
