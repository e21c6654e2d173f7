"""Trifeature images (after Hermann & Lampinen, NeurIPS 2020): shape x colour x texture.

Each image has one of 10 shapes, 10 colours and 10 textures, drawn independently. The
shape mask (random position, size and rotation) is filled with the texture in the colour:
texture "on" pixels take the exact palette colour, "off" pixels a darker shade of it, on
a neutral grey background. Hard (not antialiased) masks keep the palette colours exact, so
the colour label can be read back from the pixels.

Choices made for 32x32 images:
- shapes are told apart by structure that survives rotation (no square/diamond pair, no
  pentagon/hexagon that a 9-pixel radius turns into a circle);
- textures are binary patterns with a period of 2-4 pixels (longer periods vanish inside
  a shape), that differ in structure and not only in scale, because random resized crops
  rescale them; they are axis-aligned in image coordinates with a random phase.

The data set is generated vectorised over images (masks as signed-distance and polygon
tests on a coordinate grid rotated per image) with a fixed generator seed, the same for
every experiment, and cached as a .pt file keyed by (generator code, seed, counts, size).
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from pathlib import Path

import torch

from contrastlab.data.datasets import DataBundle, cache_dir, channel_stats
from contrastlab.progress import Progress

GENERATOR_SEED = 20200601
VERSION = 2
ATTRIBUTES = ("shape", "colour", "texture")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "ellipse", "semicircle", "tee")
TEXTURES = (
    "solid",
    "h_stripes",
    "v_stripes",
    "diagonal",
    "anti_diagonal",
    "checker",
    "dots",
    "holes",
    "grid",
    "crosshatch",
)
# Ten colours far apart in RGB (smallest pairwise L1 distance 128), none grey.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (250, 190, 212),
    (128, 128, 0),
)
BACKGROUND = 128
OFF_SHADE = 0.45  # "off" texture pixels: round(colour * OFF_SHADE), never a palette colour
EXTENT = 1.15  # the farthest point of any shape from its centre, in radii (the square's corner)


def off_shades() -> torch.Tensor:
    """[10, 3] the darker shade of each palette colour, as rendered."""
    return (torch.tensor(PALETTE, dtype=torch.float64) * OFF_SHADE).round().long()


def _regular_polygon(r: torch.Tensor, theta: torch.Tensor, sides: int, radius: torch.Tensor) -> torch.Tensor:
    # Fold the angle into one sector; inside means the projection on the sector's normal
    # is below the apothem.
    sector = 2 * math.pi / sides
    local = torch.remainder(theta, sector) - sector / 2
    return r * torch.cos(local) < radius * math.cos(math.pi / sides)


def shape_masks(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """[N, S, S] masks of each image's shape; (u, v) are the image's rotated, centred coordinates."""
    r = torch.sqrt(u**2 + v**2)
    theta = torch.atan2(v, u)
    R = radius
    masks = torch.stack(
        [
            r < R,  # circle
            torch.maximum(u.abs(), v.abs()) < 0.8 * R,  # square
            _regular_polygon(r, theta, 3, R),  # triangle
            r < R * (0.7 + 0.3 * torch.cos(5 * theta)),  # star
            ((u.abs() < 0.3 * R) & (v.abs() < R)) | ((v.abs() < 0.3 * R) & (u.abs() < R)),  # cross
            (r < R) & (r > 0.55 * R),  # ring
            (r < R) & (torch.sqrt((u - 0.5 * R) ** 2 + v**2) > 0.8 * R),  # crescent
            (u / R) ** 2 + (v / (0.5 * R)) ** 2 < 1,  # ellipse
            (r < R) & (v > -0.2 * R),  # semicircle
            ((v > 0.35 * R) & (v < 0.9 * R) & (u.abs() < 0.7 * R)) | ((u.abs() < 0.25 * R) & (v > -R) & (v < 0.9 * R)),
        ]
    )
    index = labels.view(1, -1, 1, 1).expand(1, *masks.shape[1:])
    return masks.gather(0, index)[0]


def texture_patterns(labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, S, S] on/off patterns from integer pixel coordinates (already phase-shifted)."""
    patterns = torch.stack(
        [
            torch.ones_like(x, dtype=torch.bool),  # solid
            (y % 4) < 2,  # horizontal stripes
            (x % 4) < 2,  # vertical stripes
            ((x + y) % 4) < 2,  # diagonal stripes
            ((x - y) % 4) < 2,  # anti-diagonal stripes
            ((x // 2 + y // 2) % 2) == 0,  # checkerboard, 2-pixel cells
            ((x % 4) < 2) & ((y % 4) < 2),  # dots (25% on)
            ~(((x % 4) < 2) & ((y % 4) < 2)),  # holes (75% on)
            ((x % 4) == 0) | ((y % 4) == 0),  # axis-aligned grid lines
            (((x + y) % 4) == 0) | (((x - y) % 4) == 0),  # diagonal grid lines
        ]
    )
    index = labels.view(1, -1, 1, 1).expand(1, *patterns.shape[1:])
    return patterns.gather(0, index)[0]


def render(
    shape: torch.Tensor, colour: torch.Tensor, texture: torch.Tensor, size: int, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [N, 3, size, size] images for the given attribute labels."""
    n = shape.shape[0]
    # float64 geometry: pixels on a shape's edge then land on the same side on any CPU.
    f64 = torch.float64
    radius = size * (0.25 + 0.08 * torch.rand(n, generator=generator, dtype=f64))
    margin = EXTENT * radius + 0.5  # keeps every shape inside the image
    cx = margin + (size - 2 * margin) * torch.rand(n, generator=generator, dtype=f64)
    cy = margin + (size - 2 * margin) * torch.rand(n, generator=generator, dtype=f64)
    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=f64)
    phase = torch.randint(0, 12, (n, 2), generator=generator)
    centres = torch.arange(size, dtype=f64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    dx, dy = xs[None] - cx.view(n, 1, 1), ys[None] - cy.view(n, 1, 1)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # the grid rotated into each shape's frame
    mask = shape_masks(shape, u, v, radius.view(n, 1, 1))
    pixel = torch.arange(size)
    xi = pixel.view(1, 1, size) + phase[:, 0].view(n, 1, 1)
    yi = pixel.view(1, size, 1) + phase[:, 1].view(n, 1, 1)
    on = texture_patterns(texture, xi.expand(n, size, size), yi.expand(n, size, size))
    bright = torch.tensor(PALETTE, dtype=torch.uint8)[colour].view(n, 3, 1, 1)
    dark = off_shades().to(torch.uint8)[colour].view(n, 3, 1, 1)
    fill = torch.where(on[:, None], bright, dark)
    return torch.where(mask[:, None], fill, torch.tensor(BACKGROUND, dtype=torch.uint8))


def generate(
    count: int, size: int, seed: int, what: str = "generating Trifeature images"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`count` images with independent uniform attributes, rendered in memory-bounded chunks
    (long generation logs progress lines headed `what`)."""
    generator = torch.Generator().manual_seed(seed)
    labels = {name: torch.randint(0, 10, (count,), generator=generator) for name in ATTRIBUTES}
    # ~2M pixels per chunk; the chunk size is part of the random stream, so it depends only
    # on `size` (never on the machine).
    chunk = max(1, 2_000_000 // (size * size))
    images = []
    with Progress(what, count, "images", rate_unit="img") as progress:
        for s in range(0, count, chunk):
            part = slice(s, s + chunk)
            images.append(
                render(labels["shape"][part], labels["colour"][part], labels["texture"][part], size, generator)
            )
            progress.update(images[-1].shape[0])
    return torch.cat(images), labels


def _generator_fingerprint() -> str:
    """A hash of this file: any change to the generator gets a new cache file, so a stale
    cache is never read (regenerating takes seconds)."""
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    except OSError:
        return f"v{VERSION}"


def cache_path(data_cfg) -> Path:
    size = data_cfg.image_size or 32
    counts = f"{data_cfg.trifeature_train}-{data_cfg.trifeature_test}"
    return cache_dir(data_cfg) / f"trifeature-{_generator_fingerprint()}-seed{GENERATOR_SEED}-{counts}-{size}.pt"


def load_trifeature(data_cfg) -> DataBundle:
    """Train and test splits, generated once per (counts, size) and cached as a .pt file."""
    path = cache_path(data_cfg)
    if path.is_file():
        stored = torch.load(path, weights_only=True)
    else:
        size = data_cfg.image_size or 32
        train, train_labels = generate(data_cfg.trifeature_train, size, GENERATOR_SEED, "generating Trifeature (train)")
        test, test_labels = generate(data_cfg.trifeature_test, size, GENERATOR_SEED + 1, "generating Trifeature (test)")
        stored = {"train": train, "test": test, "train_labels": train_labels, "test_labels": test_labels}
        # Write then rename: parallel trials that generate the same file never read half of it.
        staging = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        torch.save(stored, staging)
        os.replace(staging, path)
    mean, std = channel_stats(stored["train"])
    return DataBundle(
        "trifeature",
        stored["train"],
        dict(stored["train_labels"]),
        stored["test"],
        dict(stored["test_labels"]),
        {name: 10 for name in ATTRIBUTES},
        primary_label="shape",
        mean=mean,
        std=std,
    )
