"""Index batches for pretraining, a function of (seed, epoch) only.

The same seed gives the same data order whatever the method, so ablation variants that
share a seed see identical batches (paired design). The order does not depend on the
number of workers either: each rank takes its slice of the same global batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch); distinct pairs never share a stream the
    way `seed * K + epoch` would."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class RandomBatches:
    """Shuffled index batches; rank r of `world_size` takes its slice of every global batch.

    `epoch(e)` yields LongTensors of `batch_size // world_size` indices (the last, partial
    global batch, kept only with `drop_last=False`, is split as evenly as possible).
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, drop_last: bool = True, rank: int = 0, world_size: int = 1
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if batch_size < 1 or batch_size % world_size:
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
        """The global order of one epoch, identical on every rank."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        order = self.permutation(epoch)
        for index in range(len(self)):
            batch = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield torch.tensor_split(batch, self.world_size)[self.rank]
