"""Optimisers (SGD, LARS, AdamW) and the warm-up + cosine schedule.

Below the methods and the engine (it imports neither): the engine builds a run's
optimisers here, and a method that schedules its own learning rate (MCL's stages) uses
the same schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from contrastlab.sections import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with layer-wise trust ratios (You et al. 2017), as used by SimCLR.

    Biases and normalisation weights (1-d parameters) get neither weight decay nor
    adaptation, the common practice for contrastive pretraining.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = p.norm(), grad.norm()
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, torch.ones_like(p_norm)
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def scaled_lr(cfg: OptimConfig) -> float:
    """Linear scaling rule: `lr` is given at batch 256."""
    return cfg.lr * cfg.batch_size / 256


def build_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over `params`, at the batch-scaled learning rate."""
    lr = scaled_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Multiplier of the base lr: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup))


__all__ = ["LARS", "build_optimizer", "build_schedule", "scaled_lr", "warmup_cosine"]
