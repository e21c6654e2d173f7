"""SLR + MM, the SANE method (Zhou et al., NeurIPS 2021), on a MoCo v2 base.

Candidate set C = [batch keys of all workers; queue]. A query's logits are q·C/τ and its
vanilla label is one-hot at its own key. Two components refine this:

- SLR, self-labeling refinement (no gradient): p_i = softmax(k_i·C/τ') estimates how
  similar each candidate is to the positive key, optionally cut to its top-κ entries;
  the label becomes ȳ_i = (1−α)·onehot_i + α·p_i, trained with soft cross-entropy.
- MM, momentum mixup: a virtual query x̃_i = θ·x_i + (1−θ)·x̄_π(i) mixes the query crop
  with the key crop of another image (θ ~ Beta(κ_mm, κ_mm), π a permutation); its label
  is θ·ȳ_i + (1−θ)·ȳ_π(i), with the same soft cross-entropy on f(x̃)·C/τ.

Loss L_SLR + λ_mm·L_MM, then the EMA update and the enqueue of the keys (MoCoBase).
With SLR off (or α = 0) the other images' batch keys leave C: each query then scores its
own key and the queue, exactly MoCo v2, so an ablation of `slr` measures SLR alone. MM
then stays MoCo v2 + momentum mixup: a virtual query scores the keys of its two source
images and the queue, with label θ_i on its own key and 1−θ_i on its partner's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from contrastlab.losses import label_entropy, mixup_labels, slr_soft_labels, soft_cross_entropy
from contrastlab.losses.contrastive import f32, float32_math
from contrastlab.methods.base import Component, LossOutput, TrainBatch
from contrastlab.methods.moco import MoCoBase, MoCoKeyConfig
from contrastlab.methods.registry import register_method

PAPER = "Zhou et al., NeurIPS 2021"


class SLRConfig(MoCoKeyConfig):
    name: Literal["slr"] = "slr"
    temperature: float = Field(0.2, gt=0, description=f"τ of the query logits q·C/τ (MoCo v2 default 0.2; {PAPER})")
    queue_size: int = Field(4096, ge=1, description=f"K past keys in the queue part of C ({PAPER})")
    momentum: float = Field(0.99, ge=0, le=1, description=f"EMA coefficient m of the key encoder ({PAPER})")
    slr: bool = Field(True, description=f"self-labeling refinement of the one-hot labels; off is α = 0 ({PAPER})")
    alpha: float = Field(
        0.5,
        ge=0,
        le=1,
        description=f"α, weight of the estimated similarity p_i in ȳ_i = (1−α)·onehot + α·p_i ({PAPER})",
    )
    temperature_prime: float = Field(
        0.1,
        gt=0,
        description=(
            "τ' of p_i = softmax(k_i·C/τ'); too large with a long queue makes p_i nearly uniform, so keep it "
            f"small (0.02–0.2) ({PAPER})"
        ),
    )
    top_k: int | None = Field(
        None, ge=1, description=f"κ: keep only the κ largest entries of p_i and renormalise (None: all) ({PAPER})"
    )
    mm: bool = Field(True, description=f"momentum mixup: virtual queries with mixed labels ({PAPER})")
    mm_kappa: float = Field(1.0, gt=0, description=f"κ_mm of the mixing coefficient θ ~ Beta(κ_mm, κ_mm) ({PAPER})")
    mm_weight: float = Field(1.0, ge=0, description=f"λ_mm, weight of the mixup loss L_MM ({PAPER})")
    mm_partner: Literal["key_crop", "query_crop"] = Field(
        "key_crop",
        description=(
            "which crop of the partner image π(i) is mixed into the query: its key crop x̄ (the paper) or its "
            f"query crop ({PAPER})"
        ),
    )

    mm_theta: Literal["per_sample", "per_batch"] = Field(
        "per_sample",
        description=(
            "mixing coefficient θ: one draw per virtual query, θ_i as in the paper's notation (per_sample), "
            f"or one per batch as in input mixup (per_batch) ({PAPER})"
        ),
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("slr", "slr", False, "self-labeling refinement; off (α = 0, batch keys leave C) → MoCo v2"),
        Component("mm", "mm", False, "momentum mixup virtual queries; off → none"),
        Component("mm_partner", "mm_partner", None, "key_crop | query_crop"),
        Component("mm_theta", "mm_theta", None, "per_sample | per_batch"),
        Component("shuffle_bn", "shuffle_bn", False, "Shuffle-BN in the key encoder (MoCo v2)"),
    )

    @property
    def effective_alpha(self) -> float:
        return self.alpha if self.slr else 0.0

    @property
    def uses_batch_keys(self) -> bool:
        """The other images' batch keys are candidates only with SLR on (SANE's C); without
        it C is MoCo v2's (own key and queue), so the SLR ablation changes one thing."""
        return self.effective_alpha > 0


@dataclass
class MixedQueries:
    """Projections of the virtual queries and how they were mixed."""

    queries: torch.Tensor
    perm: torch.Tensor
    theta: torch.Tensor | float


def query_logits(
    q: torch.Tensor,
    keys: torch.Tensor,
    keys_all: torch.Tensor,
    queue: torch.Tensor,
    offset: int,
    with_batch_keys: bool,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits over C, each query's positive column, and C itself (None when keys are dropped).

    Keys and queue are constants: the key encoder learns only through the EMA.
    """
    with float32_math(q.device):
        q = f32(q)
        queue = f32(queue.detach()).to(q.dtype)
        rows = torch.arange(q.shape[0], device=q.device)
        if not with_batch_keys:
            positive = (q * f32(keys.detach()).to(q.dtype)).sum(1, keepdim=True)
            logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
            return logits, torch.zeros_like(rows), None
        candidates = torch.cat([f32(keys_all.detach()).to(q.dtype), queue])
        return q @ candidates.T / temperature, rows + offset, candidates


def mixup_loss_without_batch_keys(
    mixed: MixedQueries, keys: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo v2 + MM: virtual query i scores k_i, k_π(i) and the queue, label θ_i on k_i and
    1−θ_i on k_π(i). Where π(i) = i the two are one key, which then gets the whole label
    (its duplicate column is dropped, so the positive is not counted twice).

    Soft cross-entropy written as logsumexp(kept logits) − Σ_c ȳ_c·l_c (labels sum to 1).
    """
    with float32_math(mixed.queries.device):
        q = f32(mixed.queries)
        k, queue = f32(keys.detach()).to(q.dtype), f32(queue.detach()).to(q.dtype)
        rows = q.shape[0]
        theta = torch.as_tensor(mixed.theta, dtype=q.dtype, device=q.device).expand(rows)
        fixed = mixed.perm == torch.arange(rows, device=q.device)
        own = (q * k).sum(1, keepdim=True)
        partner = (q * k[mixed.perm]).sum(1, keepdim=True)
        logits = torch.cat([own, partner, q @ queue.T], dim=1) / temperature
        labels = torch.zeros_like(logits)
        labels[:, 0] = torch.where(fixed, torch.ones_like(theta), theta)
        labels[:, 1] = torch.where(fixed, torch.zeros_like(theta), 1 - theta)
        keep = torch.ones_like(logits, dtype=torch.bool)
        keep[:, 1] = ~fixed
        log_norm = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=1)
        return (log_norm - (labels * logits.masked_fill(~keep, 0.0)).sum(1)).mean()


def slr_objective(
    q: torch.Tensor,
    keys: torch.Tensor,
    keys_all: torch.Tensor,
    queue: torch.Tensor,
    offset: int,
    mcfg: SLRConfig,
    mixed: MixedQueries | None = None,
) -> LossOutput:
    """L_SLR + λ_mm·L_MM for local queries [b, d], local keys [b, d] and global keys [B, d]."""
    logits, positive, candidates = query_logits(
        q, keys, keys_all, queue, offset, mcfg.uses_batch_keys, mcfg.temperature
    )
    if candidates is None:
        labels = F.one_hot(positive, logits.shape[1]).float()
    else:
        labels = slr_soft_labels(
            keys.detach(), candidates, positive, mcfg.effective_alpha, mcfg.temperature_prime, mcfg.top_k
        )
    loss_slr = soft_cross_entropy(logits, labels)
    scalars: dict[str, torch.Tensor] = {}
    if mcfg.effective_alpha > 0:
        scalars["mean_label_entropy"] = label_entropy(labels).detach()
    if mixed is None:
        return LossOutput(loss_slr, scalars)
    if candidates is None:
        loss_mm = mixup_loss_without_batch_keys(mixed, keys, queue, mcfg.temperature)
    else:
        with float32_math(q.device):
            mixed_logits = f32(mixed.queries) @ candidates.to(f32(mixed.queries).dtype).T / mcfg.temperature
        loss_mm = soft_cross_entropy(mixed_logits, mixup_labels(labels, mixed.perm, mixed.theta))
    scalars.update(loss_slr=loss_slr.detach(), loss_mm=loss_mm.detach())
    return LossOutput(loss_slr + mcfg.mm_weight * loss_mm, scalars)


def draw_mixing(
    batch_size: int, kappa: float, generator: torch.Generator | None, device, per_sample: bool = False
) -> tuple[torch.Tensor | float, torch.Tensor]:
    """θ ~ Beta(κ, κ) (a float, or one per sample as a [b] tensor) and a permutation, from `generator`.

    torch has no seeded Beta sampler, so a seed drawn from the generator feeds NumPy's.
    """
    source = device if generator is None else generator.device
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=source).item())
    rng = np.random.default_rng(seed)
    perm = torch.randperm(batch_size, generator=generator, device=source).to(device)
    if per_sample:
        return torch.as_tensor(rng.beta(kappa, kappa, size=batch_size), dtype=torch.float32, device=device), perm
    return float(rng.beta(kappa, kappa)), perm


@register_method("slr")
class SLR(MoCoBase):
    config_class = SLRConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        x1, x2 = batch.views
        m: SLRConfig = self.mcfg
        queue = self.queue.clone().detach()
        q = self.query(x1)
        k = self.keys(x2, batch.generator)
        keys_all = self.dist.all_gather(k) if m.uses_batch_keys else k
        mixed = self.mixed_queries(x1, x2, batch.generator) if m.mm else None
        out = slr_objective(q, k, keys_all, queue, self.dist.rank * k.shape[0], m, mixed)
        self.remember_keys(k)
        return out

    def mixed_queries(self, x1: torch.Tensor, x2: torch.Tensor, generator: torch.Generator | None) -> MixedQueries:
        per_sample = self.mcfg.mm_theta == "per_sample"
        theta, perm = draw_mixing(x1.shape[0], self.mcfg.mm_kappa, generator, x1.device, per_sample)
        partner = x2 if self.mcfg.mm_partner == "key_crop" else x1
        weight = theta.to(x1.dtype).view(-1, *[1] * (x1.dim() - 1)) if per_sample else theta
        virtual = weight * x1 + (1 - weight) * partner[perm]
        return MixedQueries(self.query(virtual), perm, theta)
