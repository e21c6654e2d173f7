"""MetAug (Li et al., ICML 2022, "MetAug: Contrastive Learning via Meta Feature Augmentation").

By default two augmented crops through one encoder, negatives from the batch; the released
code's CMC Lab-channel views (`views: cmc_lab`, one encoder each), memory bank
(`negatives: memory_bank`, see `metaug_views`) and AlexNet (`model.encoder: alexnet`) are
switches. Per-view generators g_1, g_2 map the normalised
projection z of each view to an "augmented" feature; the encoder learns from the original
and the augmented pairs, and the generators are meta-learned so that the augmented
features help the encoder after one inner step.

    L = L_con(z1, z2) + λ·[L_con(g1, z2) + L_con(z1, g2) + L_con(g1, g2)] + β·L_MI

`L_con` is OUCL (default) or InfoNCE; `L_MI` is the margin-injected regulariser over the
scores of the single-replacement pairs, with margins from the original pair.

One iteration (`train_step`):
1. encoder step: L through `model` (the DDP wrapper in distributed runs), step the
   encoder + head only; the generators' gradients from this pass are discarded.
2. meta step: θ' = θ − α_inner·∇θL (graph kept for `second_order`), L again at θ', step the
   generators only. It runs on the unwrapped modules with `functional_call` and BN
   buffer copies, so it never changes the encoder.
Under data parallelism the meta step computes what one worker with the global batch
would: negatives are gathered with gradient, ∇θL is the workers' mean (a differentiable
mean through `all_gather_with_grad` for second order), and the generator gradients are
averaged with `dist.all_reduce_gradients` before the step.
The method draws nothing at random itself (views come from the engine's generator).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.errors import ConfigError
from contrastlab.losses import info_nce_from_similarities, margin_injected_loss, nt_xent, oucl_loss, two_view_scores
from contrastlab.methods.base import DataInfo, LossOutput, StepTools, TrainBatch, TwoViewMethod
from contrastlab.methods.contract import Distributed
from contrastlab.methods.metaug_config import MetAugConfig
from contrastlab.methods.metaug_generators import (
    FeatureGenerator,
    branch_with,
    fast_weights,
    trainable,
)
from contrastlab.methods.metaug_views import BankDraw, MemoryBank, lab_views
from contrastlab.methods.registry import register_method
from contrastlab.models import build_encoder, build_projector

Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Contrast:
    """One pair's loss and its rescaled score rows (for the margin regulariser)."""

    loss: torch.Tensor
    pos: torch.Tensor | None
    neg: torch.Tensor | None


def rescaled(scores: torch.Tensor) -> torch.Tensor:
    """Cosine scores mapped to [0, 1] as in the paper, (s + 1) / 2."""
    return (scores + 1) / 2


@register_method("metaug")
class MetAug(TwoViewMethod):
    config_class = MetAugConfig

    def __init__(self, cfg, info: DataInfo, dist: Distributed):
        super().__init__(cfg, info, dist)
        m = self.mcfg
        self.generators: nn.ModuleList | None = None
        if m.generator:
            dim = cfg.model.projector_out
            self.generators = nn.ModuleList([FeatureGenerator(dim, m.generator_hidden) for _ in range(2)])
            if m.meta_update == "frozen":
                self.generators.requires_grad_(False)
        if cfg.model.sync_batchnorm and dist.world_size > 1 and self.meta_learns and m.meta_update == "second_order":
            # SyncBatchNorm's backward runs collectives and cannot be differentiated again.
            raise ValueError("metaug: meta_update second_order needs model.sync_batchnorm false in multi-worker runs")
        if m.views == "cmc_lab":
            self._build_lab_encoders(cfg, info)
        self.bank = (
            MemoryBank(info.num_train, cfg.model.projector_out, cfg.seed + 104729)
            if m.negatives == "memory_bank"
            else None
        )
        self._step_draw: BankDraw | None = None
        self._pending_bank: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _build_lab_encoders(self, cfg, info: DataInfo) -> None:
        """One encoder + head for the L channel and one for the ab channels (CMC's views)."""
        if info.channels != 3:
            expected = f"two_crops for this data (cmc_lab needs colour images; the data has {info.channels} channel(s))"
            raise ConfigError(cfg.name, "method.views", expected)
        self.encoder, self.feature_dim = build_encoder(cfg.model, 1)
        self.projector = build_projector(cfg.model, self.feature_dim, self.projector_bn)
        self.encoder_ab, _ = build_encoder(cfg.model, 2)
        self.projector_ab = build_projector(cfg.model, self.feature_dim, self.projector_bn)

    @property
    def meta_learns(self) -> bool:
        return self.generators is not None and self.mcfg.meta_update != "frozen"

    # -- features ------------------------------------------------------------------------
    @property
    def lab_views(self) -> bool:
        return self.mcfg.views == "cmc_lab"

    def project(
        self, views: tuple[torch.Tensor, torch.Tensor], params: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z1, z2 of the two views, at `params` (the meta step's fast weights) or the modules' own.

        two_crops: both crops through the one encoder in one pass (BN sees the whole batch),
        float64 kept for gradient checks. cmc_lab: the first crop's L and ab channels, each
        through its own encoder (the second crop is not used, as in CMC).
        """
        if not self.lab_views:
            return branch_with(self.encoder, self.projector, params, torch.cat(views, dim=0)).chunk(2, dim=0)
        lightness, colour = lab_views(views[0], self.info.mean, self.info.std)
        z1 = branch_with(self.encoder, self.projector, params, lightness)
        z2 = branch_with(self.encoder_ab, self.projector_ab, params, colour, ("encoder_ab", "projector_ab"))
        return z1, z2

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features; with Lab views both encoders' features side by side, as CMC evaluates."""
        if not self.lab_views:
            return self.encoder(images)
        lightness, colour = lab_views(images, self.info.mean, self.info.std)
        return torch.cat([self.encoder(lightness), self.encoder_ab(colour)], dim=1)

    def projections(self, images: torch.Tensor) -> torch.Tensor:
        if not self.lab_views:
            return super().projections(images)
        return F.normalize(torch.cat(self.project((images, images)), dim=1), dim=1)

    def generated_features(self, images: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.project((images, images))
        return torch.cat([self.generators[0](z1), self.generators[1](z2)], dim=1)

    def eval_representations(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        if self.generators is None or not self.mcfg.eval_generator_features:
            return {}
        return {"generator": self.generated_features}

    # -- the loss ------------------------------------------------------------------------
    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        z1, z2 = self.project(batch.views)
        if self.bank is not None:
            # One draw per step, shared by every pair and by the meta step's two passes.
            self._step_draw = self.bank.draw(batch.indices, self.mcfg.bank_negatives, batch.generator)
            self._pending_bank = (batch.indices, z1.detach(), z2.detach())
        return self.objective(z1, z2, self._gather(), include_margin=self.mcfg.margin_in_encoder_step)

    def _gather(self) -> Gather | None:
        """Negatives from every worker, with gradient to each worker's own rows."""
        return self.dist.all_gather_with_grad if self.dist.world_size > 1 else None

    def objective(self, z1: torch.Tensor, z2: torch.Tensor, gather: Gather | None, include_margin: bool) -> LossOutput:
        """L = L_con + λ·L_aug + β·L_MI for projections z1, z2 (rows of this worker)."""
        m = self.mcfg
        margin_on = self.generators is not None and m.margin_type != "off"
        original = self._contrast(z1, z2, gather, scores=margin_on)
        scalars = {"contrastive_loss": original.loss.detach()}
        if self.generators is None:
            return LossOutput(original.loss, scalars)
        g1, g2 = self.generators[0](z1), self.generators[1](z2)
        first = self._contrast(g1, z2, gather, scores=margin_on)
        second = self._contrast(z1, g2, gather, scores=margin_on)
        both = self._contrast(g1, g2, gather, scores=False)
        # The released code sums the replaced-view losses, each weighted by λ.
        augmented = first.loss + second.loss + both.loss
        loss = original.loss + m.aug_weight * augmented
        scalars["aug_loss"] = augmented.detach()
        scalars["generator_similarity"] = 0.5 * ((z1 * g1).sum(1).mean() + (z2 * g2).sum(1).mean()).detach()
        if margin_on:
            # Margins from the original scores; regularised: the single-replacement pairs (released code).
            margin = margin_injected_loss(
                original.pos,
                original.neg,
                torch.cat([first.pos, second.pos], dim=1),
                torch.cat([first.neg, second.neg], dim=1),
                m.margin_type,
                m.margin_positive_weight,
                m.margin_grad,
            )
            scalars["margin_loss"] = margin.detach()
            if include_margin:
                loss = loss + m.margin_weight * margin
        return LossOutput(loss, scalars)

    def _contrast(self, a: torch.Tensor, b: torch.Tensor, gather: Gather | None, scores: bool) -> Contrast:
        """The contrastive loss of the pair (a, b), negatives from every worker's batch."""
        m = self.mcfg
        if self.bank is not None:
            return self._bank_contrast(a, b)
        a_all, b_all = (a, b) if gather is None else (gather(a), gather(b))
        offset = self.dist.rank * a.shape[0]
        pos = neg = None
        if m.loss == "oucl" or scores:
            pos, neg = self._rows(*two_view_scores(a, b, a_all, b_all, offset))
        if m.loss == "infonce":
            value = nt_xent(a, b, m.temperature, a_all, b_all, offset)
        else:
            value = (16.0 / m.gamma) * oucl_loss(pos, neg, m.gamma, circle=m.circle, margin=m.circle_margin)
        return Contrast(value, pos, neg)

    def _bank_contrast(self, a: torch.Tensor, b: torch.Tensor) -> Contrast:
        """The pair (a, b) against the banks: a (view 1) scores bank 2, b (view 2) scores bank 1,
        raw dot products (the release's NCE-style scores), anchors in the two-view layout."""
        m = self.mcfg
        pos_a, neg_a = self.bank.scores(a, 1, self._step_draw)
        pos_b, neg_b = self.bank.scores(b, 0, self._step_draw)
        pos_sim, neg_sim = torch.cat([pos_a, pos_b]), torch.cat([neg_a, neg_b])
        pos, neg = self._rows(pos_sim, neg_sim)
        if m.loss == "infonce":
            return Contrast(info_nce_from_similarities(pos_sim[:, 0], neg_sim, m.temperature), pos, neg)
        value = (16.0 / m.gamma) * oucl_loss(pos, neg, m.gamma, circle=m.circle, margin=m.circle_margin)
        return Contrast(value, pos, neg)

    def _rows(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rescaled scores, one row per anchor view or (both views side by side) per image."""
        pos, neg = rescaled(pos), rescaled(neg)
        if self.mcfg.oucl_rows == "view":
            return pos, neg
        half = pos.shape[0] // 2
        return torch.cat([pos[:half], pos[half:]], dim=1), torch.cat([neg[:half], neg[half:]], dim=1)

    # -- optimisation --------------------------------------------------------------------
    def encoder_modules(self) -> dict[str, nn.Module]:
        """Encoders and heads by the prefix their parameters carry in the meta step."""
        modules = {"encoder": self.encoder, "projector": self.projector}
        if self.lab_views:
            modules.update(encoder_ab=self.encoder_ab, projector_ab=self.projector_ab)
        return modules

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.encoder_modules().values() for p in module.parameters() if p.requires_grad]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The bank takes this step's features once (the release updates it up to three times)."""
        if self.bank is not None and self._pending_bank is not None:
            own, z1, z2 = (self.dist.all_gather(t) for t in self._pending_bank)
            self.bank.update(own, (z1, z2), self.mcfg.bank_momentum)
        self._pending_bank = None

    def optimizer_groups(self) -> list[list[nn.Parameter]]:
        """Encoder + head; and the generators when they are meta-learned (their own optimiser)."""
        if not self.meta_learns:
            return [self.encoder_parameters()]
        return [self.encoder_parameters(), list(self.generators.parameters())]

    def train_step(self, model: nn.Module, batch: TrainBatch, tools: StepTools) -> dict[str, torch.Tensor]:
        scalars = self.encoder_step(model, batch, tools)
        if self.meta_learns:
            scalars.update(self.meta_step(batch, tools))
        self.after_optimizer_step()
        return scalars

    def encoder_step(self, model: nn.Module, batch: TrainBatch, tools: StepTools) -> dict[str, torch.Tensor]:
        """Step 1: L through `model` (DDP reduces every gradient); only the encoder + head step."""
        out = self.loss_backward(model, batch, tools, self.encoder_parameters())
        tools.optimizers[0].step()
        return {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.scalars.items()}}

    def meta_step(self, batch: TrainBatch, tools: StepTools) -> dict[str, torch.Tensor]:
        """Step 2: the generators' meta-gradient, averaged over workers; only they step."""
        optimizer = tools.optimizers[1]
        optimizer.zero_grad(set_to_none=True)  # drops step 1's generator gradients: frozen there
        params = list(self.generators.parameters())
        grads = self.generator_meta_gradients(batch.views, tools.autocast)
        for param, grad in zip(params, grads):
            param.grad = grad
        self.dist.all_reduce_gradients(params)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        if tools.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, tools.grad_clip)
        self._follow_encoder_schedule(optimizer, tools.optimizers[0])
        optimizer.step()
        return {"meta_grad_norm": norm.detach()}

    def generator_meta_gradients(
        self,
        views: tuple[torch.Tensor, torch.Tensor],
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> list[torch.Tensor]:
        """d L(θ − α∇θL(θ, φ), φ) / dφ (second order) or its direct part only (first order)."""
        keep_graph = self.mcfg.meta_update == "second_order"
        theta = {
            name: p
            for prefix, module in self.encoder_modules().items()
            for name, p in trainable(module, prefix).items()
        }
        inner = self._loss_at(theta, views, autocast)
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=keep_graph, allow_unused=True)
        grads = self._mean_over_workers(list(theta.values()), grads, keep_graph)
        outer = self._loss_at(fast_weights(theta, grads, self.mcfg.inner_lr, keep_graph), views, autocast)
        phi = list(self.generators.parameters())
        meta = torch.autograd.grad(outer, phi, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(phi, meta)]

    def _loss_at(self, params: dict[str, torch.Tensor], views, autocast) -> torch.Tensor:
        """L with the encoder + head at `params` (the margin term always counts here)."""
        with autocast():
            z1, z2 = self.project(views, params)
            return self.objective(z1, z2, self._gather(), include_margin=True).loss

    def _mean_over_workers(
        self, params: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...], keep_graph: bool
    ) -> list[torch.Tensor]:
        """∇θ of the global loss: the mean of every worker's gradient of its local loss.

        For second order the mean must stay differentiable (the generators' gradient flows
        through every worker's inner gradient), so it goes through the gather with gradient.
        """
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        if self.dist.world_size == 1:
            return grads
        flat = torch.cat([g.reshape(-1) for g in grads])
        if keep_graph:
            mean = self.dist.all_gather_with_grad(flat[None]).mean(dim=0)
        else:
            mean = self.dist.all_reduce_mean(flat.detach())
        return [part.view_as(g) for part, g in zip(mean.split([g.numel() for g in grads]), grads)]

    def _follow_encoder_schedule(
        self, generator_opt: torch.optim.Optimizer, encoder_opt: torch.optim.Optimizer
    ) -> None:
        """generator_lr, scaled by batch size and by the encoder's current schedule factor.

        The engine builds every optimiser at optim.lr; the encoder optimiser is never
        touched here, so its lr / initial_lr is the warm-up + cosine factor of this step.
        """
        if self.mcfg.generator_lr is None:
            return
        group = encoder_opt.param_groups[0]
        factor = group["lr"] / group.get("initial_lr", group["lr"])
        lr = self.mcfg.generator_lr * self.cfg.optim.batch_size / 256 * factor
        for generator_group in generator_opt.param_groups:
            generator_group["lr"] = lr
