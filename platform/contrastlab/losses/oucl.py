"""MetAug's unified loss (OUCL) and margin-injected regularisation (Li et al., ICML 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32, positive_negative_similarities


def two_view_scores(z1, z2, z1_all=None, z2_all=None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores for OUCL: positives [2b, 1] and negatives [2b, 2B-2] per anchor view."""
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return pos[:, None], neg


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def oucl_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    gamma: float = 16.0,
    pos_mask: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
    circle: bool = False,
    margin: float = 0.25,
) -> torch.Tensor:
    """mean_i log(1 + Σ_p Σ_n exp(γ·(n − p))) over rows of scores (rescaled by the caller).

    Every positive of a row is contrasted with every negative of that row in one term:
    log(1 + e^{LSE_n(γn) + LSE_p(−γp)}) = softplus(LSE_n(γn) + LSE_p(−γp)), which is stable.
    MetAug multiplies the result by 16/γ. With `circle`, the Circle-loss weights
    α_p = [1 + m − p]_+, α_n = [n + m]_+ (detached) and margins Δ_p = 1 − m, Δ_n = m are
    used (Sun et al., CVPR 2020), the released code's option.
    """
    pos, neg = f32(pos_scores), f32(neg_scores)
    if circle:
        alpha_p = (1 + margin - pos).clamp_min(0).detach()
        alpha_n = (neg + margin).clamp_min(0).detach()
        pos_logits = -gamma * alpha_p * (pos - (1 - margin))
        neg_logits = gamma * alpha_n * (neg - margin)
    else:
        pos_logits, neg_logits = -gamma * pos, gamma * neg
    total = torch.logsumexp(_masked(neg_logits, neg_mask), 1) + torch.logsumexp(_masked(pos_logits, pos_mask), 1)
    return F.softplus(total).mean()


def margins(orig_pos: torch.Tensor, orig_neg: torch.Tensor, margin_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(m+, m−) per row from the smallest original positive and the largest original negative."""
    p_min = orig_pos.detach().min(1, keepdim=True).values
    n_max = orig_neg.detach().max(1, keepdim=True).values
    low, high = torch.minimum(p_min, n_max), torch.maximum(p_min, n_max)
    if margin_type == "large":
        return low, high
    if margin_type == "small":
        return high, low
    if margin_type == "mean":
        middle = (p_min + n_max) / 2
        return middle, middle
    raise ValueError(f"margin type {margin_type!r}: expected large, small or mean")


def margin_injected_loss(
    orig_pos: torch.Tensor,
    orig_neg: torch.Tensor,
    aug_pos: torch.Tensor,
    aug_neg: torch.Tensor,
    margin_type: str = "large",
    c: float = 1.0,
) -> torch.Tensor:
    """L_MI = c·mean[p̃ − m+]_+ + mean[m− − ñ]_+ over the augmented scores (margins detached).

    It pushes the generator towards hard features: augmented positives no more similar
    than m+, augmented negatives no less similar than m−.
    """
    m_plus, m_minus = margins(orig_pos, orig_neg, margin_type)
    return c * (f32(aug_pos) - m_plus).clamp_min(0).mean() + (m_minus - f32(aug_neg)).clamp_min(0).mean()
