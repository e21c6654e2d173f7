"""Shuffle-BN for MoCo's key encoder (He et al., CVPR 2020, section 3.3).

In train mode a BatchNorm layer normalises each sample with statistics of the samples
it is batched with. If a query and its positive key are normalised over the same
images, the statistics leak which key belongs to which query, and the model can lower
the loss without learning a good representation. MoCo breaks that link by computing the
keys of a *shuffled* batch, so the key of image i is normalised together with other
images than the query of image i:

- several workers (`shuffled_across_workers`): gather the key images of every worker,
  apply one permutation shared by all workers, let each worker encode its slice of the
  shuffled batch (per-worker BN), gather the keys and undo the permutation;
- one worker (`split_batch_keys`): permute the key batch and encode it in `groups`
  chunks, each with its own BN statistics, then undo the permutation. This is the
  usual single-GPU equivalent (MoCo's CIFAR demo uses 8 groups).

Both functions return the keys of the local images, in their original order.
"""

from __future__ import annotations

from typing import Callable

import torch

Encode = Callable[[torch.Tensor], torch.Tensor]


def draw_permutation(size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A random permutation of `size`, drawn on the generator's device so a CPU generator
    also drives CUDA runs reproducibly."""
    source = device if generator is None else generator.device
    return torch.randperm(size, generator=generator, device=source).to(device)


def unshuffle(shuffled: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Rows back in the original order: row perm[j] of the result is row j of `shuffled`."""
    restored = torch.empty_like(shuffled)
    restored[perm] = shuffled
    return restored


def group_count(rows: int, groups: int) -> int:
    """Groups actually used: at most `groups`, and at least two rows per group, since BN
    with one row per group has no statistics to speak of."""
    return max(1, min(groups, rows // 2))


@torch.no_grad()
def split_batch_keys(
    encode: Encode, images: torch.Tensor, groups: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Keys of `images` [b, ...] with BN statistics from random groups of the batch (one worker)."""
    perm = draw_permutation(images.shape[0], generator, images.device)
    chunks = images[perm].tensor_split(group_count(images.shape[0], groups))
    return unshuffle(torch.cat([encode(chunk) for chunk in chunks]), perm)


@torch.no_grad()
def shuffled_across_workers(
    encode: Encode, images: torch.Tensor, dist, generator: torch.Generator | None
) -> torch.Tensor:
    """Keys of this worker's `images` [b, ...], encoded as part of a slice of the globally
    shuffled batch. The permutation is rank 0's draw, broadcast, so all workers agree on it;
    every worker must hold the same number of rows."""
    rows = images.shape[0]
    everything = dist.all_gather(images)
    perm = dist.broadcast(draw_permutation(everything.shape[0], generator, images.device), src=0)
    mine = slice(dist.rank * rows, (dist.rank + 1) * rows)
    keys_shuffled = dist.all_gather(encode(everything[perm][mine]))
    return unshuffle(keys_shuffled, perm)[mine]


def shuffled_keys(
    encode: Encode, images: torch.Tensor, dist, groups: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Shuffle-BN keys: across workers when there are several, split-batch BN on one."""
    if dist.world_size > 1:
        return shuffled_across_workers(encode, images, dist, generator)
    return split_batch_keys(encode, images, groups, generator)


__all__ = [
    "draw_permutation",
    "group_count",
    "shuffled_across_workers",
    "shuffled_keys",
    "split_batch_keys",
    "unshuffle",
]
