"""Synthetic hard negatives: SSCL's per-anchor hard pools (Dong et al., arXiv 2304.02971)
and MoCHi's mixing (Kalantidis et al., "Hard Negative Mixing for Contrastive Learning",
NeurIPS 2020).

Synthetic negatives are constants to the loss in both papers, so everything here runs
without gradient and returns detached tensors; gradient reaches the anchor only through
its similarity to them (see `synthetic_similarities`). All anchors are handled at once by
gathers over index tensors.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from contrastlab.losses.contrastive import f32, float32_math

# The mix modes, once: SSCL's config uses the type, checks and docs the tuple.
MixMode = Literal["pair_mix", "duplicate", "anchor_mix"]
MIX_MODES: tuple[str, ...] = get_args(MixMode)


@torch.no_grad()
def hard_pool(anchor_sims: torch.Tensor, pool_size: int, exclude_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[n, s] LongTensor: column indices of each anchor's `pool_size` most similar candidates.

    `anchor_sims` [n, M] (anchor × candidate similarities); `exclude_mask` [n, M] True marks
    candidates never to pick (the anchor itself, its positive). Each row needs at least
    `pool_size` candidates not excluded. No gradient.
    """
    if not 0 < pool_size <= anchor_sims.shape[1]:
        raise ValueError(f"pool_size {pool_size} must be in [1, {anchor_sims.shape[1]}] (the candidates per anchor)")
    sims = f32(anchor_sims.detach())
    if exclude_mask is not None:
        sims = sims.masked_fill(exclude_mask, float("-inf"))
    return sims.topk(pool_size, dim=1).indices


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device so a CPU generator also drives CUDA runs reproducibly.
    source = device if generator is None else generator.device
    return torch.rand(shape, generator=generator, device=source, dtype=torch.float32).to(device)


def _pool_members(
    candidates: torch.Tensor, pool_indices: torch.Tensor, k: int, generator: torch.Generator | None
) -> torch.Tensor:
    """[n, k, d]: k members drawn uniformly (with replacement) from each anchor's pool."""
    n, s = pool_indices.shape
    slot = (_uniform((n, k), generator, pool_indices.device) * s).long().clamp_max(s - 1)
    return candidates[pool_indices.gather(1, slot)]


@torch.no_grad()
def synthesize_negatives(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    pool_indices: torch.Tensor,
    k: int,
    mode: str = "pair_mix",
    generator: torch.Generator | None = None,
    mix_max: float | None = None,
) -> torch.Tensor:
    """[n, k, d] unit-norm, detached synthetic negatives made from each anchor's hard pool.

    anchors [n, d], candidates [M, d], pool_indices [n, s] rows of `candidates` (e.g. from
    `hard_pool`, mapped through `negative_candidate_index` for the two-view layout).
    pair_mix (SSCL):   h = normalize(α·z_u + (1−α)·z_w), u, w ~ U(H_a), α ~ U(0, 1) per h
    duplicate:         h = z_u, u ~ U(H_a) (α = 1: no new point, only re-weighting)
    anchor_mix (MoCHi type 2): h = normalize(β·z_a + (1−β)·z_u), u ~ U(H_a), β ~ U(0, 0.5)
    k = 0 gives an empty [n, 0, d]. Draws use `generator`, so a seeded generator reproduces them.

    `mix_max` (0 < mix_max <= 0.5) caps the weight of the second point of every mix: pair_mix
    draws h = normalize((1−γ)·z_u + γ·z_w), γ ~ U(0, mix_max), and anchor_mix draws
    β ~ U(0, mix_max). None keeps the laws above (for pair_mix, U(0, 0.5) on the lighter point
    is the same law as α ~ U(0, 1), since u and w are exchangeable); small values keep the
    synthetic points close to real hard negatives. duplicate ignores it.
    """
    if mode not in MIX_MODES:
        raise ValueError(f"mix mode {mode!r}: expected one of {', '.join(MIX_MODES)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if mix_max is not None and not 0 < mix_max <= 0.5:
        raise ValueError(f"mix_max must be in (0, 0.5], got {mix_max}")
    n, d = anchors.shape[0], candidates.shape[1]
    with float32_math(candidates.device):
        candidates = f32(candidates.detach())
        if k == 0:
            return candidates.new_zeros((n, 0, d))
        first = _pool_members(candidates, pool_indices, k, generator)
        if mode == "duplicate":
            return F.normalize(first, dim=2)
        if mode == "anchor_mix":
            high = 0.5 if mix_max is None else mix_max
            beta = high * _uniform((n, k, 1), generator, candidates.device).to(first.dtype)
            anchor = f32(anchors.detach()).to(first.dtype)[:, None, :]
            return F.normalize(beta * anchor + (1 - beta) * first, dim=2)
        second = _pool_members(candidates, pool_indices, k, generator)
        alpha = _uniform((n, k, 1), generator, candidates.device).to(first.dtype)
        if mix_max is not None:
            alpha = 1 - mix_max * alpha  # the weight on the first point; γ = 1 − α ~ U(0, mix_max)
        return F.normalize(alpha * first + (1 - alpha) * second, dim=2)


def synthetic_similarities(anchors: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """[n, k] cosine s(z_a, h_aj) of each anchor with its own synthetic negatives, in float32.

    Gradient flows into the anchors only (the synthetic points are detached).
    """
    with float32_math(anchors.device):
        a = f32(anchors)
        return torch.einsum("nd,nkd->nk", a, f32(synthetic.detach()).to(a.dtype))


@torch.no_grad()
def mochi_negatives(
    q: torch.Tensor,
    queue: torch.Tensor,
    n_hard: int,
    s_type1: int,
    s_type2: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MoCHi (Kalantidis et al. 2020): [b, s1 + s2, d] synthetic negatives per query, detached.

    From the n_hard queue entries most similar to q_i (Q̃_i):
    type 1: normalize(α·n_u + (1−α)·n_w), n_u, n_w ∈ Q̃_i, α ~ U(0, 1)   (s_type1 of them)
    type 2: normalize(β·q_i + (1−β)·n_u), n_u ∈ Q̃_i, β ~ U(0, 0.5)       (s_type2 of them)
    They are appended as extra negatives for that query only.
    """
    with float32_math(q.device):
        sims = f32(q) @ f32(queue).to(f32(q).dtype).T
    pool = hard_pool(sims, min(n_hard, queue.shape[0]))
    type1 = synthesize_negatives(q, queue, pool, s_type1, "pair_mix", generator)
    type2 = synthesize_negatives(q, queue, pool, s_type2, "anchor_mix", generator)
    return torch.cat([type1, type2], dim=1)
