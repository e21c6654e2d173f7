"""What runs in every Ray Train worker: the engine's Trainer on a torch process group.

The worker resumes from the run's latest Ray checkpoint when there is one (a restart after
a failure, or the same command run again with the same run name and storage), otherwise
from the run folder's own last checkpoint, and reports once per epoch on every rank.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import Checkpoint

from contrastlab.config import ExperimentConfig, config_from_dict
from contrastlab.distributed.torch_dist import TorchDistributed
from contrastlab.engine.checkpoint import STATE_FILE, recover_checkpoint
from contrastlab.engine.loop import Trainer

log = logging.getLogger("contrastlab")

# Test hook, read only here: "RANK:STEP:MARKER" makes worker RANK raise at global step STEP,
# once (MARKER is a file created when it fires, so the restarted run passes that step).
FAIL_ONCE_ENV = "CONTRASTLAB_TEST_FAIL_ONCE"


class InjectedFailure(RuntimeError):
    """The failure that `CONTRASTLAB_TEST_FAIL_ONCE` asked for."""


class RayReporter:
    """`Trainer` reporter: every rank reports (it is a barrier), rank 0 hands over the checkpoint."""

    def __init__(self, rank: int):
        self.rank = rank

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None or self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        # The run folder keeps its own copy (checkpoints/last), so Ray must not delete it.
        ray.train.report(
            metrics,
            checkpoint=Checkpoint.from_directory(str(checkpoint_dir)),
            checkpoint_dir_name=f"checkpoint_epoch_{int(metrics.get('epoch', 0)):04d}",
            delete_local_checkpoint_after_upload=False,
        )


def worker_device(cfg: ExperimentConfig) -> torch.device:
    if cfg.resources.gpus_per_worker > 0:
        from ray.train.torch import get_device

        return get_device()
    return torch.device("cpu")


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point: `loop_config` = {"config": cfg.to_dict(), "run_dir": absolute path}."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = config_from_dict(loop_config["config"], "<ray train config>")
    run_dir = Path(loop_config["run_dir"])
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))  # the CPUs the worker reserves
    context = ray.train.get_context()
    dist = TorchDistributed(worker_device(cfg), local_rank=context.get_local_rank())
    trainer = Trainer(cfg, run_dir, dist=dist, reporter=RayReporter(dist.rank))
    arm_fail_once(trainer, dist.rank)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.run(agreed_run_dir_checkpoint(trainer))
        return
    with checkpoint.as_directory() as directory:
        if dist.is_main:
            log.info("resuming from the run's Ray checkpoint %s", checkpoint.path)
        trainer.run(Path(directory))


def agreed_run_dir_checkpoint(trainer: Trainer) -> Path | None:
    """The run folder's own checkpoint when rank 0 has one, the same one on every rank.

    On several machines each rank looks at its own disk; resuming from different states
    would silently break the run, so the ranks agree on rank 0's answer or stop.
    """
    dist = trainer.dist
    if dist.is_main:  # rank 0 finishes a checkpoint swap that a crash cut short, before anyone looks
        recover_checkpoint(trainer.checkpoint_dir)
    own = trainer.checkpoint_dir if (trainer.checkpoint_dir / STATE_FILE).is_file() else None
    chosen = dist.broadcast_object(None if own is None else str(own))
    if chosen is None:
        if own is not None:
            raise RuntimeError(
                f"rank {dist.rank}: {own} holds a checkpoint that rank 0 does not see; remove it or put "
                "--output on storage that every node shares"
            )
        return None
    if not (Path(chosen) / STATE_FILE).is_file():
        raise RuntimeError(
            f"rank {dist.rank}: cannot see rank 0's checkpoint {chosen}; put --output on storage that every "
            "node shares, or resume through the run's Ray storage (same run name and --storage)"
        )
    return Path(chosen)


def arm_fail_once(trainer: Trainer, rank: int) -> None:
    """Install the `CONTRASTLAB_TEST_FAIL_ONCE` hook on this worker, if it names this rank."""
    spec = os.environ.get(FAIL_ONCE_ENV)
    if not spec:
        return
    wanted_rank, step, marker = spec.split(":", 2)
    if int(wanted_rank) != rank:
        return
    marker_path, fail_step = Path(marker), int(step)
    step_function = trainer.method.train_step

    def train_step(model, batch, tools):
        if batch.step == fail_step and not marker_path.exists():
            marker_path.touch()
            raise InjectedFailure(f"injected failure on rank {rank} at step {fail_step}")
        return step_function(model, batch, tools)

    # An instance attribute shadows the method for this Trainer only.
    trainer.method.train_step = train_step


__all__ = ["FAIL_ONCE_ENV", "InjectedFailure", "RayReporter", "train_loop_per_worker"]
