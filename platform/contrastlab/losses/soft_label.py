"""Soft-label cross-entropy and SLR's refined labels, with momentum-mixup labels.

Zhou et al., "Improving Contrastive Learning by Self-Labeling Refinement and Momentum
Mixup" (SANE), NeurIPS 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32, float32_math


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """mean_i −Σ_c ȳ_ic · log softmax(l_i)_c; the targets are constants (detached).

    With one-hot targets this is `F.cross_entropy(logits, target)`.
    """
    with float32_math(logits.device):
        log_probs = F.log_softmax(f32(logits), dim=1)
        return -(f32(target_probs.detach()).to(log_probs.dtype) * log_probs).sum(1).mean()


@torch.no_grad()
def slr_soft_labels(
    keys: torch.Tensor,
    candidates: torch.Tensor,
    positive_index: torch.Tensor,
    alpha: float,
    temperature_prime: float,
    top_k: int | None = None,
) -> torch.Tensor:
    """SLR refined labels [b, M] (SANE): ȳ_i = (1−α)·onehot(positive_index_i) + α·p_i,

    p_i = softmax(k_i·C / τ') over the candidate set C = `candidates` [M, d] (batch keys
    then queue), estimated from the positive key k_i [d]. With `top_k` = κ, p_i keeps its κ
    largest entries, renormalised to sum 1. Rows sum to 1; α = 0 gives the one-hot label.
    No gradient.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    with float32_math(keys.device):
        k = f32(keys)
        probs = torch.softmax(k @ f32(candidates).to(k.dtype).T / temperature_prime, dim=1)
        if top_k is not None and top_k < probs.shape[1]:
            values, idx = probs.topk(top_k, dim=1)
            probs = torch.zeros_like(probs).scatter_(1, idx, values / values.sum(1, keepdim=True))
        onehot = F.one_hot(positive_index, probs.shape[1]).to(probs.dtype)
        return (1 - alpha) * onehot + alpha * probs


def label_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the rows of a label matrix; 0·log 0 counts as 0."""
    with float32_math(probs.device):
        p = f32(probs)
        return -torch.special.xlogy(p, p).sum(1).mean()


def mixup_labels(labels: torch.Tensor, perm: torch.Tensor, theta: torch.Tensor | float) -> torch.Tensor:
    """Momentum-mixup labels θ·ȳ_i + (1−θ)·ȳ_π(i); θ a scalar or one value per row [b] / [b, 1]."""
    theta = torch.as_tensor(theta, dtype=labels.dtype, device=labels.device)
    if theta.ndim == 1:
        theta = theta[:, None]
    return theta * labels + (1 - theta) * labels[perm]
