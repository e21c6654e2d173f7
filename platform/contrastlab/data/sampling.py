"""Index batches for pretraining, a function of (seed, epoch) only.

The same seed gives the same data order whatever the method, so ablation variants that
share a seed see identical batches (paired design).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class RandomBatches:
    """Shuffled index batches; rank r of `world_size` takes its slice of every global batch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} workers")
        if num_samples < batch_size:
            raise ValueError(
                f"the training set has {num_samples} images, fewer than one batch of {batch_size}: "
                "lower optim.batch_size or use more data (data.subset)"
            )
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.local_batch = batch_size // world_size

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        order = self.permutation(epoch)
        for index in range(len(self)):
            batch = order[index * self.batch_size : (index + 1) * self.batch_size]
            share = (batch.shape[0] + self.world_size - 1) // self.world_size
            yield batch[self.rank * share : (self.rank + 1) * share]
