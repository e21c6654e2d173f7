"""MetAug's unified loss (OUCL) and margin-injected regularisation.

Li et al., "MetAug: Contrastive Learning via Meta Feature Augmentation", ICML 2022.
Scores are cosine similarities rescaled by the caller to (s + 1)/2 ∈ [0, 1].
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32, float32_math, positive_negative_similarities

# The choices by name, once: MetAug's config fields use the types, checks and docs the tuples.
MarginType = Literal["large", "small", "mean"]
CircleMode = Literal["off", "full", "delta_only"]
MarginGrad = Literal["keep", "detach"]
MARGIN_TYPES: tuple[str, ...] = get_args(MarginType)
CIRCLE_MODES: tuple[str, ...] = get_args(CircleMode)
MARGIN_GRADS: tuple[str, ...] = get_args(MarginGrad)


def circle_mode(circle: bool | str) -> str:
    """The Circle form by name; True and False are the full form and none."""
    mode = {True: "full", False: "off"}.get(circle, circle) if isinstance(circle, bool) else circle
    if mode not in CIRCLE_MODES:
        raise ValueError(f"circle {circle!r}: expected one of {', '.join(CIRCLE_MODES)}")
    return mode


def _oucl_logits(
    pos: torch.Tensor, neg: torch.Tensor, gamma: float, mode: str, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative logits of the three forms (see `oucl_loss`)."""
    if mode == "off":
        return -gamma * pos, gamma * neg
    if mode == "delta_only":
        return -gamma * (pos - (1 - margin)), gamma * (neg - margin)
    alpha_p = (1 + margin - pos).clamp_min(0).detach()
    alpha_n = (neg + margin).clamp_min(0).detach()
    return -gamma * alpha_p * (pos - (1 - margin)), gamma * alpha_n * (neg - margin)


def two_view_scores(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores for OUCL: positives [2b, 1] and negatives [2b, 2B-2] per local anchor view,
    in the layout of `positive_negative_similarities` (not yet rescaled to (s+1)/2)."""
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return pos[:, None], neg


def _logsumexp_kept(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Row-wise logsumexp over kept entries; −inf (and zero gradient) for a row with none kept."""
    if mask is None:
        return torch.logsumexp(logits, dim=1)
    # Filling with a finite very negative value instead of -inf keeps the gradient finite
    # for all-masked rows; the -inf is then put back so such rows contribute exactly 0.
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.logsumexp(filled, dim=1).masked_fill(~mask.any(1), float("-inf"))


def oucl_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    gamma: float = 16.0,
    pos_mask: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
    circle: bool | str = False,
    margin: float = 0.25,
    scaled: bool = False,
) -> torch.Tensor:
    """OUCL (MetAug): mean_i log(1 + Σ_p Σ_n exp(γ·(n − p))) over the rows i.

    pos_scores [n, P] and neg_scores [n, Q] are the (rescaled) scores of row i's positives
    and negatives; every positive is contrasted with every negative in one term. Computed
    stably as softplus(LSE_n(γ·n) + LSE_p(−γ·p)), since Σ_p Σ_n e^{γn}e^{−γp} factorises.
    Masks (True = keep) drop entries; a row with no kept positive or negative gives 0.
    `scaled` multiplies by 16/γ, MetAug's normalisation that keeps the magnitude
    comparable across γ (default off: the MetAug method applies 16/γ itself).
    `circle` ("full" or True) switches to Circle-loss weighting (Sun et al., CVPR 2020):
    logits γ·α_n·(n − Δ_n) and −γ·α_p·(p − Δ_p) with α_p = [1 + m − p]_+, α_n = [n + m]_+
    (detached) and Δ_p = 1 − m, Δ_n = m, m = `margin`. "delta_only" keeps the margins Δ
    with α_p = α_n = 1, what MetAug's released switch computes (its α branch overwrites
    the weights with ones); that only shifts every term by γ·(1 − 2m).
    """
    mode = circle_mode(circle)
    with float32_math(pos_scores.device):
        pos, neg = f32(pos_scores), f32(neg_scores).to(f32(pos_scores).dtype)
        pos_logits, neg_logits = _oucl_logits(pos, neg, gamma, mode, margin)
        total = _logsumexp_kept(neg_logits, neg_mask) + _logsumexp_kept(pos_logits, pos_mask)
        loss = F.softplus(total).mean()
        return loss * (16.0 / gamma) if scaled else loss


def margins(
    orig_pos: torch.Tensor, orig_neg: torch.Tensor, margin_type: str, margin_grad: str = "detach"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(m+, m−) [n, 1] per row from p_min (smallest original positive) and n_max (largest
    original negative): large = (min, max), small = (max, min), mean = both the midpoint.
    `margin_grad` "detach" makes them constants; "keep" leaves them in the graph, as
    MetAug's released code does (the meta-gradient then also flows through them)."""
    if margin_type not in MARGIN_TYPES:
        raise ValueError(f"margin type {margin_type!r}: expected one of {', '.join(MARGIN_TYPES)}")
    if margin_grad not in MARGIN_GRADS:
        raise ValueError(f"margin_grad {margin_grad!r}: expected one of {', '.join(MARGIN_GRADS)}")
    if margin_grad == "detach":
        orig_pos, orig_neg = orig_pos.detach(), orig_neg.detach()
    p_min = f32(orig_pos).min(1, keepdim=True).values
    n_max = f32(orig_neg).max(1, keepdim=True).values.to(p_min.dtype)
    low, high = torch.minimum(p_min, n_max), torch.maximum(p_min, n_max)
    if margin_type == "large":
        return low, high
    if margin_type == "small":
        return high, low
    middle = (p_min + n_max) / 2
    return middle, middle


def margin_injected_loss(
    orig_pos: torch.Tensor,
    orig_neg: torch.Tensor,
    aug_pos: torch.Tensor,
    aug_neg: torch.Tensor,
    margin_type: str = "large",
    c: float = 1.0,
    margin_grad: str = "detach",
) -> torch.Tensor:
    """MetAug's margin-injected regularisation:

        L_MI = c·mean[p̃ − m+]_+ + mean[m− − ñ]_+

    over all augmented positive scores p̃ [n, P'] and negative scores ñ [n, Q'], with
    per-row margins (m+, m−) from the original scores (see `margins`; `margin_grad`). It pushes
    the generator towards hard features: augmented positives no more similar than m+,
    augmented negatives no less similar than m−.
    """
    with float32_math(aug_pos.device):
        m_plus, m_minus = margins(orig_pos, orig_neg, margin_type, margin_grad)
        positive_term = (f32(aug_pos) - m_plus).clamp_min(0).mean()
        negative_term = (m_minus - f32(aug_neg)).clamp_min(0).mean()
        return c * positive_term + negative_term
