"""SSCL (Dong et al., arXiv 2304.02971): contrastive learning with synthetic hard negatives.

Per anchor a and step:
1. hard pool H_a: the `hard_pool_size` real negatives most similar to a (no gradient);
2. `synthetic_count` synthetic negatives mixed from H_a (`mix_mode`), unit-norm, detached;
3. extended negatives = the real ones plus the synthetic ones;
4. HCL hardness weights with concentration β over the extended set;
5. DCL debiasing with class prior τ+ (N counts all or only the real negatives);
6. l_a = −log(pos_a / (pos_a + Ng_a)).

Base `simclr`: the 2B−2 other views of the global batch are the real negatives and the hard
pool. Base `moco`: the MoCo v2 queue is both, the queries of view 1 are the anchors and the
EMA keys of view 2 their positives. With synthesis, hard sampling and debiasing off, the
loss is NT-Xent (simclr) or MoCo v2's InfoNCE (moco) on the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from contrastlab.losses import (
    DEBIAS_COUNTS,
    MIX_MODES,
    hard_pool,
    negative_candidate_index,
    positive_negative_similarities,
    sscl_loss,
    synthesize_negatives,
    synthetic_similarities,
)
from contrastlab.losses.debiased import DebiasCount
from contrastlab.losses.synthetic import MixMode
from contrastlab.methods.base import Component, DataInfo, LossOutput, TrainBatch, TwoViewMethod
from contrastlab.methods.contract import Distributed
from contrastlab.methods.moco import MoCoKeyConfig, MomentumKeys
from contrastlab.methods.registry import register_method

PAPER = "Dong et al., arXiv 2304.02971"


class SSCLConfig(MoCoKeyConfig):
    """SSCL's switches; shuffle_bn and shuffle_bn_groups apply to base moco only."""

    name: Literal["sscl"] = "sscl"
    base: Literal["simclr", "moco"] = Field(
        "simclr",
        description=(
            "negative source: the global batch (simclr, the paper's main setting) or the MoCo v2 queue, "
            f"which is then also the hard pool ({PAPER})"
        ),
    )
    temperature: float = Field(0.5, gt=0, description=f"τ of the contrastive logits (paper default 0.5; {PAPER})")
    synthesis: bool = Field(True, description=f"append synthetic hard negatives; off is k = 0, leaving HCL ({PAPER})")
    synthetic_count: int = Field(
        32, ge=0, description=f"k, synthetic negatives per anchor and step (paper default 32; {PAPER})"
    )
    hard_pool_size: int = Field(
        64,
        ge=1,
        description=f"s, size of each anchor's pool of hardest real negatives to mix from; s <= 2B-2 ({PAPER})",
    )
    mix_mode: MixMode = Field(
        "pair_mix",
        description=(
            "how a synthetic negative is made from the pool: normalize(α·z_u + (1−α)·z_w), α ~ U(0,1) (pair_mix, "
            "the paper); a copy z_u (duplicate); normalize(β·z_a + (1−β)·z_u), β ~ U(0,0.5) (anchor_mix, "
            f"MoCHi's second type) ({PAPER}; Kalantidis et al., NeurIPS 2020)"
        ),
    )
    mix_max: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description=(
            "cap on the weight of a mix's second point, drawn from U(0, mix_max): the pool member w in pair_mix, "
            "the anchor in anchor_mix; None is the published law (pair_mix α ~ U(0,1), anchor_mix β ~ U(0,0.5)); "
            "duplicate ignores it"
        ),
    )
    hard_sampling: bool = Field(
        True, description=f"HCL hardness weights over the extended negatives; off is β = 0, leaving DCL ({PAPER})"
    )
    beta: float = Field(
        1.0, ge=0, description=f"concentration β of the hardness weights exp(β·s/τ) (paper default 1; {PAPER})"
    )
    debias: bool = Field(
        True, description=f"DCL debiased negative estimator; off is τ+ = 0 ({PAPER}; Chuang et al., NeurIPS 2020)"
    )
    tau_plus: float = Field(
        0.1,
        ge=0,
        lt=1,
        description=f"class prior τ+ of the debiasing term, keep below 1/#classes (paper default 0.1; {PAPER})",
    )
    debias_count: DebiasCount = Field(
        "all",
        description=(
            "N in the debiasing term τ+·N·pos: real and synthetic negatives (all, as the released code) or "
            f"only the real ones, since a synthetic negative is never a false negative (real_only) ({PAPER})"
        ),
    )
    queue_size: int = Field(
        4096, ge=1, description="base moco only: K past keys kept as negatives (He et al., CVPR 2020)"
    )
    momentum: float = Field(
        0.99, ge=0, le=1, description="base moco only: EMA coefficient m of the key encoder (He et al., CVPR 2020)"
    )
    projector_bn: bool | None = Field(
        None,
        description=(
            f"BatchNorm in the projection head; None: model.projector_bn, else none as in the paper ({PAPER})"
        ),
    )

    components: ClassVar[tuple[Component, ...]] = (
        Component("synthesis", "synthesis", False, "synthetic hard negatives; off (k = 0) → HCL"),
        Component("mix_mode", "mix_mode", None, " | ".join(MIX_MODES)),
        Component("hard_sampling", "hard_sampling", False, "hardness weights; off (β = 0) → DCL, extended set"),
        Component("debias", "debias", False, "debiased estimator; off (τ+ = 0)"),
        Component("debias_count", "debias_count", None, " | ".join(DEBIAS_COUNTS)),
    )

    @property
    def effective_synthetic_count(self) -> int:
        return self.synthetic_count if self.synthesis else 0

    @property
    def effective_beta(self) -> float:
        return self.beta if self.hard_sampling else 0.0

    @property
    def effective_tau_plus(self) -> float:
        return self.tau_plus if self.debias else 0.0

    @model_validator(mode="after")
    def _pool_fits_queue(self) -> SSCLConfig:
        if self.base == "moco" and self.effective_synthetic_count and self.hard_pool_size > self.queue_size:
            raise ValueError(f"hard_pool_size ({self.hard_pool_size}) <= queue_size ({self.queue_size})")
        return self


def check_pool_size(mcfg: SSCLConfig, global_batch: int) -> None:
    """The pool comes from the 2B−2 real negatives; the batch size lives in `optim`."""
    real = 2 * global_batch - 2
    if mcfg.base == "simclr" and mcfg.effective_synthetic_count and mcfg.hard_pool_size > real:
        raise ValueError(
            f"method.hard_pool_size ({mcfg.hard_pool_size}) must be <= 2·optim.batch_size − 2 = {real}, "
            "the number of real negatives each anchor has"
        )


def synthetic_points(
    anchors: torch.Tensor,
    neg_sim: torch.Tensor,
    candidates: torch.Tensor,
    candidate_index: torch.Tensor | None,
    mcfg: SSCLConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """[n, k, d] synthetic negatives from each anchor's hard pool (constants to the loss).

    `candidate_index[a, j]` is the row of `candidates` behind column j of `neg_sim`;
    None when the columns are the candidate rows themselves (the queue).
    """
    pool = hard_pool(neg_sim, mcfg.hard_pool_size)
    rows = pool if candidate_index is None else candidate_index.gather(1, pool)
    return synthesize_negatives(
        anchors.detach(),
        candidates.detach(),
        rows,
        mcfg.effective_synthetic_count,
        mcfg.mix_mode,
        generator,
        mcfg.mix_max,
    )


def sscl_objective(
    anchors: torch.Tensor,
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    candidates: torch.Tensor,
    candidate_index: torch.Tensor | None,
    mcfg: SSCLConfig,
    generator: torch.Generator | None,
) -> LossOutput:
    """SSCL's loss for anchors [n, d] with positive similarities [n] and real negatives [n, N]."""
    k = mcfg.effective_synthetic_count
    if k:
        points = synthetic_points(anchors, neg_sim, candidates, candidate_index, mcfg, generator)
        # Gradient reaches the anchor only: a synthetic negative is a fixed point in the paper.
        synth_sim = synthetic_similarities(anchors, points)
    else:
        synth_sim = neg_sim.new_zeros((neg_sim.shape[0], 0))
    beta = mcfg.effective_beta
    loss, stats = sscl_loss(
        pos_sim, neg_sim, synth_sim, mcfg.temperature, beta, mcfg.effective_tau_plus, mcfg.debias_count
    )
    scalars: dict[str, torch.Tensor] = {}
    if k:
        # Weights average 1 per anchor over the extended set: above 1, the synthetic
        # negatives are harder than the average real one.
        scalars["mean_hardness_weight"] = stats["synthetic_weight_mean"]
        scalars["synthetic_similarity"] = stats["synthetic_similarity"]
    if beta:
        scalars["max_hardness_weight"] = stats["hardness_weight_max"]
    return LossOutput(loss, scalars)


@dataclass
class Contrasts:
    """One step's anchors [n, d], their positive similarities [n] and real negatives [n, N],
    and where the negatives come from (see `synthetic_points`)."""

    anchors: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    candidates: torch.Tensor
    candidate_index: torch.Tensor | None


class BatchNegatives:
    """Base simclr: every local view is an anchor, the other view of its image the positive,
    and the 2B−2 other views of the global batch its real negatives and hard pool."""

    def __init__(self, host: TwoViewMethod):
        self.host = host

    def contrasts(self, batch: TrainBatch) -> Contrasts:
        host = self.host
        z1, z2 = host.project(batch.views)
        z1_all, z2_all, offset = host.gather(z1, z2)
        pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
        index = None
        if host.mcfg.effective_synthetic_count:
            index = negative_candidate_index(z1.shape[0], z1_all.shape[0], offset, z1.device)
        return Contrasts(torch.cat([z1, z2]), pos, neg, torch.cat([z1_all, z2_all]), index)

    def after_optimizer_step(self) -> None:
        return None


class QueueNegatives:
    """Base moco: the queries of view 1 are the anchors, the EMA keys of view 2 their
    positives, and MoCo v2's queue (`MomentumKeys`) the real negatives and hard pool."""

    def __init__(self, host: TwoViewMethod):
        self.keys = MomentumKeys(host)

    def contrasts(self, batch: TrainBatch) -> Contrasts:
        x1, x2 = batch.views
        queue = self.keys.host.queue.clone().detach()
        q = self.keys.query(x1)
        k = self.keys.keys(x2, batch.generator)
        self.keys.remember(k)  # enqueued after the optimiser step
        return Contrasts(q, (q * k).sum(1), q @ queue.T, queue, None)

    def after_optimizer_step(self) -> None:
        self.keys.after_optimizer_step()


@register_method("sscl")
class SSCL(TwoViewMethod):
    """SSCL on a source of real negatives, chosen by `base`: `BatchNegatives` (simclr) or
    `QueueNegatives` (moco, whose key encoder and queue then belong to this method)."""

    config_class = SSCLConfig
    published_projector_bn = False

    def __init__(self, cfg, info: DataInfo, dist: Distributed):
        mcfg: SSCLConfig = cfg.method
        check_pool_size(mcfg, cfg.optim.batch_size)
        super().__init__(cfg, info, dist, mcfg.projector_bn)
        self.negatives = QueueNegatives(self) if mcfg.base == "moco" else BatchNegatives(self)

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        c = self.negatives.contrasts(batch)
        return sscl_objective(c.anchors, c.pos, c.neg, c.candidates, c.candidate_index, self.mcfg, batch.generator)

    def after_optimizer_step(self) -> None:
        self.negatives.after_optimizer_step()
