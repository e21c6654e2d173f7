"""Debiased (DCL) and hard-negative-weighted (HCL) contrastive losses, and SSCL's loss.

DCL: Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020.
HCL: Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021.
SSCL: Dong et al., arXiv 2304.02971 (synthetic hard negatives appended to the real ones,
then HCL weighting and DCL debiasing over the extended set).

Numerics: every exponential is taken after subtracting a per-anchor shift
m_i = max(pos_i, max_j s_ij)/τ (so the largest term is exactly 1), and the loss is
assembled as log(pos_i + Ng_i) − log(pos_i) with log(pos_i) taken from the logit itself.
Scaling pos, neg and the clamp N·e^{−1/τ} by the same e^{−m_i} leaves the loss unchanged,
and nothing overflows or underflows to 0/0 at small τ or large β.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from contrastlab.losses.contrastive import f32, float32_math, positive_negative_similarities

# What N counts in the debiasing term, once: SSCL's config uses the type, checks the tuple.
DebiasCount = Literal["all", "real_only"]
DEBIAS_COUNTS: tuple[str, ...] = get_args(DebiasCount)


def hardness_weights(
    neg_sim: torch.Tensor, temperature: float, beta: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """HCL importance weights [n, N]: w_ij = e^{β s_ij/τ} / mean_k e^{β s_ik/τ} over the kept negatives.

    Rows average to 1 over kept entries; masked entries get weight 0. β = 0 gives exactly 1.
    Computed as N_kept·softmax(β s/τ), which cannot overflow.
    """
    with float32_math(neg_sim.device):
        sims = f32(neg_sim)
        if beta == 0:
            # Exact ones (a softmax of zeros times N is 1 only up to rounding), so β = 0 is DCL bit for bit.
            return torch.ones_like(sims) if mask is None else mask.to(sims.dtype)
        logits = beta * sims / temperature
        if mask is None:
            return torch.softmax(logits, dim=1) * sims.shape[1]
        logits = logits.masked_fill(~mask, float("-inf"))
        kept = mask.sum(1, keepdim=True).to(sims.dtype)
        # A row with no kept negative would be a softmax of -inf only (NaN); its weights are 0.
        return torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0) * kept


def debiased_negative_term(
    pos_exp: torch.Tensor,
    neg_exp: torch.Tensor,
    tau_plus: float,
    temperature: float,
    weights: torch.Tensor | None = None,
    count: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
    log_shift: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """DCL/HCL estimate of the negative mass [n] (Chuang et al. 2020; Robinson et al. 2021):

        Ng_i = max( (Σ_j w_ij·neg_ij − τ+·N·pos_i) / (1 − τ+),  N_sum·e^{−1/τ} )

    pos_exp [n] = e^{pos/τ}, neg_exp [n, N] = e^{s/τ}; `weights` default 1 (DCL). N of the
    debiasing term is `count` when given (SSCL's `debias_count`), else the number of kept
    negatives. The clamp is the smallest value the summed negatives can take (each
    e^{s/τ} ≥ e^{−1/τ} since s ≥ −1), so its count N_sum is always the number of kept
    (summed) negatives. When the inputs are pre-scaled as e^{s/τ − log_shift} the clamp is
    scaled the same way and the result is Ng_i·e^{−log_shift}.
    """
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    with float32_math(pos_exp.device):
        pos_exp, neg_exp = f32(pos_exp), f32(neg_exp)
        terms = neg_exp if weights is None else f32(weights) * neg_exp
        if mask is None:
            kept = torch.full_like(pos_exp, neg_exp.shape[1])
        else:
            terms = terms.masked_fill(~mask, 0.0)
            kept = mask.sum(1).to(pos_exp.dtype)
        n_debias = kept if count is None else torch.as_tensor(count, dtype=pos_exp.dtype, device=pos_exp.device)
        estimate = (terms.sum(1) - tau_plus * n_debias * pos_exp) / (1.0 - tau_plus)
        floor = kept * torch.exp(
            -1.0 / temperature - torch.as_tensor(log_shift, dtype=pos_exp.dtype, device=pos_exp.device)
        )
        return torch.maximum(estimate, floor)


def _per_anchor_debiased(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    temperature: float,
    tau_plus: float,
    beta: float,
    count: torch.Tensor | float | None,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(l_i [n], weights [n, N]) for the shifted estimator described in the module docstring."""
    pos_logit, neg_logit = f32(pos_sim) / temperature, f32(neg_sim) / temperature
    visible = neg_logit if mask is None else neg_logit.masked_fill(~mask, float("-inf"))
    # The loss does not depend on the shift, so it is a constant to autograd.
    shift = torch.maximum(pos_logit, visible.max(1).values if visible.shape[1] else pos_logit).detach()
    weights = hardness_weights(neg_sim, temperature, beta, mask)
    pos_exp = torch.exp(pos_logit - shift)
    neg_exp = torch.exp(visible - shift[:, None])
    ng = debiased_negative_term(pos_exp, neg_exp, tau_plus, temperature, weights, count, mask, shift)
    return torch.log(pos_exp + ng) - (pos_logit - shift), weights


def debiased_loss_from_similarities(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
    count: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_i −log( pos_i / (pos_i + Ng_i) ) from similarities pos [n], neg [n, N], with HCL
    weights of concentration β and DCL debiasing with class prior τ+ (see `debiased_negative_term`).
    """
    with float32_math(pos_sim.device):
        return _per_anchor_debiased(pos_sim, neg_sim, temperature, tau_plus, beta, count, mask)[0].mean()


def dcl_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    tau_plus: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Debiased contrastive loss (Chuang et al., NeurIPS 2020) over the local anchors.

    l_i = −log( pos_i / (pos_i + Ng_i) ),
    Ng_i = max( (Σ_j neg_ij − τ+·N·pos_i) / (1 − τ+), N·e^{−1/τ} ),  N = 2B−2 (or the kept count).
    τ+ = 0 gives NT-Xent. Layout and distributed arguments as in `nt_xent`.
    """
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return debiased_loss_from_similarities(pos, neg, temperature, tau_plus, 0.0, mask=negative_mask)


def hcl_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    tau_plus: float,
    beta: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hard-negative contrastive loss (Robinson et al., ICLR 2021) over the local anchors.

    w_ij = e^{β s_ij/τ} / mean_k e^{β s_ik/τ},
    Ng_i = max( (Σ_j w_ij·neg_ij − τ+·N·pos_i) / (1 − τ+), N·e^{−1/τ} ),
    l_i = −log( pos_i / (pos_i + Ng_i) ). β = 0 gives DCL; β = 0 and τ+ = 0 give NT-Xent.
    """
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
    negative_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SSCL (Dong et al., arXiv 2304.02971): HCL + DCL over real and synthetic negatives.

    Extended negatives s_a = [real (N_r) ; synthetic (k)] per anchor a;
    w = e^{β s/τ} / mean e^{β s/τ} over the extended set,
    Ng_a = max( (Σ w·e^{s/τ} − τ+·N·pos_a) / (1 − τ+), (N_r + k)·e^{−1/τ} ),
    l_a = −log( pos_a / (pos_a + Ng_a) ), mean over anchors.
    `debias_count` picks N: "all" = N_r + k, "real_only" = N_r (a synthetic negative is
    never a false negative). `negative_mask` [n, N_r] drops real negatives.
    k = 0 gives `hcl_loss`; k = 0, β = 0 gives `dcl_loss`; and with τ+ = 0 NT-Xent.

    Returns (loss, stats), stats detached scalars: `mean_hardness_weight` (mean weight on
    the synthetic columns; > 1 means they are harder than the average negative),
    `hardness_weight_max` (mean over anchors of the largest weight), `synthetic_similarity`
    (mean anchor·synthetic cosine), and `synthetic_weight_mean` (alias of
    `mean_hardness_weight`, kept for existing callers). Synthetic stats are 0 when k = 0.
    """
    if debias_count not in DEBIAS_COUNTS:
        raise ValueError(f"debias_count {debias_count!r}: expected one of {', '.join(DEBIAS_COUNTS)}")
    with float32_math(pos_sim.device):
        real, k = neg_sim_real.shape[1], neg_sim_synth.shape[1]
        extended = torch.cat([f32(neg_sim_real), f32(neg_sim_synth).to(f32(neg_sim_real).dtype)], dim=1)
        mask = None
        if negative_mask is not None:
            mask = torch.cat([negative_mask, negative_mask.new_ones((negative_mask.shape[0], k))], dim=1)
        if debias_count == "all":
            count = None
        elif mask is None:
            count = float(real)
        else:
            count = negative_mask.sum(1).to(extended.dtype)
        per_anchor, weights = _per_anchor_debiased(pos_sim, extended, temperature, tau_plus, beta, count, mask)
        zero = extended.new_zeros(())
        synthetic_weight = weights[:, real:].mean() if k else zero
        stats = {
            "mean_hardness_weight": synthetic_weight,
            "synthetic_weight_mean": synthetic_weight,
            "hardness_weight_max": weights.max(1).values.mean() if weights.shape[1] else zero,
            "synthetic_similarity": f32(neg_sim_synth).mean() if k else zero,
        }
        return per_anchor.mean(), {name: value.detach() for name, value in stats.items()}
