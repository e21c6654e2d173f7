"""Synthetic hard negatives: SSCL's per-anchor hard pools (Dong et al., arXiv 2304.02971)
and MoCHi's mixing (Kalantidis et al., NeurIPS 2020).

Everything here runs without gradient: synthetic negatives are constants to the loss, as
in both papers. All anchors are handled at once by gathers over index tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32

MIX_MODES = ("pair_mix", "duplicate", "anchor_mix")


@torch.no_grad()
def hard_pool(anchor_sims: torch.Tensor, pool_size: int, exclude_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[n, s]: indices of each anchor's `pool_size` most similar candidates (excluded ones never)."""
    sims = f32(anchor_sims.detach())
    if exclude_mask is not None:
        sims = sims.masked_fill(exclude_mask, float("-inf"))
    return sims.topk(pool_size, dim=1).indices


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


@torch.no_grad()
def synthesize_negatives(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    pool_indices: torch.Tensor,
    k: int,
    mode: str = "pair_mix",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[n, k, d] unit-norm, detached synthetic negatives drawn from each anchor's hard pool.

    pair_mix:   h = normalize(α·z_u + (1−α)·z_w), u, w from the pool, α ~ U(0, 1)
    duplicate:  h = z_u (a copy of a pool member)
    anchor_mix: h = normalize(β·z_a + (1−β)·z_u), β ~ U(0, 0.5) (MoCHi's second type)
    """
    if mode not in MIX_MODES:
        raise ValueError(f"mix mode {mode!r}: expected one of {', '.join(MIX_MODES)}")
    n, d = anchors.shape[0], candidates.shape[1]
    device = candidates.device
    if k == 0:
        return f32(candidates.new_zeros((n, 0, d)))
    s = pool_indices.shape[1]
    pick = (_rand((n, k), generator, device) * s).long().clamp_max(s - 1)
    first = f32(candidates[pool_indices.gather(1, pick)])
    if mode == "duplicate":
        return F.normalize(first, dim=2)
    if mode == "anchor_mix":
        beta = (0.5 * _rand((n, k, 1), generator, device)).to(first.dtype)
        return F.normalize(beta * f32(anchors.detach())[:, None, :] + (1 - beta) * first, dim=2)
    pick2 = (_rand((n, k), generator, device) * s).long().clamp_max(s - 1)
    second = f32(candidates[pool_indices.gather(1, pick2)])
    alpha = _rand((n, k, 1), generator, device)
    return F.normalize(alpha * first + (1 - alpha) * second, dim=2)


@torch.no_grad()
def mochi_negatives(
    q: torch.Tensor,
    queue: torch.Tensor,
    n_hard: int,
    s_type1: int,
    s_type2: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MoCHi: [b, s1+s2, d] mixes of each query's n_hard hardest queue negatives (type 1:
    two hard negatives, α ~ U(0,1); type 2: the query and a hard negative, β ~ U(0, 0.5))."""
    pool = hard_pool(f32(q) @ f32(queue).T, min(n_hard, queue.shape[0]))
    type1 = synthesize_negatives(q, queue, pool, s_type1, "pair_mix", generator)
    type2 = synthesize_negatives(q, queue, pool, s_type2, "anchor_mix", generator)
    return torch.cat([type1, type2], dim=1)
