"""Batched, per-sample two-view augmentation on the images' own device.

Every image of a batch gets its own random parameters (torchvision's v2 transforms draw
once per batch, which would give every view of a batch the same crop). All ops are
tensor ops over the whole batch: one affine grid for the crops and flips, arithmetic for
the colour jitter, a grouped convolution for the blur.

Colour jitter applies brightness, contrast, saturation and hue in that fixed order (the
order is not randomised per sample, a simplification of torchvision's ColorJitter).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def grayscale(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    value, _ = x.max(1)
    minimum, _ = x.min(1)
    delta = value - minimum
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-8), torch.zeros_like(value))
    safe = delta.clamp_min(1e-8)
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = x.unbind(1)
    k = torch.stack([(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6], 1)
    f = torch.minimum(k, 4 - k).clamp(0, 1)
    return value[:, None] - value[:, None] * saturation[:, None] * f


class TwoViewAugment:
    """SimCLR-style augmentation with per-sample parameters, on any device."""

    def __init__(self, cfg, channels: int, out_size: int, mean, std):
        self.cfg = cfg
        self.channels = channels
        self.out_size = out_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    # -- geometry -------------------------------------------------------------------------
    def _crop_flip_grid(self, n: int, generator, device) -> torch.Tensor:
        """Affine grids of random resized crops (area scale, log-uniform aspect) and flips."""
        cfg = self.cfg
        scale = _uniform(n, cfg.crop_scale[0], cfg.crop_scale[1], generator, device)
        log_ratio = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator, device)
        ratio = log_ratio.exp()
        width = torch.sqrt(scale * ratio).clamp(max=1.0)
        height = torch.sqrt(scale / ratio).clamp(max=1.0)
        cx = (2 * torch.rand(n, generator=generator, device=device) - 1) * (1 - width)
        cy = (2 * torch.rand(n, generator=generator, device=device) - 1) * (1 - height)
        flip = torch.where(_bernoulli(n, cfg.hflip_prob, generator, device), -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = width * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = height
        theta[:, 1, 2] = cy
        return F.affine_grid(theta, (n, self.channels, self.out_size, self.out_size), align_corners=False)

    # -- colour ---------------------------------------------------------------------------
    def _jitter(self, x: torch.Tensor, generator) -> torch.Tensor:
        cfg, n, device = self.cfg, x.shape[0], x.device
        apply = _bernoulli(n, cfg.jitter_prob, generator, device).view(n, 1, 1, 1)
        if not apply.any():
            # Draw the parameters anyway so the random stream does not depend on the outcome.
            _ = torch.rand(4 * n, generator=generator, device=device)
            return x
        out = x
        b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, generator, device).clamp_min(0).view(n, 1, 1, 1)
        out = (out * b).clamp(0, 1)
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, generator, device).clamp_min(0).view(n, 1, 1, 1)
        gray_mean = (grayscale(out) if self.channels == 3 else out).mean((1, 2, 3), keepdim=True)
        out = ((out - gray_mean) * c + gray_mean).clamp(0, 1)
        s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, generator, device).clamp_min(0).view(n, 1, 1, 1)
        h = _uniform(n, -cfg.hue, cfg.hue, generator, device).view(n, 1, 1)
        if self.channels == 3:
            gray = grayscale(out)
            out = ((out - gray) * s + gray).clamp(0, 1)
            if cfg.hue > 0:
                hsv = rgb_to_hsv(out)
                hsv = torch.stack([(hsv[:, 0] + h) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
                out = hsv_to_rgb(hsv)
        return torch.where(apply, out, x)

    def _grayscale(self, x: torch.Tensor, generator) -> torch.Tensor:
        n = x.shape[0]
        apply = _bernoulli(n, self.cfg.grayscale_prob, generator, x.device).view(n, 1, 1, 1)
        if self.channels != 3:
            return x
        return torch.where(apply, grayscale(x).expand_as(x), x)

    def _blur(self, x: torch.Tensor, generator) -> torch.Tensor:
        cfg, n, device = self.cfg, x.shape[0], x.device
        apply = _bernoulli(n, cfg.blur_prob, generator, device)
        sigma = _uniform(n, cfg.blur_sigma[0], cfg.blur_sigma[1], generator, device)
        if cfg.blur_prob == 0 or not apply.any():
            return x
        radius = max(1, int(round(0.05 * self.out_size)))  # kernel ~10% of the image, as in SimCLR
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=x.dtype)
        kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        c = x.shape[1]
        weights = kernel.repeat_interleave(c, 0)
        flat = x.reshape(1, n * c, *x.shape[2:])
        flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, weights.view(n * c, 1, 1, -1), groups=n * c)
        flat = F.conv2d(flat, weights.view(n * c, 1, -1, 1), groups=n * c)
        blurred = flat.view_as(x)
        return torch.where(apply.view(n, 1, 1, 1), blurred, x)

    # -- public ---------------------------------------------------------------------------
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view per image: uint8 [N, C, H, W] → float32 normalised [N, C, S, S]."""
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        x = x.contiguous()
        grid = self._crop_flip_grid(x.shape[0], generator, x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = self._jitter(x, generator)
        x = self._grayscale(x, generator)
        x = self._blur(x, generator)
        return self._normalise(x)

    def two_views(self, images: torch.Tensor, generator: torch.Generator | None = None):
        return self(images, generator), self(images, generator)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic evaluation input: resized to the output size and normalised."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.out_size or x.shape[-2] != self.out_size:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return self._normalise(x)
