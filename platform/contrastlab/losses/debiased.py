"""Debiased (DCL) and hard-negative-weighted (HCL) contrastive losses, and SSCL's loss.

DCL: Chuang et al., NeurIPS 2020. HCL: Robinson et al., ICLR 2021. SSCL: Dong et al.,
arXiv 2304.02971 (synthetic negatives appended to the real ones, then HCL + DCL).

All estimators are computed with similarities shifted by their upper bound 1 (cos <= 1):
exp((s - 1)/τ) instead of exp(s/τ). Every term of the loss scales by the same factor
e^{-1/τ}, so the loss is unchanged while nothing overflows at small τ or large β.
"""

from __future__ import annotations

import math

import torch

from contrastlab.losses.contrastive import f32, positive_negative_similarities


def hardness_weights(
    neg_sim: torch.Tensor, temperature: float, beta: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """HCL weights w_ij = exp(β s_ij/τ) / mean_k exp(β s_ik/τ) over the kept negatives."""
    logits = beta * f32(neg_sim) / temperature
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    count = neg_sim.shape[1] if mask is None else mask.sum(1, keepdim=True).clamp_min(1)
    return torch.softmax(logits, dim=1) * count


def debiased_negative_term(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    tau_plus: float,
    temperature: float,
    weights: torch.Tensor | None = None,
    count: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ng_i = max((Σ_j w_ij·neg_ij − τ+·N·pos_i)/(1 − τ+), N·e^{−1/τ}), shifted by e^{−1/τ}.

    Takes similarities (not exponentials) and returns Ng_i·e^{−1/τ}. `count` is N of the
    debiasing term (default: the number of kept negatives); the clamp uses the number of
    negatives actually summed, its theoretical minimum.
    """
    shift = 1.0 / temperature
    pos_exp = torch.exp(f32(pos_sim) / temperature - shift)
    neg_exp = torch.exp(f32(neg_sim) / temperature - shift)
    kept = torch.full_like(pos_exp, neg_sim.shape[1])
    if mask is not None:
        neg_exp = neg_exp * mask
        kept = mask.sum(1).to(pos_exp.dtype)
    weighted = neg_exp if weights is None else weights * neg_exp
    n_debias = kept if count is None else torch.as_tensor(count, dtype=pos_exp.dtype, device=pos_exp.device)
    estimate = (weighted.sum(1) - tau_plus * n_debias * pos_exp) / (1.0 - tau_plus)
    floor = kept * math.exp(-2.0 * shift)
    return torch.maximum(estimate, floor)


def debiased_loss_from_similarities(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
    count: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_i −log(pos_i / (pos_i + Ng_i)) with HCL weights (β) and DCL debiasing (τ+)."""
    weights = hardness_weights(neg_sim, temperature, beta, mask) if beta != 0 else None
    ng = debiased_negative_term(pos_sim, neg_sim, tau_plus, temperature, weights, count, mask)
    pos_exp = torch.exp(f32(pos_sim) / temperature - 1.0 / temperature)
    return (-torch.log(pos_exp / (pos_exp + ng))).mean()


def dcl_loss(z1, z2, temperature: float, tau_plus: float, z1_all=None, z2_all=None, offset: int = 0,
             negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Debiased contrastive loss (Chuang et al. 2020); τ+ = 0 gives NT-Xent."""
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return debiased_loss_from_similarities(pos, neg, temperature, tau_plus, 0.0, mask=negative_mask)


def hcl_loss(z1, z2, temperature: float, tau_plus: float, beta: float, z1_all=None, z2_all=None,
             offset: int = 0, negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hard-negative contrastive loss (Robinson et al. 2021); β = 0 gives DCL."""
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return debiased_loss_from_similarities(pos, neg, temperature, tau_plus, beta, mask=negative_mask)


def sscl_loss(
    pos_sim: torch.Tensor,
    neg_sim_real: torch.Tensor,
    neg_sim_synth: torch.Tensor,
    temperature: float,
    beta: float,
    tau_plus: float,
    debias_count: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SSCL (Dong et al. 2023): HCL weighting and DCL debiasing over real + synthetic negatives.

    `debias_count` chooses N of the debiasing term: "all" counts the real and synthetic
    negatives, "real_only" only the real ones (synthetic negatives are never positives).
    Returns the loss and statistics for monitoring.
    """
    extended = torch.cat([f32(neg_sim_real), f32(neg_sim_synth)], dim=1)
    count = None if debias_count == "all" else float(neg_sim_real.shape[1])
    weights = hardness_weights(extended, temperature, beta) if beta != 0 else None
    ng = debiased_negative_term(pos_sim, extended, tau_plus, temperature, weights, count)
    pos_exp = torch.exp(f32(pos_sim) / temperature - 1.0 / temperature)
    loss = (-torch.log(pos_exp / (pos_exp + ng))).mean()
    real = neg_sim_real.shape[1]
    if weights is None:
        weights = torch.ones_like(extended)
    # The weights average 1 per anchor; their maximum shows how peaked the hardness
    # weighting is, and the mean weight on the synthetic columns how hard those are.
    stats = {
        "hardness_weight_max": weights.max(1).values.mean(),
        "synthetic_weight_mean": weights[:, real:].mean() if extended.shape[1] > real else extended.new_zeros(()),
        "synthetic_similarity": neg_sim_synth.mean() if neg_sim_synth.numel() else extended.new_zeros(()),
    }
    return loss, {k: v.detach() for k, v in stats.items()}
