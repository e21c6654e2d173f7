"""What a method may use from the run around it, as typed protocols.

The engine provides these objects (`LocalDistributed` / `TorchDistributed`, and the
engine's epoch context); the methods only see the protocols, so they never import the
engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import nn


class Distributed(Protocol):
    """The process group of a run: one worker (`LocalDistributed`) or many (`TorchDistributed`)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...

    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor: ...

    def broadcast_object(self, obj: Any) -> Any: ...

    def barrier(self) -> None: ...

    def wrap(self, module: nn.Module) -> nn.Module: ...

    def all_reduce_gradients(self, parameters: Iterable[nn.Parameter]) -> None: ...


class BatchSampler(Protocol):
    """Index batches of one epoch, the same on every resume of that epoch."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]: ...


class ScalarWriter(Protocol):
    """The run's TensorBoard writer (a no-op on non-main workers)."""

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None: ...

    def text(self, tag: str, body: str, step: int = 0) -> None: ...


class EpochContext(Protocol):
    """What a method's epoch hooks may use from the engine: sampling, embedding, logging."""

    dist: Distributed
    device: torch.device
    writer: ScalarWriter

    @property
    def train_images(self) -> torch.Tensor: ...

    def random_batches(self) -> BatchSampler: ...

    def embed_train_set(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor: ...

    def log(self, message: str) -> None: ...


__all__ = ["BatchSampler", "Distributed", "EpochContext", "ScalarWriter"]
