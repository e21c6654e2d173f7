"""TensorBoard tag names: the engine's metric keys, grouped for the dashboards.

A metric key (what Ray Tune receives and a study spec names) never changes; only the tag
it is written under does. The groups are `train/` (the objective, its terms, the learning
rate and a method's own diagnostics), `val/` and `test/` (the held-out evaluations, already
named so) and `system/` (throughput, epoch time, samples seen, memory). `epoch` is the step
of every scalar, not a scalar of its own.
"""

from __future__ import annotations

import resource
import sys

import torch

GROUPS = ("train", "val", "test", "system")
SYSTEM_KEYS = {
    "throughput": "system/throughput",
    "epoch_seconds": "system/epoch_seconds",
    "train_samples": "system/train_samples",
}
NOT_SCALARS = frozenset({"epoch"})


def tag_for(key: str) -> str | None:
    """The grouped tag of a metric key (`loss` -> `train/loss`, `throughput` ->
    `system/throughput`, `val/knn_top1` unchanged); None for a key that is no scalar."""
    if key in NOT_SCALARS:
        return None
    if key in SYSTEM_KEYS:
        return SYSTEM_KEYS[key]
    if key.split("/", 1)[0] in GROUPS and "/" in key:
        return key
    return f"train/{key}"


def grouped(values: dict[str, object]) -> dict[str, float]:
    """The numeric values of `values` under their grouped tags (booleans and non-numbers left out)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        tag = tag_for(key)
        if tag is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


def memory_scalars(device: torch.device | None = None) -> dict[str, float]:
    """Peak memory of this process so far, in MiB: host (max RSS) and, on CUDA, the accelerator."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    values = {"system/host_memory_mib": peak / (1024 * 1024 if sys.platform == "darwin" else 1024)}
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        values["system/gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return values


__all__ = ["GROUPS", "SYSTEM_KEYS", "grouped", "memory_scalars", "tag_for"]
