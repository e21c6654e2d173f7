"""The contract every method implements, and the pieces most methods share."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.losses.contrastive import f32
from contrastlab.methods.contract import BatchSampler, Distributed, EpochContext
from contrastlab.models import build_encoder, build_projector, resolve_projector_bn
from contrastlab.optim import build_schedule
from contrastlab.sections import MethodConfig

if TYPE_CHECKING:  # annotations only: the methods never import contrastlab.config
    from contrastlab.config import ExperimentConfig


@dataclass(frozen=True)
class Component:
    """A named part of a method (the names of docs/methods.md) that an ablation can switch.

    `field` is the method-config field that holds it; `off` the value that removes it (the
    method then reduces to its baseline), or None for a choice between alternatives that
    has no "off" (an ablation then names the values it compares).
    """

    name: str
    field: str
    off: Any = None
    doc: str = ""


@dataclass
class DataInfo:
    channels: int
    image_size: int
    num_train: int
    num_classes: dict[str, int] = field(default_factory=dict)
    # The per-channel normalisation of the images a method receives (None: unknown, or
    # RGB in [0, 1]); methods that change colour space (MetAug's Lab views) undo it.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass
class TrainBatch:
    views: tuple[torch.Tensor, torch.Tensor]
    indices: torch.Tensor
    epoch: int
    step: int
    generator: torch.Generator | None = None


@dataclass
class LossOutput:
    loss: torch.Tensor
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StepTools:
    """What a method's optimisation step may use: the optimisers and the precision context."""

    optimizers: list[torch.optim.Optimizer]
    autocast: Callable[[], AbstractContextManager] = nullcontext
    grad_clip: float | None = None


class Method(nn.Module):
    """A contrastive method: modules, loss, and (optionally) its own optimisation step."""

    config_class: ClassVar[type[MethodConfig]]
    method_name: ClassVar[str] = ""

    def __init__(self, cfg: ExperimentConfig, info: DataInfo, dist: Distributed):
        super().__init__()
        self.cfg = cfg
        self.mcfg = cfg.method
        self.info = info
        self.dist = dist

    # -- the loss ---------------------------------------------------------------------
    def forward(self, batch: TrainBatch) -> LossOutput:
        return self.compute_loss(batch)

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss")

    # -- representations for evaluation -----------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The primary representation (backbone features) used by kNN and the probe."""
        return self.encoder(images)

    def projections(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised projections, for alignment and uniformity."""
        return F.normalize(self.projector(self.encoder(images)), dim=1)

    def eval_representations(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Extra named representations to evaluate beside `features` (MCL stages, ...)."""
        return {}

    # -- optimisation -----------------------------------------------------------------
    def optimizer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter lists, one optimiser each. Default: one over everything trainable."""
        return [[p for p in self.parameters() if p.requires_grad]]

    def train_step(self, model: nn.Module, batch: TrainBatch, tools: StepTools) -> dict[str, torch.Tensor]:
        """One optimisation step. `model` is this method, possibly wrapped for DDP."""
        out = self.loss_backward(model, batch, tools, self.parameters())
        for optimizer in tools.optimizers:
            optimizer.step()
        self.after_optimizer_step()
        return {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.scalars.items()}}

    @staticmethod
    def loss_backward(model: nn.Module, batch: TrainBatch, tools: StepTools, clipped) -> LossOutput:
        """Zero every optimiser's gradients, compute the loss through `model` under autocast,
        backpropagate, and clip the gradient norm of `clipped` when the config asks."""
        for optimizer in tools.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with tools.autocast():
            out: LossOutput = model(batch)
        out.loss.backward()
        if tools.grad_clip:
            torch.nn.utils.clip_grad_norm_(clipped, tools.grad_clip)
        return out

    def after_optimizer_step(self) -> None:
        """Updates that follow each step (EMA encoders, queues)."""

    def lr_schedule(
        self, optimizer: torch.optim.Optimizer, index: int, steps_per_epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The lr schedule of the `index`-th optimiser, stepped once per training step.
        Default: warm-up + cosine over the whole run (MCL gives each stage its own)."""
        return build_schedule(optimizer, self.cfg.optim, steps_per_epoch)

    # -- schedule hooks ---------------------------------------------------------------
    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        """Called before each epoch; `ctx` gives access to the engine's helpers."""

    def batch_sampler(self, ctx: EpochContext) -> BatchSampler:
        """The sampler of index batches; default: seeded random batches."""
        return ctx.random_batches()

    def extra_state(self) -> dict[str, Any]:
        """Checkpointed state beyond `state_dict()` (tensors, numbers, strings, lists)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def tensorboard_scalars(self) -> dict[str, float]:
        """Method-specific scalars logged once per epoch (beyond the step scalars)."""
        return {}


class TwoViewMethod(Method):
    """Encoder + projection head on two augmented views; the base of most methods.

    `published_projector_bn` is the head of the method's paper, used when neither the
    method's own `projector_bn` (the constructor argument) nor `model.projector_bn` is set.
    """

    published_projector_bn: ClassVar[bool] = True

    def __init__(self, cfg: ExperimentConfig, info: DataInfo, dist: Distributed, projector_bn: bool | None = None):
        super().__init__(cfg, info, dist)
        self.encoder, self.feature_dim = build_encoder(cfg.model, info.channels)
        self.projector_bn = resolve_projector_bn(cfg.model, projector_bn, self.published_projector_bn)
        self.projector = build_projector(cfg.model, self.feature_dim, self.projector_bn)

    def project(self, views: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views through encoder and head in one pass (BN sees the whole batch)."""
        both = torch.cat(views, dim=0)
        z = F.normalize(f32(self.projector(self.encoder(both))), dim=1)
        return z.chunk(2, dim=0)

    def gather(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Global projections for negatives across workers, with the local block's offset."""
        if self.dist.world_size == 1:
            return z1, z2, 0
        z1_all = self.dist.all_gather_with_grad(z1)
        z2_all = self.dist.all_gather_with_grad(z2)
        return z1_all, z2_all, self.dist.rank * z1.shape[0]
