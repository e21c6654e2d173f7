"""`TorchDistributed`: the `LocalDistributed` interface on an initialised torch process group.

Ray Train (or any launcher) initialises the default process group (NCCL on GPU, gloo on
CPU); this class only uses it. The rules that make W workers × batch B compute the same
update as one worker × batch W·B:

- `all_gather_with_grad` keeps the autograd graph: its backward sums, over all workers,
  the gradients that every worker's loss sends to this worker's rows. DDP then averages
  the parameter gradients, which turns that sum into the gradient of the global mean loss.
- `all_gather` (no gradient) concatenates in rank order, the order of the global batch
  (each rank takes a contiguous slice), so queues filled from it are identical everywhere.
- `wrap` puts the method under DDP. Buffers are *not* broadcast each step: the buffers
  that must agree (MoCo queues) agree by construction, BatchNorm running statistics are
  only read at evaluation and rank 0's are the ones checkpointed, and broadcasting a large
  queue every step would cost bandwidth for nothing.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather as differentiable_all_gather
from torch.nn.parallel import DistributedDataParallel

# No buffer sync in forward. Recent torch names this `forward_sync_buffers` and deprecates
# `broadcast_buffers`; torch 2.4 has only the latter, with the same meaning for forward.
NO_FORWARD_BUFFER_SYNC: dict[str, bool] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)

# torch marks this gather deprecated in favour of the private functional collectives; it is
# the documented differentiable gather (also twice differentiable, which MetAug's meta step
# needs), so the warning would only repeat on every run.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional\.\w+ is deprecated", category=FutureWarning
)


class TorchDistributed:
    """One worker of a torch.distributed process group (the default group)."""

    def __init__(self, device: torch.device | str | None = None, local_rank: int | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("TorchDistributed needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = self.rank if local_rank is None else local_rank
        if device is None:
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.backend = str(dist.get_backend())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- gathers ------------------------------------------------------------------------
    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every worker's rows in rank order; gradient flows back to each worker's own rows."""
        if self.world_size == 1:
            return tensor
        return torch.cat(differentiable_all_gather(tensor), dim=0)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every worker's rows in rank order, as constants (shapes must match across workers)."""
        tensor = tensor.detach().contiguous()
        if self.world_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)

    # -- reductions -----------------------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """A new tensor with the sum over workers (the caller's tensor is left as it is)."""
        total = tensor.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        total = self.all_reduce_sum(tensor)
        return total / self.world_size if total.is_floating_point() else total // self.world_size

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """A new tensor holding worker `src`'s values (shapes and dtypes must match)."""
        result = tensor.detach().clone().contiguous()
        if self.world_size > 1:
            dist.broadcast(result, src=src)
        return result

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's (picklable) object, on every worker."""
        if self.world_size == 1:
            return obj
        holder = [obj if self.is_main else None]
        dist.broadcast_object_list(holder, src=0, device=self._collective_device())
        return holder[0]

    def barrier(self) -> None:
        if self.world_size == 1:
            return
        if self.device.type == "cuda" and self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    # -- gradients ------------------------------------------------------------------------
    def wrap(self, module: nn.Module) -> nn.Module:
        """The module under DDP, with SyncBatchNorm when the method's config asks for it.

        A method whose forward may leave trainable parameters without gradient (a stage
        that trains only some heads) sets the class attribute `ddp_find_unused_parameters`.
        """
        if self.world_size == 1:
            return module
        if _wants_sync_batchnorm(module):
            module = self.convert_sync_batchnorm(module)
        find_unused = bool(getattr(module, "ddp_find_unused_parameters", False))
        device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
        # Buffers are synced once at construction, never in forward (see the module docstring).
        return DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=find_unused, **NO_FORWARD_BUFFER_SYNC
        )

    def convert_sync_batchnorm(self, module: nn.Module) -> nn.Module:
        """BatchNorm layers normalise with the statistics of the global batch.

        torch's SyncBatchNorm runs on accelerators only, so CPU workers keep per-worker BN.
        The conversion keeps the parameter objects, so optimisers and checkpoints still match.
        """
        if self.device.type == "cpu":
            raise ValueError(
                "model.sync_batchnorm needs GPU workers (torch's SyncBatchNorm does not run on CPU); "
                "set --gpus-per-worker or leave model.sync_batchnorm false"
            )
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if converted is not module:
            raise ValueError("sync_batchnorm: the wrapped module itself must not be a BatchNorm layer")
        return module

    def all_reduce_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Average `.grad` over workers, for a step that does not go through `wrap`.

        A missing gradient counts as zeros, so every worker reduces the same buffer even
        when a parameter did not take part in this worker's loss.
        """
        if self.world_size == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for group in _by_dtype_and_device(params):
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for p in group:
                count = p.grad.numel()
                p.grad.copy_(flat[offset : offset + count].view_as(p.grad))
                offset += count

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def _wants_sync_batchnorm(module: nn.Module) -> bool:
    cfg = getattr(module, "cfg", None)
    return bool(getattr(getattr(cfg, "model", None), "sync_batchnorm", False))


def _by_dtype_and_device(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
    """Parameters grouped so that each group's gradients fit in one flat buffer."""
    groups: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    return list(groups.values())


__all__ = ["TorchDistributed"]
