"""NT-Xent (SimCLR) and the shared split of two-view similarities into positives/negatives.

Layout used by every two-view loss in this package:

- anchors: the 2b local views, view-1 anchors first, then view-2 (`cat([z1, z2])`);
- candidates: the 2B global views `cat([z1_all, z2_all])`; the local block starts at row
  `offset` of `z1_all` (and at row `B + offset` of the candidates for view 2);
- anchor i's positive is the other view of its image; its negatives are the other 2B-2
  candidates, in increasing candidate order with the anchor itself and its positive removed.

All loss math runs in float32 with autocast switched off: under bf16 autocast a matmul
would otherwise silently run in bf16 even on float32 inputs. float64 inputs stay float64.
"""

from __future__ import annotations

import torch


def f32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (bf16/fp16) become float32; float32 and float64 are kept."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def float32_math(device: torch.device | str) -> torch.autocast:
    """Context that switches autocast off on `device`, so the loss math runs in float32."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def _globals(
    z1: torch.Tensor, z2: torch.Tensor, z1_all: torch.Tensor | None, z2_all: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if (z1_all is None) != (z2_all is None):
        raise ValueError("pass both z1_all and z2_all, or neither")
    return (z1, z2) if z1_all is None else (z1_all, z2_all)


def anchor_indices(b: int, B: int, offset: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate indices [2b] of each local anchor itself and of its positive."""
    local = torch.arange(b, device=device) + offset
    own = torch.cat([local, local + B])
    positive = torch.cat([local + B, local])
    return own, positive


def negative_candidate_index(b: int, B: int, offset: int, device: torch.device | str) -> torch.Tensor:
    """[2b, 2B-2] LongTensor: the candidate index (into cat([z1_all, z2_all])) of each negative column.

    Row r lists 0..2B-1 without the anchor's own index and its positive's, in increasing order.
    """
    if not 0 <= offset <= B - b:
        raise ValueError(f"local block [{offset}, {offset + b}) does not fit in a global batch of {B}")
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
    """Cosine similarities (inputs L2-normalised) of each local anchor with its positive [2b]
    and with its 2B-2 negatives [2b, 2B-2], in the layout of the module docstring.

    Gradient flows into the local views and into whatever part of z*_all carries it (the
    local slice after `all_gather_with_grad`).
    """
    z1_all, z2_all = _globals(z1, z2, z1_all, z2_all)
    b, B = z1.shape[0], z1_all.shape[0]
    with float32_math(z1.device):
        anchors = f32(torch.cat([z1, z2]))
        candidates = f32(torch.cat([z1_all, z2_all])).to(anchors.dtype)
        sims = anchors @ candidates.T
        _, positive = anchor_indices(b, B, offset, z1.device)
        pos = sims.gather(1, positive[:, None]).squeeze(1)
        neg = sims.gather(1, negative_candidate_index(b, B, offset, z1.device))
    return pos, neg


def info_nce_from_similarities(
    pos: torch.Tensor, neg: torch.Tensor, temperature: float, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i −log( e^{pos_i/τ} / (e^{pos_i/τ} + Σ_j e^{neg_ij/τ}) ); masked negatives dropped.

    Computed as logsumexp(logits) − pos/τ, so no exponential overflows at small τ.
    """
    with float32_math(pos.device):
        pos, neg = f32(pos), f32(neg)
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
    """NT-Xent / InfoNCE of SimCLR (Chen et al., ICML 2020) over the local anchors.

    l_i = −log( pos_i / (pos_i + Σ_{j∈N_i} neg_ij) ),  pos_i = e^{s(z_i, z_i+)/τ},
    neg_ij = e^{s(z_i, z_j)/τ}, N_i the 2B−2 other global views; mean over the 2b local
    anchors. Averaging the per-worker losses with weights b_r/B gives the full-batch loss.
    `negative_mask` [2b, 2B-2] (True = keep) removes negatives, as MCL's
    `mask_other_clusters` sampling does; a removed negative contributes nothing.
    """
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    return info_nce_from_similarities(pos, neg, temperature, negative_mask)
