"""SLR + MM, the SANE method (Zhou et al., NeurIPS 2021), on a MoCo v2 base.

Candidate set C = [batch keys of all workers; queue]. A query's logits are q·C/τ and its
vanilla label is one-hot at its own key. Two components refine this:

- SLR, self-labeling refinement (no gradient): p_i = softmax(k_i·C/τ') estimates how
  similar each candidate is to the positive key, optionally cut to its top-κ entries;
  the label becomes ȳ_i = (1−α)·onehot_i + α·p_i, trained with soft cross-entropy.
- MM, momentum mixup: a virtual query x̃_i = θ·x_i + (1−θ)·x̄_π(i) mixes the query crop
  with the key crop of another image (θ ~ Beta(κ_mm, κ_mm), π a permutation); its label
  is θ·ȳ_i + (1−θ)·ȳ_π(i), with the same soft cross-entropy on f(x̃)·C/τ.

Loss L_SLR + λ_mm·L_MM, then the EMA update and the enqueue of the keys (MoCoBase). When
no label can put mass on the batch keys (SLR off or α = 0, and MM off), they are dropped
from C and the loss is exactly MoCo v2's InfoNCE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from contrastlab.config import MethodConfig
from contrastlab.losses import label_entropy, mixup_labels, slr_soft_labels, soft_cross_entropy
from contrastlab.methods.base import Component, LossOutput, TrainBatch
from contrastlab.methods.moco import MoCoBase
from contrastlab.methods.registry import register_method

PAPER = "Zhou et al., NeurIPS 2021"


class SLRConfig(MethodConfig):
    name: Literal["slr"] = "slr"
    temperature: float = Field(0.2, gt=0, description=f"τ of the query logits q·C/τ (MoCo v2 default 0.2; {PAPER})")
    queue_size: int = Field(4096, ge=1, description=f"K past keys in the queue part of C ({PAPER})")
    momentum: float = Field(0.99, ge=0, le=1, description=f"EMA coefficient m of the key encoder ({PAPER})")
    slr: bool = Field(True, description=f"self-labeling refinement of the one-hot labels; off is α = 0 ({PAPER})")
    alpha: float = Field(
        0.5, ge=0, le=1,
        description=f"α, weight of the estimated similarity p_i in ȳ_i = (1−α)·onehot + α·p_i ({PAPER})",
    )
    temperature_prime: float = Field(
        0.1, gt=0,
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

    components: ClassVar[tuple[Component, ...]] = (
        Component("slr", "slr", False, "self-labeling refinement; off (α = 0) → one-hot labels"),
        Component("mm", "mm", False, "momentum mixup virtual queries; off → none"),
        Component("mm_partner", "mm_partner", None, "key_crop | query_crop"),
    )

    @property
    def effective_alpha(self) -> float:
        return self.alpha if self.slr else 0.0

    @property
    def uses_batch_keys(self) -> bool:
        """Batch keys join C only when some label can put mass on them."""
        return self.effective_alpha > 0 or self.mm


@dataclass
class MixedQueries:
    """Projections of the virtual queries and how they were mixed."""

    queries: torch.Tensor
    perm: torch.Tensor
    theta: float


def query_logits(
    q: torch.Tensor, keys: torch.Tensor, keys_all: torch.Tensor, queue: torch.Tensor, offset: int,
    with_batch_keys: bool, temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits over C, each query's positive column, and C itself (None when keys are dropped).

    Keys and queue are constants: the key encoder learns only through the EMA.
    """
    q = q.float()
    queue = queue.detach().float()
    rows = torch.arange(q.shape[0], device=q.device)
    if not with_batch_keys:
        positive = (q * keys.detach().float()).sum(1, keepdim=True)
        logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
        return logits, torch.zeros_like(rows), None
    candidates = torch.cat([keys_all.detach().float(), queue])
    return q @ candidates.T / temperature, rows + offset, candidates


def slr_objective(
    q: torch.Tensor, keys: torch.Tensor, keys_all: torch.Tensor, queue: torch.Tensor, offset: int,
    mcfg: SLRConfig, mixed: MixedQueries | None = None,
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
    if mixed is None or candidates is None:
        return LossOutput(loss_slr, scalars)
    mixed_logits = mixed.queries.float() @ candidates.T / mcfg.temperature
    loss_mm = soft_cross_entropy(mixed_logits, mixup_labels(labels, mixed.perm, mixed.theta))
    scalars.update(loss_slr=loss_slr.detach(), loss_mm=loss_mm.detach())
    return LossOutput(loss_slr + mcfg.mm_weight * loss_mm, scalars)


def draw_mixing(batch_size: int, kappa: float, generator: torch.Generator | None, device) -> tuple[float, torch.Tensor]:
    """θ ~ Beta(κ, κ), one per batch as in mixup, and a permutation, both from `generator`.

    torch has no seeded Beta sampler, so a seed drawn from the generator feeds NumPy's.
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())
    theta = float(np.random.default_rng(seed).beta(kappa, kappa))
    perm = torch.randperm(batch_size, generator=generator, device=device)
    return theta, perm


@register_method("slr")
class SLR(MoCoBase):
    config_class = SLRConfig

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        x1, x2 = batch.views
        m: SLRConfig = self.mcfg
        queue = self.queue.clone().detach()
        q = self.query(x1)
        k = self.keys(x2)
        keys_all = self.dist.all_gather(k) if m.uses_batch_keys else k
        mixed = self.mixed_queries(x1, x2, batch.generator) if m.mm else None
        out = slr_objective(q, k, keys_all, queue, self.dist.rank * k.shape[0], m, mixed)
        self.remember_keys(k)
        return out

    def mixed_queries(self, x1: torch.Tensor, x2: torch.Tensor, generator: torch.Generator | None) -> MixedQueries:
        theta, perm = draw_mixing(x1.shape[0], self.mcfg.mm_kappa, generator, x1.device)
        partner = x2 if self.mcfg.mm_partner == "key_crop" else x1
        virtual = theta * x1 + (1 - theta) * partner[perm]
        return MixedQueries(self.query(virtual), perm, theta)
