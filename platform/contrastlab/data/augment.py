"""Batched, per-sample two-view augmentation on the images' own device.

Every image of a batch gets its own random parameters (torchvision's v2 transforms draw
once per batch, which would give every view of a batch the same crop). There is no Python
loop over samples:

- random resized crop and horizontal flip: one per-sample sampling grid and one bilinear
  `grid_sample`;
- colour jitter: brightness, contrast, saturation and hue are each a per-sample affine map
  of the colour vector (hue as a rotation in the YIQ chroma plane), so every step is one
  batched 3x3 matrix product plus a clamp to [0, 1] (the clamp torchvision applies after
  each op). The four ops run in a **random order per sample**, as in torchvision's
  ColorJitter: at step j each sample applies the op that its own permutation puts there;
- random grayscale, the uint8 scaling and the mean/std normalisation fold into one final
  affine map;
- Gaussian blur (optional): per-sample kernels in a separable grouped convolution. It runs
  last, on normalised values: a blur with one kernel for all channels commutes with any
  per-pixel affine colour map, so this equals blurring before normalising.

All random numbers of one call come from a single `torch.rand(n, 17)` draw on the images'
device, so the same generator seed gives identical views, and the stream does not depend
on the config (switching an op off does not shift the others' draws). Nothing branches on
tensor values, so a call never waits for the GPU. Single-channel images get brightness
and contrast only (saturation, hue and grayscale need colour).

Differences from the PIL pipeline, on purpose: crops are continuous (sub-pixel) rather
than integer boxes; a crop whose sides would exceed the image is clamped to it instead of
re-drawn; hue is a YIQ rotation, not an HSV shift (close for small shifts, and linear).
Crops that shrink the image are sampled bilinearly without antialiasing (`normalize`, the
evaluation path, does antialias).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601 luma: torchvision's grayscale weights, also the Y row of YIQ.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = (GRAY_WEIGHTS, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))

# Columns of the per-call uniform draw.
_SCALE, _RATIO, _CX, _CY, _FLIP, _JITTER = 0, 1, 2, 3, 4, 5
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 6, 7, 8, 9
_ORDER = slice(10, 14)  # one sort key per jitter op, in the order of JITTER_OPS
_GRAY, _BLUR, _SIGMA = 14, 15, 16
_DRAWS = 17
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def _span(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


class TwoViewAugment:
    """SimCLR-style augmentation with per-sample parameters, on any device.

    `aug(images, generator)`: uint8 [N, C, H, W] on a device → float32 [N, C, S, S]
    normalised views (S = `out_size`); the generator must live on the images' device.
    """

    def __init__(self, cfg, channels: int, out_size: int, mean, std):
        if channels not in (1, 3):
            raise ValueError(f"augmentation supports 1 or 3 channels, got {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        self.cfg = cfg
        self.channels = channels
        self.out_size = int(out_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[torch.device, dict[str, torch.Tensor]] = {}
        colour = channels == 3
        # Ops whose strength is zero are the identity for every sample, so leaving them out
        # changes no output; it only saves passes over the batch.
        strengths = {
            "brightness": cfg.brightness,
            "contrast": cfg.contrast,
            "saturation": cfg.saturation if colour else 0.0,
            "hue": cfg.hue if colour else 0.0,
        }
        self.jitter_ops = [name for name, value in strengths.items() if value > 0] if cfg.jitter_prob > 0 else []
        self.use_gray = colour and cfg.grayscale_prob > 0
        self.blur_radius = max(1, round(0.05 * self.out_size)) if cfg.blur_prob > 0 else 0

    # -- public -------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view per image."""
        with torch.autocast(images.device.type, enabled=False):
            out = self._views(images, generator)
        return _like_input(out, images)

    def two_views(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views per image, made in one batched pass of 2N."""
        both = self(torch.cat([images, images]), generator)
        first, second = both.chunk(2)
        return first, second

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic evaluation input: resized to `out_size` (antialiased) and normalised."""
        with torch.autocast(images.device.type, enabled=False):
            x = images.float()
            if x.shape[-2:] != (self.out_size, self.out_size):
                x = F.interpolate(
                    x, size=(self.out_size, self.out_size), mode="bilinear", antialias=True, align_corners=False
                )
            scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
            const = self._on(x.device)
            out = x * (scale / const["std"]).view(1, -1, 1, 1) - (const["mean"] / const["std"]).view(1, -1, 1, 1)
        return _like_input(out, images)

    # -- pipeline -----------------------------------------------------------------------
    def _views(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, device = images.shape[0], images.device
        if images.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels}-channel images, got shape {tuple(images.shape)}")
        u = torch.rand(n, _DRAWS, generator=generator, device=device)
        x = F.grid_sample(
            images.float(), self._crop_grid(u), mode="bilinear", padding_mode="border", align_corners=False
        ).contiguous()
        x = x.view(n, self.channels, -1)
        # Pixel values stay on the 0-255 scale until the first affine step, which absorbs
        # the 1/255 (one pass fewer over the batch).
        scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
        if self.jitter_ops:
            x = self._jitter(x, u, scale)
            scale = 1.0
        x = self._gray_and_normalise(x, u, scale)
        x = x.view(n, self.channels, self.out_size, self.out_size)
        if self.blur_radius:
            x = self._blur(x, u)
        return x

    def _crop_grid(self, u: torch.Tensor) -> torch.Tensor:
        """Affine sampling grids: random area scale, log-uniform aspect ratio, position, flip."""
        cfg, n = self.cfg, u.shape[0]
        area = _span(u[:, _SCALE], *cfg.crop_scale)
        ratio = _span(u[:, _RATIO], math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])).exp()
        # Sides as fractions of the image side (the grid spans [-1, 1], so these are half-extents).
        width = torch.sqrt(area * ratio).clamp(max=1.0)
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        centre_x = _span(u[:, _CX], -1, 1) * (1 - width)
        centre_y = _span(u[:, _CY], -1, 1) * (1 - height)
        flip = torch.where(u[:, _FLIP] < cfg.hflip_prob, -1.0, 1.0)
        # The map has no rotation or shear, so the grid is an outer sum of two 1-D rulers;
        # this is the same grid F.affine_grid makes, at a fraction of its cost.
        size = self.out_size
        ruler = (torch.arange(size, device=u.device, dtype=u.dtype) * 2 + 1) / size - 1  # pixel centres
        grid_x = ((width * flip)[:, None] * ruler + centre_x[:, None])[:, None, :].expand(n, size, size)
        grid_y = (height[:, None] * ruler + centre_y[:, None])[:, :, None].expand(n, size, size)
        return torch.stack([grid_x, grid_y], -1)

    def _jitter(self, x: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
        """Colour jitter with probability, the ops in a random order per sample; x: [N, C, P]."""
        cfg, n, c = self.cfg, x.shape[0], self.channels
        const = self._on(x.device)
        apply = (u[:, _JITTER] < cfg.jitter_prob).float()
        eye = const["eye"].expand(n, c, c)

        def factor(column: int, strength: float) -> torch.Tensor:
            # Samples that skip the jitter get the identity factor 1.
            drawn = _span(u[:, column], max(0.0, 1 - strength), 1 + strength)
            return 1 + apply * (drawn - 1)

        matrices: dict[str, torch.Tensor] = {}
        contrast = factor(_CONTRAST, cfg.contrast)
        for name in self.jitter_ops:
            if name == "brightness":
                matrices[name] = factor(_BRIGHTNESS, cfg.brightness).view(n, 1, 1) * eye
            elif name == "contrast":
                matrices[name] = contrast.view(n, 1, 1) * eye
            elif name == "saturation":
                s = factor(_SATURATION, cfg.saturation).view(n, 1, 1)
                matrices[name] = s * eye + (1 - s) * const["to_gray"]
            else:
                angle = 2 * math.pi * apply * _span(u[:, _HUE], -cfg.hue, cfg.hue)
                matrices[name] = _hue_rotation(angle, const["rgb_to_yiq"], const["yiq_to_rgb"])
        stacked = torch.stack([matrices[name] for name in self.jitter_ops])  # [K, N, C, C]
        # A per-sample random permutation of the active ops: argsort of uniform keys. Each op
        # keeps its own key column, so switching one op off leaves the others' order alone.
        order = u.index_select(1, const["order_columns"]).argsort(1)
        rows = torch.arange(n, device=x.device)
        contrast_index = self.jitter_ops.index("contrast") if "contrast" in self.jitter_ops else -1
        luma = const["luma"]
        for step in range(len(self.jitter_ops)):
            op = order[:, step]
            matrix = stacked[op, rows] * scale
            shift = torch.zeros(n, device=x.device)
            if contrast_index >= 0:
                # Contrast blends with the mean luma of the image as it is at this step
                # (after the ops this sample applied before), as torchvision does.
                mean_luma = (x.mean(2) @ luma) * scale
                shift = torch.where(op == contrast_index, (1 - contrast) * mean_luma, shift)
            x = torch.baddbmm(shift.view(n, 1, 1), matrix, x).clamp_(0, 1)
            scale = 1.0
        return x

    def _gray_and_normalise(self, x: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
        n, c = x.shape[0], self.channels
        const = self._on(x.device)
        mean, std = const["mean"], const["std"]
        matrix = const["eye"].expand(n, c, c)
        if self.use_gray:
            to_gray = (u[:, _GRAY] < self.cfg.grayscale_prob).view(n, 1, 1)
            matrix = torch.where(to_gray, const["to_gray"], matrix)
        matrix = matrix * (scale / std).view(1, c, 1)
        return torch.baddbmm((-mean / std).view(1, c, 1), matrix, x)

    def _blur(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur, one kernel per sample (a delta where the blur is skipped)."""
        cfg, n, c, radius = self.cfg, x.shape[0], self.channels, self.blur_radius
        sigma = _span(u[:, _SIGMA], *cfg.blur_sigma)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets**2) / (2 * sigma.view(n, 1) ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        delta = (offsets == 0).to(x.dtype).expand(n, -1)
        kernel = torch.where((u[:, _BLUR] < cfg.blur_prob).view(n, 1), kernel, delta)
        weights = kernel.repeat_interleave(c, 0)  # one group per (sample, channel)
        flat = F.pad(x.reshape(1, n * c, *x.shape[2:]), (radius,) * 4, mode="reflect")
        flat = F.conv2d(flat, weights.view(n * c, 1, 1, -1), groups=n * c)
        flat = F.conv2d(flat, weights.view(n * c, 1, -1, 1), groups=n * c)
        return flat.reshape(x.shape)

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Constant tensors, made once per device: a host-to-device copy every call would
        make each call wait for the device."""
        if device not in self._constants:
            c = self.channels
            yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
            luma = torch.tensor(GRAY_WEIGHTS) if c == 3 else torch.ones(1)
            values = {
                "mean": torch.tensor(self.mean),
                "std": torch.tensor(self.std),
                "eye": torch.eye(c),
                "luma": luma,
                "to_gray": luma.expand(c, c).contiguous(),
                "rgb_to_yiq": yiq.float(),
                "yiq_to_rgb": torch.linalg.inv(yiq).float(),
            }
            constants = {k: v.to(device, torch.float32) for k, v in values.items()}
            columns = [_ORDER.start + JITTER_OPS.index(name) for name in self.jitter_ops]
            constants["order_columns"] = torch.tensor(columns, dtype=torch.long, device=device)
            self._constants[device] = constants
        return self._constants[device]


def _hue_rotation(angle: torch.Tensor, rgb_to_yiq: torch.Tensor, yiq_to_rgb: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] RGB maps that rotate the YIQ chroma plane by `angle` (luma kept).

    The sign makes a positive angle move red towards yellow, the direction of a positive
    HSV hue shift.
    """
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotation = torch.stack([one, zero, zero, zero, cos, sin, zero, -sin, cos], 1).view(-1, 3, 3)
    return yiq_to_rgb @ rotation @ rgb_to_yiq


def _like_input(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Keep a channels_last input channels_last, so a channels_last model takes it as is."""
    if (
        images.dim() == 4
        and images.shape[1] > 1
        and not images.is_contiguous()
        and images.is_contiguous(memory_format=torch.channels_last)
    ):
        return out.contiguous(memory_format=torch.channels_last)
    return out
