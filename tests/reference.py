"""Helpers shared by the NumPy-reference loss tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unit(n: int, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`n` seeded random unit vectors in R^d (rows)."""
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=1)
