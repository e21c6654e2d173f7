"""MoCo v2's loss and FIFO queue update (He et al., CVPR 2020; Chen et al., arXiv 2003.04297)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32, float32_math


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """[b, 1+K] logits [q_i·k_i, q_i·Q] / τ; the positive is column 0.

    q [b, d] queries (with gradient), k [b, d] keys and queue [K, d] (both detached: they
    come from the momentum encoder), all L2-normalised. Float32 math, also under autocast.
    """
    with float32_math(q.device):
        q = f32(q)
        k, queue = f32(k).detach().to(q.dtype), f32(queue).detach().to(q.dtype)
        positive = (q * k).sum(1, keepdim=True)
        return torch.cat([positive, q @ queue.T], dim=1) / temperature


def moco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoCo v2 InfoNCE: mean_i −log( e^{q_i·k_i/τ} / (e^{q_i·k_i/τ} + Σ_j e^{q_i·Q_j/τ}) ),
    i.e. cross-entropy of `moco_logits` with target 0.

    `negative_mask` [b, K] (True = keep) removes queue negatives from query i's sum, as MCL's
    `mask_other_clusters` sampling does on a queue; a removed negative contributes nothing,
    and with every negative kept (or no mask) the loss is the plain one.
    """
    logits = moco_logits(q, k, queue, temperature)
    with float32_math(logits.device):
        if negative_mask is not None:
            negatives = logits[:, 1:].masked_fill(~negative_mask, float("-inf"))
            logits = torch.cat([logits[:, :1], negatives], dim=1)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)


def mochi_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, synthetic: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCHi (Kalantidis et al., NeurIPS 2020): MoCo v2's InfoNCE with per-query extra negatives.

    Logits [q_i·k_i, q_i·Q, q_i·h_i1 .. q_i·h_is] / τ, cross-entropy with target 0, where
    synthetic [b, s, d] holds query i's own synthetic negatives h_i· (constants: only q
    gets gradient). With s = 0 it is `moco_loss` on the same tensors.
    """
    logits = moco_logits(q, k, queue, temperature)
    if synthetic.shape[1] == 0:
        extra = logits.new_zeros((logits.shape[0], 0))
    else:
        with float32_math(q.device):
            extra = torch.einsum("bd,bsd->bs", f32(q), f32(synthetic.detach()).to(f32(q).dtype)) / temperature
    with float32_math(logits.device):
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(torch.cat([logits, extra.to(logits.dtype)], dim=1), target)


@torch.no_grad()
def fifo_enqueue(
    queue: torch.Tensor, ptr: torch.Tensor | int, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Write `keys` [n, d] over the oldest rows of the [K, d] queue, wrapping around; pure.

    Key j goes to row (ptr + j) mod K; the new pointer is (ptr + n) mod K (same kind as
    `ptr`: tensor or int). With n > K only the newest K keys survive, in the rows where n
    one-by-one enqueues would leave them, so the result never depends on how keys are chunked.
    Returns (new_queue, new_ptr); the input queue is not modified.
    """
    size, n = queue.shape[0], keys.shape[0]
    kept = min(n, size)
    start = torch.as_tensor(ptr, device=queue.device) + (n - kept)
    rows = (start + torch.arange(kept, device=queue.device)) % size
    updated = queue.clone()
    updated[rows] = keys[n - kept :].detach().to(queue.dtype)
    new_ptr = (ptr + n) % size
    return updated, new_ptr
