"""NT-Xent (SimCLR) and the shared split of two-view similarities into positives/negatives.

Anchors are the 2b local views (view-1 anchors first, then view-2); candidates are the 2B
global views `cat([z1_all, z2_all])`. An anchor's positive is the other view of its image;
its negatives are the other 2B-2 candidates, in candidate order with itself and its
positive removed. All math runs in float32, also under bf16 autocast.
"""

from __future__ import annotations

import torch


def f32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs (bf16 autocast) are computed in float32; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _globals(z1, z2, z1_all, z2_all):
    return (z1 if z1_all is None else z1_all), (z2 if z2_all is None else z2_all)


def anchor_indices(b: int, B: int, offset: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate index of each local anchor itself and of its positive."""
    local = torch.arange(b, device=device) + offset
    own = torch.cat([local, local + B])
    positive = torch.cat([local + B, local])
    return own, positive


def negative_candidate_index(b: int, B: int, offset: int, device) -> torch.Tensor:
    """[2b, 2B-2]: the candidate index (into cat([z1_all, z2_all])) of each negative column."""
    own, positive = anchor_indices(b, B, offset, device)
    columns = torch.arange(2 * B, device=device).expand(2 * b, 2 * B)
    keep = (columns != own[:, None]) & (columns != positive[:, None])
    return columns[keep].view(2 * b, 2 * B - 2)


def positive_negative_similarities(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of each local anchor with its positive [2b] and negatives [2b, 2B-2]."""
    z1_all, z2_all = _globals(z1, z2, z1_all, z2_all)
    b, B = z1.shape[0], z1_all.shape[0]
    anchors = f32(torch.cat([z1, z2]))
    candidates = f32(torch.cat([z1_all, z2_all]))
    sims = anchors @ candidates.T
    _, positive = anchor_indices(b, B, offset, z1.device)
    pos = sims.gather(1, positive[:, None]).squeeze(1)
    neg = sims.gather(1, negative_candidate_index(b, B, offset, z1.device))
    return pos, neg


def info_nce_from_similarities(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i -log( e^{pos_i/τ} / (e^{pos_i/τ} + Σ_j e^{neg_ij/τ}) ), masked negatives dropped."""
    neg_logits = neg / temperature
    if negative_mask is not None:
        neg_logits = neg_logits.masked_fill(~negative_mask, float("-inf"))
    logits = torch.cat([(pos / temperature)[:, None], neg_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos / temperature).mean()


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent (Chen et al., ICML 2020) over the local anchors against the global batch.

    l_i = -log( pos_i / (pos_i + Σ_j neg_ij) ), pos/neg = exp(cos/τ), averaged over the 2b
    local anchors. `negative_mask` [2b, 2B-2] (True = keep) removes negatives, as MCL's
    `mask_other_clusters` sampling does.
    """
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return info_nce_from_similarities(pos, neg, temperature, negative_mask)
