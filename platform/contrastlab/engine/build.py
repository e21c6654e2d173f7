"""Assembling a run: data, augmentation, evaluator, method, optimisers and schedules.

`build_run` puts together everything a run is made of, in the order that fixes its
random draws (the method's initial weights come right after `torch.manual_seed(cfg.seed)`),
and runs nothing. The `Trainer` runs what it returns; `contrastlab eval` and the
benchmarks use it to get exactly the model a training run would start from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from contrastlab.config import ExperimentConfig
from contrastlab.data import DataBundle, RandomBatches, TwoViewAugment, load_dataset
from contrastlab.distributed import LocalDistributed
from contrastlab.engine.evaluate import Evaluator
from contrastlab.methods import DataInfo, Distributed, Method, ScalarWriter, get_method_class
from contrastlab.optim import build_optimizer
from contrastlab.progress import quiet_progress
from contrastlab.tracking import RunWriter

log = logging.getLogger("contrastlab")


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("resources.device is 'cuda' but no CUDA device is visible")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class EpochContext:
    """The engine's side of `contrastlab.methods.EpochContext`: sampling, embedding, logging."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        dist: Distributed,
        train_images: torch.Tensor,
        evaluator: Evaluator,
        writer: ScalarWriter,
    ):
        self.cfg = cfg
        self.dist = dist
        self.device = dist.device
        self.writer = writer
        self._train_images = train_images
        self._evaluator = evaluator

    @property
    def train_images(self) -> torch.Tensor:
        return self._train_images

    def random_batches(self) -> RandomBatches:
        return RandomBatches(
            self._train_images.shape[0],
            self.cfg.optim.batch_size,
            self.cfg.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    @torch.no_grad()
    def embed_train_set(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`fn` on every training image (no augmentation), in eval mode: [N, D] float."""
        return self._evaluator.embed(fn, self._train_images, "extracting features (train)")

    def log(self, message: str) -> None:
        if self.dist.is_main:
            log.info("%s", message)


@dataclass
class Run:
    """Everything a run is made of, before its first step.

    `model` is `method` as the training step calls it (under DDP on several workers);
    `optimizers[i]` and `schedules[i]` belong to `method.optimizer_groups()[i]`.
    """

    cfg: ExperimentConfig
    dist: Distributed
    bundle: DataBundle
    train_images: torch.Tensor
    augment: TwoViewAugment
    evaluator: Evaluator
    info: DataInfo
    method: Method
    model: nn.Module
    channels_last: bool
    ctx: EpochContext
    steps_per_epoch: int
    optimizers: list[torch.optim.Optimizer]
    schedules: list[torch.optim.lr_scheduler.LRScheduler]

    @property
    def device(self) -> torch.device:
        return self.dist.device


def build_run(
    cfg: ExperimentConfig,
    dist: Distributed | None = None,
    *,
    bundle: DataBundle | None = None,
    writer: ScalarWriter | None = None,
) -> Run:
    """Assemble the run of `cfg` on `dist` (one local process on `resources.device` when None).

    `bundle` replaces loading `cfg.data` (a dataset already in memory); `writer` receives the
    methods' epoch logs (none when None).
    """
    dist = dist or LocalDistributed(resolve_device(cfg.resources.device))
    device = dist.device
    if bundle is None:
        # Every worker loads the data; the first one shows how long that takes.
        with quiet_progress(not dist.is_main):
            bundle = load_dataset(cfg.data, cfg.seed, source=f"<run {cfg.name}>")
    writer = writer or RunWriter(None, enabled=False)
    images = bundle.pretraining_images
    on_gpu = device.type == "cuda"
    train_images = images.to(device) if on_gpu else images
    size = cfg.data.image_size or bundle.image_size
    augment = TwoViewAugment(cfg.augment, bundle.channels, size, bundle.mean, bundle.std)
    evaluator = Evaluator(cfg, bundle, augment, device, show_progress=dist.is_main)
    info = DataInfo(
        bundle.channels,
        size,
        train_images.shape[0],
        dict(bundle.num_classes),
        tuple(bundle.mean),
        tuple(bundle.std),
    )
    torch.manual_seed(cfg.seed)
    method: Method = get_method_class(cfg.method.name)(cfg, info, dist).to(device)
    channels_last = on_gpu and cfg.model.channels_last
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        for module in (method.encoder, getattr(method, "projector", None)):
            if module is not None:
                module.compile()
    model = dist.wrap(method)
    ctx = EpochContext(cfg, dist, train_images, evaluator, writer)
    steps_per_epoch = max(1, len(method.batch_sampler(ctx)))
    optimizers = [build_optimizer(group, cfg.optim) for group in method.optimizer_groups()]
    schedules = [method.lr_schedule(opt, index, steps_per_epoch) for index, opt in enumerate(optimizers)]
    return Run(
        cfg=cfg,
        dist=dist,
        bundle=bundle,
        train_images=train_images,
        augment=augment,
        evaluator=evaluator,
        info=info,
        method=method,
        model=model,
        channels_last=channels_last,
        ctx=ctx,
        steps_per_epoch=steps_per_epoch,
        optimizers=optimizers,
        schedules=schedules,
    )


__all__ = ["EpochContext", "Run", "build_run", "resolve_device"]
