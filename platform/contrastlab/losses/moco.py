"""MoCo v2's loss and queue update (He et al., CVPR 2020; Chen et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """[b, 1+K]: [q·k+, q·queue] / τ; the positive is column 0."""
    q, k, queue = f32(q), f32(k).detach(), f32(queue).detach()
    positive = (q * k).sum(1, keepdim=True)
    return torch.cat([positive, q @ queue.T], dim=1) / temperature


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of the MoCo logits with target 0 (the key of the same image)."""
    logits = moco_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


@torch.no_grad()
def fifo_enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write `keys` over the oldest entries of the [K, d] queue (wrapping around).

    Returns the new queue and pointer. More keys than K keeps the newest K.
    """
    size = queue.shape[0]
    keys = keys.detach().to(queue.dtype)
    if keys.shape[0] >= size:
        return keys[-size:].clone(), torch.zeros_like(ptr)
    positions = (ptr + torch.arange(keys.shape[0], device=queue.device)) % size
    updated = queue.clone()
    updated[positions] = keys
    return updated, (ptr + keys.shape[0]) % size
