"""The one training loop: in-process, in a Tune trial, or in every Ray Train worker.

Everything a run needs to resume exactly lives in its checkpoint; the random draws of a
step (augmentation, synthetic negatives, mixup) come from a generator seeded by
(seed, epoch, step, rank), so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch

from contrastlab.config import ExperimentConfig, config_hash
from contrastlab.data import DataBundle
from contrastlab.distributed import LocalDistributed
from contrastlab.engine.build import EpochContext, build_run, resolve_device
from contrastlab.engine.checkpoint import (
    STATE_FILE,
    CheckpointError,
    load_checkpoint,
    recover_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from contrastlab.methods import StepTools, TrainBatch
from contrastlab.optim import scaled_lr
from contrastlab.tracking import RunWriter, memory_scalars, write_manifest

log = logging.getLogger("contrastlab")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Reporter(Protocol):
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class NullReporter:
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        return None


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + step * 101 + rank) % (2**62)


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        dist=None,
        reporter: Reporter | None = None,
        bundle: DataBundle | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir).resolve()
        self.reporter = reporter or NullReporter()
        dist = dist or LocalDistributed(resolve_device(cfg.resources.device))
        self.writer = RunWriter(self.run_dir / "tensorboard", enabled=dist.is_main and cfg.output.tensorboard)
        # Assembly is `build_run`'s (the same model eval and the benchmarks get); this class runs it.
        self.parts = run = build_run(cfg, dist, bundle=bundle, writer=self.writer)
        self.dist, self.device, self.bundle = run.dist, run.device, run.bundle
        self.train_images, self.augment, self.evaluator = run.train_images, run.augment, run.evaluator
        self.method, self.model, self.channels_last, self.ctx = run.method, run.model, run.channels_last, run.ctx
        self.steps_per_epoch, self.optimizers, self.schedules = run.steps_per_epoch, run.optimizers, run.schedules
        self.start_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []

    # -- precision ----------------------------------------------------------------------
    def autocast(self):
        if self.cfg.optim.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- checkpoints --------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "last"

    def state(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedules": [s.state_dict() for s in self.schedules],
            "epoch": self.start_epoch,
            "step": self.global_step,
            "rng": rng_state(),
            "extra": self.method.extra_state(),
            "history": self.history,
            "config_hash": config_hash(self.cfg),
        }

    def restore(self, directory: Path) -> None:
        state = load_checkpoint(directory, map_location=self.device)
        if state.get("config_hash") != config_hash(self.cfg):
            raise CheckpointError(
                f"{directory}: this checkpoint was made with a different config; "
                "use another output folder or run name to start afresh"
            )
        self.method.load_extra_state(state["extra"])
        self.method.load_state_dict(state["method"])
        for opt, saved in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)
        for schedule, saved in zip(self.schedules, state["schedules"]):
            schedule.load_state_dict(saved)
        self.start_epoch, self.global_step = state["epoch"], state["step"]
        self.history = list(state["history"])
        set_rng_state(state["rng"])
        if self.dist.is_main:
            log.info("resumed %s at epoch %d (step %d)", directory, self.start_epoch, self.global_step)

    # -- the loop -----------------------------------------------------------------------
    def run(self, resume_from: Path | None = None) -> dict[str, float]:
        cfg = self.cfg
        # The checkpoint (and its config hash) is checked before the run's provenance is
        # written: a refused run must not leave a manifest describing another config.
        if resume_from is None and self.dist.is_main:
            resume_from = recover_checkpoint(self.checkpoint_dir)  # finishes a swap a crash cut short
        elif resume_from is None:
            resume_from = self.checkpoint_dir if (self.checkpoint_dir / STATE_FILE).is_file() else None
        if resume_from is not None:
            self.restore(Path(resume_from))
        if self.dist.is_main:
            write_manifest(self.run_dir, cfg, {"world_size": self.dist.world_size})
            self.writer.text("manifest", (self.run_dir / "manifest.yaml").read_text().replace("\n", "  \n"))
        metrics: dict[str, float] = self.history[-1] if self.history else {}
        for epoch in range(self.start_epoch, cfg.optim.epochs):
            metrics = self.train_epoch(epoch)
            last = epoch == cfg.optim.epochs - 1
            knn_due = cfg.eval.knn_every and (epoch + 1) % cfg.eval.knn_every == 0
            if last:
                metrics.update(self.evaluator.final(self.method))
            elif knn_due:
                metrics.update(self.evaluator.knn(self.method))
            self.start_epoch = epoch + 1
            self.history.append(metrics)
            # Grouped tags (train/, val/, test/, system/) in TensorBoard; the keys stay as they are.
            self.writer.scalars({**metrics, **memory_scalars(self.device)}, epoch + 1)
            self.writer.flush()
            checkpoint = self.save_if_due(epoch, last)
            self.reporter.report(dict(metrics), checkpoint)
            if self.dist.is_main:
                log.info("%s", self.describe(epoch, metrics))
        if self.dist.is_main:
            self.writer.hparams(cfg.to_dict(), metrics)
            self.writer.close()
        return metrics

    def save_if_due(self, epoch: int, last: bool) -> Path | None:
        due = last or (epoch + 1) % self.cfg.resources.checkpoint_every == 0
        if not due:
            return None
        self.dist.barrier()
        if not self.dist.is_main:
            return None
        return save_checkpoint(self.state(), self.checkpoint_dir)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, device = self.cfg, self.device
        self.method.train()
        self.method.on_epoch_start(epoch, self.ctx)
        sampler = self.method.batch_sampler(self.ctx)
        tools = StepTools(self.optimizers, self.autocast, cfg.optim.grad_clip)
        generator = torch.Generator(device=device)
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        images_seen, steps, started = 0, 0, time.perf_counter()
        for step_in_epoch, indices in enumerate(sampler.epoch(epoch)):
            generator.manual_seed(step_seed(cfg.seed, epoch, step_in_epoch, self.dist.rank))
            images = self.train_images[indices.to(self.train_images.device)].to(device, non_blocking=True)
            views = self.augment.two_views(images, generator)
            if self.channels_last:
                views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
            batch = TrainBatch(views, indices, epoch, self.global_step, generator)
            scalars = self.method.train_step(self.model, batch, tools)
            for schedule in self.schedules:
                schedule.step()
            bad = ~torch.isfinite(scalars["loss"])
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, self.global_step), first_bad)
            for name, value in scalars.items():
                sums[name] = sums.get(name, 0) + value.float()
            images_seen += images.shape[0]
            steps += 1
            self.global_step += 1
            if cfg.output.progress_every and steps % cfg.output.progress_every == 0:
                self.check_finite(first_bad, epoch)
                self.progress(epoch, steps, len(sampler), sums, images_seen, started)
        self.check_finite(first_bad, epoch)
        elapsed = time.perf_counter() - started
        total_images = self.dist.all_reduce_sum(torch.tensor(float(images_seen), device=device)).item()
        metrics = {name: (self.dist.all_reduce_mean(value) / max(1, steps)).item() for name, value in sums.items()}
        metrics.update(
            epoch=epoch + 1,
            lr=self.optimizers[0].param_groups[0]["lr"],
            throughput=total_images / max(elapsed, 1e-9),
            epoch_seconds=elapsed,
            # Training time of the whole run so far (evaluation excluded), kept across resumes.
            train_seconds=elapsed + sum(h.get("epoch_seconds", 0.0) for h in self.history),
            train_samples=total_images,
        )
        metrics.update(self.method.tensorboard_scalars())
        return metrics

    def check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad_step = int(first_bad.item())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"loss became NaN/inf at step {bad_step} (epoch {epoch + 1}); the run stopped and the last "
                f"good checkpoint is kept in {self.checkpoint_dir}"
            )

    def progress(self, epoch: int, steps: int, total: int, sums, images_seen: int, started: float) -> None:
        if not self.dist.is_main:
            return
        loss = (sums["loss"] / steps).item()
        rate = images_seen * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
        log.info(
            "epoch %d/%d  step %d/%d  loss %.4f  %.0f img/s", epoch + 1, self.cfg.optim.epochs, steps, total, loss, rate
        )

    def describe(self, epoch: int, metrics: dict[str, float]) -> str:
        shown = ["loss", "val/knn_top1", "val/linear_top1", "test/knn_top1", "test/linear_top1", "throughput"]
        parts = [f"{k} {metrics[k]:.4g}" for k in shown if k in metrics]
        return f"epoch {epoch + 1}/{self.cfg.optim.epochs}  " + "  ".join(parts)


def default_run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.output.dir) / cfg.name


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    dist=None,
    resume_from: str | Path | None = None,
) -> dict[str, float]:
    """Run the whole schedule of `cfg` and return the final metrics."""
    from contrastlab.engine.runfolder import claim_run_folder

    with claim_run_folder(run_dir or default_run_dir(cfg), cfg) as folder:
        trainer = Trainer(cfg, folder, dist=dist, reporter=reporter)
        return trainer.run(Path(resume_from) if resume_from else None)


__all__ = ["EpochContext", "NonFiniteLossError", "Reporter", "Trainer", "resolve_device", "train", "scaled_lr"]
