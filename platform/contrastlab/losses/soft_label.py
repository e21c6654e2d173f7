"""Soft-label cross-entropy and SLR's refined labels (SANE: Zhou et al., NeurIPS 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_i −Σ_c ȳ_ic · log softmax(l_i)_c."""
    return -(f32(target_probs.detach()) * F.log_softmax(f32(logits), dim=1)).sum(1).mean()


@torch.no_grad()
def slr_soft_labels(
    keys: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    alpha: float,
    temperature_prime: float,
    top_k: int | None = None,
) -> torch.Tensor:
    """Refined labels ȳ_i = (1−α)·onehot(positive_i) + α·p_i, p_i = softmax(k_i·C/τ').

    With `top_k`, p_i keeps only its κ largest entries, renormalised. No gradient.
    """
    logits = f32(keys) @ f32(candidates).T / temperature_prime
    probs = torch.softmax(logits, dim=1)
    if top_k is not None and top_k < probs.shape[1]:
        values, idx = probs.topk(top_k, dim=1)
        probs = torch.zeros_like(probs).scatter_(1, idx, values)
        probs = probs / probs.sum(1, keepdim=True)
    onehot = F.one_hot(positive_index, probs.shape[1]).to(probs.dtype)
    return (1 - alpha) * onehot + alpha * probs


def label_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the rows of a label matrix."""
    p = f32(probs)
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()


def mixup_labels(labels: torch.Tensor, perm: torch.Tensor, theta: torch.Tensor | float) -> torch.Tensor:
    """θ·ȳ_i + (1−θ)·ȳ_π(i), θ a scalar or one value per row."""
    theta = torch.as_tensor(theta, dtype=labels.dtype, device=labels.device)
    if theta.ndim == 1:
        theta = theta[:, None]
    return theta * labels + (1 - theta) * labels[perm]
