"""MetAug's released views and negatives: CMC-style Lab channels and a per-view memory bank.

Li et al., ICML 2022 (code built on CMC, Tian et al., ECCV 2020).

- `cmc_lab`: one augmented crop is converted to CIE Lab (sRGB, D65); its L channel is one
  view and its ab channels the other, each with its own encoder. Both are normalised with
  CMC's fixed Lab ranges, so they enter the encoders at a scale close to unit variance.
- `MemoryBank`: for every training image and view, a unit vector updated as
  M[i] ← normalize(m·M[i] + (1−m)·z_i) once per iteration; a sample's positive score for
  view v is z_u(i)·M_v[i] and its negatives z_u(i)·M_v[j] over drawn indices j.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.losses.contrastive import f32, float32_math

# sRGB (D65) to XYZ, and the D65 white point, as in the usual sRGB definition.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
# CMC's normalisation: centre and half-range of L, a and b over the sRGB gamut.
LAB_MEAN = (50.0, 6.025, -6.6895)
LAB_STD = (50.0, 92.208, 101.1675)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[n, 3, h, w] sRGB in [0, 1] → CIE Lab (L in [0, 100]), in at least float32."""
    with float32_math(rgb.device):
        rgb = f32(rgb).clamp(0, 1)
        linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        matrix = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
        white = torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        xyz = torch.einsum("ij,njhw->nihw", matrix, linear) / white
        f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
        lightness = 116 * f[:, 1] - 16
        a = 500 * (f[:, 0] - f[:, 1])
        b = 200 * (f[:, 1] - f[:, 2])
        return torch.stack([lightness, a, b], dim=1)


def lab_views(
    images: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L [n, 1, h, w], ab [n, 2, h, w]) of normalised RGB `images`, each CMC-normalised.

    `mean`/`std` undo the data normalisation (None: the images are RGB in [0, 1]).
    """
    rgb = images
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        rgb = images * torch.tensor(std, dtype=images.dtype, device=images.device).view(shape) + torch.tensor(
            mean, dtype=images.dtype, device=images.device
        ).view(shape)
    lab = rgb_to_lab(rgb)
    centre = torch.tensor(LAB_MEAN, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    scale = torch.tensor(LAB_STD, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    lab = ((lab - centre) / scale).to(images.dtype)
    return lab[:, :1], lab[:, 1:]


@dataclass
class BankDraw:
    """One step's bank rows: each sample's own index [b] and its negatives' indices [b, K]."""

    own: torch.Tensor
    negatives: torch.Tensor


class MemoryBank(nn.Module):
    """Two [N, d] banks of unit vectors (one per view), kept as buffers (checkpointed)."""

    def __init__(self, size: int, dim: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("banks", F.normalize(torch.randn(2, size, dim, generator=gen), dim=2))

    def draw(self, own: torch.Tensor, count: int, generator: torch.Generator | None) -> BankDraw:
        """K indices drawn uniformly (with replacement) per sample, as the released code does."""
        source = own.device if generator is None else generator.device
        size = self.banks.shape[1]
        negatives = torch.randint(0, size, (own.shape[0], count), generator=generator, device=source)
        return BankDraw(own.to(self.banks.device), negatives.to(self.banks.device))

    def scores(self, z: torch.Tensor, view: int, draw: BankDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw dot products of z [b, d] with bank `view`: positives [b, 1], negatives [b, K].

        The bank is a constant: gradient reaches z only.
        """
        with float32_math(z.device):
            z = f32(z)
            bank = self.banks[view].detach().to(z.dtype)
            pos = (z * bank[draw.own]).sum(1, keepdim=True)
            neg = torch.einsum("bd,bkd->bk", z, bank[draw.negatives])
            return pos, neg

    @torch.no_grad()
    def update(self, own: torch.Tensor, features: tuple[torch.Tensor, torch.Tensor], momentum: float) -> None:
        """M_v[i] ← normalize(m·M_v[i] + (1−m)·z_v(i)) for both views (rows of `own` unique)."""
        for view, z in enumerate(features):
            rows = own.to(self.banks.device)
            mixed = momentum * self.banks[view, rows] + (1 - momentum) * z.detach().to(self.banks.dtype)
            self.banks[view, rows] = F.normalize(mixed, dim=1)
