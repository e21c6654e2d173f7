"""What the training loop needs from a process group, behind one small interface.

`LocalDistributed` is the single-process case. The Ray Train workers use
`TorchDistributed` (see `contrastlab.distributed.torch_dist`), so methods never call
`torch.distributed` themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LocalDistributed:
    """One process: gathers are identities, reductions do nothing."""

    rank = 0
    local_rank = 0
    world_size = 1

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every worker's tensor along dim 0, keeping the local gradient."""
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every worker's tensor along dim 0, without gradient."""
        return tensor.detach()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Worker `src`'s tensor, on every worker (same shape and dtype everywhere)."""
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """The main worker's object, on every worker."""
        return obj

    def barrier(self) -> None:
        return None

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module that the training step calls (DDP wraps it in distributed runs)."""
        return module

    def all_reduce_gradients(self, parameters) -> None:
        """Average gradients over workers, for steps that do not go through `wrap`."""
        return None


__all__ = ["LocalDistributed"]
