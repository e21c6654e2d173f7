"""MoCo v2 (Chen et al. 2020, after He et al. 2020): EMA key encoder and a FIFO queue.

As published: a projection head without BatchNorm, and Shuffle-BN in the key encoder
(see `contrastlab.distributed.shuffle_bn`), both switches of every MoCo-family config.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from contrastlab.distributed.shuffle_bn import shuffled_keys
from contrastlab.losses import fifo_enqueue, moco_loss
from contrastlab.losses.contrastive import f32 as at_least_float32
from contrastlab.methods.base import Component, DataInfo, LossOutput, TrainBatch, TwoViewMethod
from contrastlab.methods.contract import Distributed
from contrastlab.methods.registry import register_method
from contrastlab.sections import MethodConfig

MOCO_V2 = "He et al., CVPR 2020; Chen et al., arXiv 2003.04297"


class MoCoKeyConfig(MethodConfig):
    """The published settings shared by MoCo v2 and the methods on its key encoder and queue."""

    shuffle_bn: bool = Field(
        True,
        description=(
            "Shuffle-BN in the key encoder: keys are encoded in a shuffled batch (across workers, or in "
            f"random groups on one worker) so a query and its key never share BN statistics ({MOCO_V2})"
        ),
    )
    shuffle_bn_groups: int = Field(
        8,
        ge=1,
        description=(
            "one worker: the key batch is split into this many random groups with their own BN statistics "
            f"(MoCo's CIFAR demo: 8; at least 2 rows per group are kept) ({MOCO_V2})"
        ),
    )
    projector_bn: bool | None = Field(
        None,
        description=f"BatchNorm in the projection head; None: model.projector_bn, else none as in MoCo v2 ({MOCO_V2})",
    )


class MoCoConfig(MoCoKeyConfig):
    name: Literal["moco"] = "moco"
    temperature: float = Field(0.2, gt=0, description="τ of the InfoNCE logits")
    queue_size: int = Field(4096, ge=1, description="K past keys kept as negatives")
    momentum: float = Field(0.99, ge=0, le=1, description="EMA coefficient m of the key encoder")
    symmetric: bool = Field(False, description="also use view 2 as query (symmetrised loss)")

    components: ClassVar[tuple[Component, ...]] = (
        Component("shuffle_bn", "shuffle_bn", False, "Shuffle-BN in the key encoder; off → keys share BN batches"),
        Component("projector_bn", "projector_bn", None, "BN in the projection head: false (MoCo v2) | true"),
    )


class MomentumKeys:
    """MoCo v2's key side, composed into a two-view method: the key encoder and head (EMA
    copies of the method's own, without gradient), the FIFO queue of past keys, and the
    queries and keys of a step.

    The host's config supplies `queue_size`, `momentum`, `shuffle_bn` and `shuffle_bn_groups`.
    Its modules and buffers are registered on the host method under MoCo v2's names
    (`key_encoder`, `key_projector`, `queue`, `queue_ptr`), so every method that composes
    it checkpoints the same layout. Keys from all workers are gathered before enqueueing,
    so every worker holds the same queue.
    """

    def __init__(self, host: TwoViewMethod):
        self.host = host
        host.key_encoder = copy.deepcopy(host.encoder)
        host.key_projector = copy.deepcopy(host.projector)
        for p in [*host.key_encoder.parameters(), *host.key_projector.parameters()]:
            p.requires_grad_(False)
        dim = host.cfg.model.projector_out
        seed_gen = torch.Generator().manual_seed(host.cfg.seed + 7919)
        queue = F.normalize(torch.randn(host.mcfg.queue_size, dim, generator=seed_gen), dim=1)
        host.register_buffer("queue", queue)
        host.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    def query(self, images: torch.Tensor) -> torch.Tensor:
        host = self.host
        return F.normalize(at_least_float32(host.projector(host.encoder(images))), dim=1)

    @torch.no_grad()
    def keys(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised keys of `images`, under Shuffle-BN in train mode when the config asks.

        `generator` draws the shuffle (the step's generator, so a run is reproducible).
        """
        host = self.host
        host.key_encoder.train(host.training)
        host.key_projector.train(host.training)
        if not (host.training and host.mcfg.shuffle_bn):
            return self.encode_keys(images)
        return shuffled_keys(self.encode_keys, images, host.dist, host.mcfg.shuffle_bn_groups, generator)

    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """The key encoder on one batch, as it is (BN statistics from exactly these rows)."""
        host = self.host
        return F.normalize(at_least_float32(host.key_projector(host.key_encoder(images))), dim=1)

    def remember(self, keys: torch.Tensor) -> None:
        """Keys to enqueue after the optimiser step (the queue must not change mid-step)."""
        self._pending_keys = keys.detach()

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The EMA update of the key encoder and head, then the enqueue of the step's keys."""
        host = self.host
        m = host.mcfg.momentum
        online = [*host.encoder.parameters(), *host.projector.parameters()]
        target = [*host.key_encoder.parameters(), *host.key_projector.parameters()]
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1 - m)
        if self._pending_keys is not None:
            keys = host.dist.all_gather(self._pending_keys)
            queue, ptr = fifo_enqueue(host.queue, host.queue_ptr, keys.to(host.queue.dtype))
            host.queue.copy_(queue)
            host.queue_ptr.copy_(ptr)
            self._pending_keys = None


class MoCoBase(TwoViewMethod):
    """Query encoder f (encoder + projector), key encoder g as its EMA, and the key queue.

    Shared by MoCo v2 and the methods built on it (SLR, MoCHi, MCL on a queue); the key side
    is a `MomentumKeys` (which SSCL composes directly). The head has no BN unless the config
    asks (MoCo v2's published head).
    """

    published_projector_bn = False

    def __init__(self, cfg, info: DataInfo, dist: Distributed, projector_bn: bool | None = None):
        if projector_bn is None:
            projector_bn = getattr(cfg.method, "projector_bn", None)
        super().__init__(cfg, info, dist, projector_bn)
        self.momentum_keys = MomentumKeys(self)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        return self.momentum_keys.query(images)

    def keys(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised keys of `images` (Shuffle-BN in train mode when the config asks)."""
        return self.momentum_keys.keys(images, generator)

    def remember_keys(self, keys: torch.Tensor) -> None:
        """Keys to enqueue after the optimiser step (the queue must not change mid-step)."""
        self.momentum_keys.remember(keys)

    def after_optimizer_step(self) -> None:
        self.momentum_keys.after_optimizer_step()


@register_method("moco")
class MoCo(MoCoBase):
    config_class = MoCoConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        x1, x2 = batch.views
        queue = self.queue.clone().detach()
        q1 = self.query(x1)
        k2 = self.keys(x2, batch.generator)
        loss = moco_loss(q1, k2, queue, self.mcfg.temperature)
        keys = k2
        if self.mcfg.symmetric:
            q2 = self.query(x2)
            k1 = self.keys(x1, batch.generator)
            loss = 0.5 * (loss + moco_loss(q2, k1, queue, self.mcfg.temperature))
            keys = torch.cat([k2, k1])
        self.remember_keys(keys)
        return LossOutput(loss)
