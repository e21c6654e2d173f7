"""MetAug's feature generators and the functional forward passes of its meta step.

Li et al., ICML 2022, "MetAug: Contrastive Learning via Meta Feature Augmentation".
A generator g_v maps an encoder-side feature of view v to an "augmented" feature of the
same space. Here that feature is the L2-normalised projection z (the output of encoder +
projection head), as in the released code, where the generators read the normalised
128-d embedding that the contrastive loss scores.

The meta step evaluates the encoder at fast weights θ' = θ − α∇θL. Those passes go
through `torch.func.functional_call` on the *unwrapped* modules, with copies of the
BatchNorm buffers: BN runs in train mode (batch statistics, as in the encoder step) but
the real running statistics are left as they are, so the meta step never changes the
encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class FeatureGenerator(nn.Module):
    """g_v: d → hidden → hidden → d (Linear, BN, ReLU twice, then Linear), unit-norm output.

    The paper's generator is this three-layer MLP with hidden width 2048; the width is a
    parameter so that CPU tests can use a narrow one.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # Not in-place ReLU: the second-order meta step differentiates through this graph twice.
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(at_least_float32(self.net(z)), dim=1)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Scores in float32 under bf16 autocast, while float64 (gradient checks) stays float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def trainable(module: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """The parameters of `module` that require gradients, keyed `prefix.name`."""
    return {f"{prefix}.{name}": p for name, p in module.named_parameters() if p.requires_grad}


def buffer_copies(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the buffers, so a train-mode BN pass updates the copies, not the module."""
    return {name: b.clone() for name, b in module.named_buffers()}


def call_with(module: nn.Module, prefix: str, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`module(x)` with the parameters in `params` (keys `prefix.name`) and copied buffers."""
    start = len(prefix) + 1
    state = {key[start:]: value for key, value in params.items() if key.startswith(prefix + ".")}
    state.update(buffer_copies(module))
    return functional_call(module, state, (x,))


def project_with(
    encoder: nn.Module,
    projector: nn.Module,
    params: dict[str, torch.Tensor],
    views: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views through encoder and head at `params` (one pass, BN sees the whole batch)."""
    return branch_with(encoder, projector, params, torch.cat(views, dim=0)).chunk(2, dim=0)


def branch_with(
    encoder: nn.Module,
    projector: nn.Module,
    params: dict[str, torch.Tensor] | None,
    x: torch.Tensor,
    prefixes: tuple[str, str] = ("encoder", "projector"),
) -> torch.Tensor:
    """Normalised projections of `x` through one encoder + head, at `params` (keys
    `prefix.name`) or, with None, at the modules' own weights."""
    if params is None:
        return F.normalize(at_least_float32(projector(encoder(x))), dim=1)
    features = call_with(encoder, prefixes[0], params, x)
    return F.normalize(at_least_float32(call_with(projector, prefixes[1], params, features)), dim=1)


def fast_weights(
    params: dict[str, torch.Tensor],
    grads: list[torch.Tensor],
    inner_lr: float,
    keep_graph: bool,
) -> dict[str, torch.Tensor]:
    """θ' = θ − α·∇θL. With `keep_graph` the gradient stays a function of the generators
    (second order); otherwise it is a constant and only the direct path is differentiated."""
    return {
        name: param.detach() - inner_lr * (grad if keep_graph else grad.detach())
        for (name, param), grad in zip(params.items(), grads)
    }
