"""MCL, multistage contrastive learning (Zhang et al., arXiv 2402.11816), against feature suppression.

A run is a sequence of stages over one training schedule. Stage 0 is the base method
(SimCLR, or MoCo v2) on random batches. Before stage t >= 1 the stage t-1 model embeds the
whole training set (eval mode, no augmentation, L2-normalised backbone features) and
k-means clusters it; a sample's pseudo-label is its cell across the clusterings of all
earlier stages. Stage t then trains its own encoder and head with feature-aware negatives:
every negative of an anchor shares its pseudo-label, so the features that made the groups
(the ones stage t-1 learned) cannot separate them and the stage must learn others. The
representation concatenates the stages' normalised backbone features.

Engine mapping: the modules of every stage are built up front (a ModuleList, so a
checkpoint holds them all); each stage has its own optimiser and its own warm-up + cosine
lr schedule over its epochs, zero outside them. The clusterings, the current
pseudo-labels, the active stage and the MoCo queue's labels are buffers, so a run resumes
mid-schedule exactly. With `stages: 0` every step is the base method's own code path.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.losses import fifo_enqueue, moco_loss, nt_xent
from contrastlab.methods.base import DataInfo, LossOutput, Method, TrainBatch
from contrastlab.methods.contract import BatchSampler, Distributed, EpochContext
from contrastlab.methods.mcl_config import MCLConfig, base_method_config, resolve_stage_epochs, stage_lr_factor
from contrastlab.methods.mcl_sampling import (
    ClusterBatches,
    batch_negative_mask,
    describe_groups,
    kmeans_assign,
    queue_negative_mask,
    stage_pseudo_labels,
)
from contrastlab.methods.registry import get_method_class, register_method


@register_method("mcl")
class MCL(Method):
    config_class = MCLConfig

    def __init__(self, cfg, info: DataInfo, dist: Distributed):
        super().__init__(cfg, info, dist)
        mcfg: MCLConfig = self.mcfg
        if mcfg.stages and mcfg.clusters > info.num_train:
            raise ValueError(f"method.clusters ({mcfg.clusters}) exceeds the {info.num_train} training images")
        self.stage_epochs = resolve_stage_epochs(mcfg, cfg.optim.epochs)
        self.stage_starts = [sum(self.stage_epochs[:s]) for s in range(len(self.stage_epochs))]
        base_cfg = cfg.model_copy(update={"method": base_method_config(mcfg)})
        base_cls = get_method_class(mcfg.base)
        # Stage 0 is built first, so it draws the base method's initial weights exactly.
        self.stages = nn.ModuleList(base_cls(base_cfg, info, dist) for _ in range(mcfg.stages + 1))
        self.feature_dim = self.stages[0].feature_dim
        self.register_buffer("active_stage", torch.zeros((), dtype=torch.long))
        self.register_buffer("assignments", torch.full((mcfg.stages, info.num_train), -1, dtype=torch.long))
        self.register_buffer("pseudo_labels", torch.full((info.num_train,), -1, dtype=torch.long))
        if mcfg.base == "moco":
            shape = (mcfg.stages + 1, mcfg.queue_size)
            self.register_buffer("queue_labels", torch.full(shape, -1, dtype=torch.long))
        # Only the active stage takes part in a step; DDP must not wait for the others.
        self.ddp_find_unused_parameters = mcfg.stages > 0
        self.cluster_sizes: list[list[int]] = []
        self._pending_key_labels: torch.Tensor | None = None
        self._epoch_stats: dict[str, float] = {}
        self._stage_optimizers: list[torch.optim.Optimizer] = []

    # -- stages -----------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def active(self) -> int:
        return int(self.active_stage)

    @property
    def encoder(self) -> nn.Module:
        return self.stages[self.active].encoder

    @property
    def projector(self) -> nn.Module:
        return self.stages[self.active].projector

    def stage_of(self, epoch: int) -> int:
        return max(s for s, start in enumerate(self.stage_starts) if start <= epoch)

    @property
    def uses_clusters(self) -> bool:
        return self.mcfg.negatives == "cluster" and self.active > 0

    @property
    def masks_negatives(self) -> bool:
        if not self.uses_clusters:
            return False
        return self.mcfg.sampling == "mask_other_clusters" or self.mcfg.small_groups == "merge_masked"

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        target = self.stage_of(epoch)
        # A resumed run restores `active_stage` and skips what its checkpoint already holds.
        for stage in range(self.active + 1, target + 1):
            self.enter_stage(stage, epoch, ctx)
        self._epoch_stats = {"mcl/stage": float(self.active)}

    def enter_stage(self, stage: int, epoch: int, ctx: EpochContext) -> None:
        mcfg = self.mcfg
        if mcfg.negatives == "cluster":
            assignment = self.cluster_stage(stage - 1, ctx)
            self.assignments[stage - 1].copy_(assignment.to(self.assignments.device))
            labels = stage_pseudo_labels(self.assignments[:stage], mcfg.clusters, mcfg.labels)
            self.pseudo_labels.copy_(labels)
        if mcfg.init == "previous_stage":
            # The queue stays the stage's own: its keys and labels belong to the old stage.
            state = {k: v for k, v in self.stages[stage - 1].state_dict().items() if not k.startswith("queue")}
            missing, unexpected = self.stages[stage].load_state_dict(state, strict=False)
            if unexpected or any(not key.startswith("queue") for key in missing):
                raise RuntimeError(f"init previous_stage: stage {stage} does not match stage {stage - 1}")
        self.active_stage.fill_(stage)
        if mcfg.negatives == "cluster":
            self.log_groups(stage, epoch, ctx)

    @torch.no_grad()
    def cluster_stage(self, stage: int, ctx: EpochContext) -> torch.Tensor:
        """k-means of stage `stage`'s backbone features, computed on the main worker and
        broadcast, so every worker samples from the same groups."""
        result = None
        if self.dist.is_main:
            module = self.stages[stage]
            was_training = module.training
            module.eval()
            try:
                features = ctx.embed_train_set(module.encoder)
            finally:
                module.train(was_training)
            seed = self.cfg.seed * 1000 + stage
            result = kmeans_assign(
                features, self.mcfg.clusters, seed, self.mcfg.kmeans_restarts, f"MCL k-means of stage {stage}"
            )
        return torch.as_tensor(self.dist.broadcast_object(result), dtype=torch.long)

    def log_groups(self, stage: int, epoch: int, ctx: EpochContext) -> None:
        sizes = torch.bincount(self.pseudo_labels.cpu()).tolist()
        clusters = torch.bincount(self.assignments[stage - 1].cpu(), minlength=self.mcfg.clusters).tolist()
        self.cluster_sizes.append(sizes)
        sampler = self.batch_sampler(ctx)
        sampler = sampler if isinstance(sampler, ClusterBatches) else None
        ctx.log(
            f"MCL stage {stage} (epoch {epoch + 1}): k-means of stage {stage - 1}, cluster sizes {clusters}; "
            f"{describe_groups(sizes, sampler)}"
        )
        scalars = {"groups": len(sizes), "group_size_min": min(sizes), "group_size_max": max(sizes)}
        ctx.writer.scalars({f"mcl/{k}": float(v) for k, v in scalars.items()}, epoch)
        ctx.writer.scalars({f"mcl/stage{stage - 1}_cluster{c}_size": float(n) for c, n in enumerate(clusters)}, epoch)
        ctx.writer.text(f"mcl/stage{stage}_groups", describe_groups(sizes, sampler), epoch)

    # -- sampling ---------------------------------------------------------------------
    def batch_sampler(self, ctx: EpochContext) -> BatchSampler:
        cfg = self.cfg
        if self.uses_clusters and self.mcfg.sampling == "cluster_batches":
            sampler = ClusterBatches(
                self.pseudo_labels, cfg.optim.batch_size, cfg.seed, self.dist.rank, self.dist.world_size
            )
            self._epoch_stats.update(
                {
                    "mcl/stage_samples": float(sampler.samples_per_epoch),
                    "mcl/mixed_batches": float(sampler.mixed_batches),
                }
            )
            return sampler
        sampler = ctx.random_batches()
        self._epoch_stats["mcl/stage_samples"] = float(len(sampler) * cfg.optim.batch_size)
        return sampler

    # -- the loss ---------------------------------------------------------------------
    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        stage = self.stages[self.active]
        if not self.masks_negatives:
            return stage.compute_loss(batch)  # the base method's own step, unchanged
        labels = self.pseudo_labels[batch.indices.to(self.pseudo_labels.device)]
        if self.mcfg.base == "simclr":
            return self.masked_batch_loss(stage, batch, labels)
        return self.masked_queue_loss(stage, batch, labels)

    def masked_batch_loss(self, stage, batch: TrainBatch, labels: torch.Tensor) -> LossOutput:
        z1, z2 = stage.project(batch.views)
        z1_all, z2_all, offset = stage.gather(z1, z2)
        labels = labels.to(z1.device)
        keep = batch_negative_mask(labels, self.dist.all_gather(labels), offset)
        loss = nt_xent(z1, z2, self.mcfg.temperature, z1_all, z2_all, offset, negative_mask=keep)
        return LossOutput(loss, {"kept_negatives": keep.float().mean()})

    def masked_queue_loss(self, stage, batch: TrainBatch, labels: torch.Tensor) -> LossOutput:
        x1, x2 = batch.views
        queue = stage.queue.clone().detach()
        queue_labels = self.queue_labels[self.active]
        keep = queue_negative_mask(labels, queue_labels)
        q1, k2 = stage.query(x1), stage.keys(x2, batch.generator)
        loss = moco_loss(q1, k2, queue, self.mcfg.temperature, negative_mask=keep)
        keys, key_labels = k2, labels
        if self.mcfg.symmetric:
            q2, k1 = stage.query(x2), stage.keys(x1, batch.generator)
            loss = 0.5 * (loss + moco_loss(q2, k1, queue, self.mcfg.temperature, negative_mask=keep))
            keys, key_labels = torch.cat([k2, k1]), torch.cat([labels, labels])
        stage.remember_keys(keys)
        self._pending_key_labels = key_labels
        return LossOutput(loss, {"kept_negatives": keep.float().mean()})

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        stage = self.stages[self.active]
        if self._pending_key_labels is not None:
            # The labels go where the stage is about to write its keys, before the pointer moves.
            labels = self.dist.all_gather(self._pending_key_labels)
            row = self.queue_labels[self.active]
            row.copy_(fifo_enqueue(row, stage.queue_ptr, labels)[0])
            self._pending_key_labels = None
        stage.after_optimizer_step()

    # -- optimisation -----------------------------------------------------------------
    def optimizer_groups(self) -> list[list[nn.Parameter]]:
        """One optimiser per stage: each stage starts with fresh optimiser state."""
        return [[p for p in stage.parameters() if p.requires_grad] for stage in self.stages]

    def lr_schedule(self, optimizer: torch.optim.Optimizer, index: int, steps_per_epoch: int):
        if self.num_stages == 1:
            return super().lr_schedule(optimizer, index, steps_per_epoch)
        if index == 0:
            self._stage_optimizers = []
        epochs = self.stage_epochs[index]
        warmup = min(self.cfg.optim.warmup_epochs, epochs)
        factor = stage_lr_factor(
            self.stage_starts[index] * steps_per_epoch, epochs * steps_per_epoch, int(round(warmup * steps_per_epoch))
        )
        self._stage_optimizers.append(optimizer)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # -- representations ----------------------------------------------------------------
    def stage_features(self, stage: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.stages[stage].encoder

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Cross-stage integration over the stages trained so far (the base backbone when
        there is one stage)."""
        if self.num_stages == 1 or self.mcfg.integration == "last_only":
            return self.stages[self.active].encoder(images)
        parts = [F.normalize(self.stages[s].encoder(images).float(), dim=1) for s in range(self.active + 1)]
        return F.normalize(torch.cat(parts, dim=1), dim=1)

    def projections(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(images)), dim=1)

    def eval_representations(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        if self.num_stages == 1:
            return {}
        named = {"backbone": self.stage_features(0)}
        named.update({f"stage{s}": self.stage_features(s) for s in range(self.num_stages)})
        return named

    # -- checkpoints and logging -------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"cluster_sizes": [list(sizes) for sizes in self.cluster_sizes]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.cluster_sizes = [list(sizes) for sizes in state.get("cluster_sizes", [])]

    def tensorboard_scalars(self) -> dict[str, float]:
        if self.num_stages == 1:
            return {}
        stats = dict(self._epoch_stats)
        if self.uses_clusters:
            stats["mcl/groups"] = float(int(self.pseudo_labels.max()) + 1)
        if self.active < len(self._stage_optimizers):
            # The engine's `lr` is the first optimiser's, stage 0's; this is the active stage's.
            stats["mcl/stage_lr"] = float(self._stage_optimizers[self.active].param_groups[0]["lr"])
        return stats
