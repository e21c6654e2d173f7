"""Trifeature images (after Hermann & Lampinen, NeurIPS 2020): shape × colour × texture.

Each image has one of 10 shapes, 10 colours and 10 textures, drawn independently. The
shape mask (random position, size and rotation) is filled with the texture in the colour:
texture "on" pixels take the exact palette colour, "off" pixels a darker shade of it, on
a neutral grey background. Hard masks keep the palette colours exact, so the colour label
can be read back from the pixels. Texture periods are 2–6 pixels so they survive at 32×32.
The data set is generated with a fixed seed (the same for every experiment), vectorised
over images, and cached.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

GENERATOR_SEED = 20200601
VERSION = 1
SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "ring", "crescent", "ellipse")
TEXTURES = ("solid", "h_stripes", "v_stripes", "diagonal", "anti_diagonal", "checker2", "dots", "checker4",
            "thick_stripes", "grid")
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (250, 190, 212), (128, 128, 0),
)
BACKGROUND = 128
OFF_SHADE = 0.45


def _polygon(r: torch.Tensor, theta: torch.Tensor, sides: int, radius: torch.Tensor) -> torch.Tensor:
    sector = 2 * math.pi / sides
    local = torch.remainder(theta, sector) - sector / 2
    return r * torch.cos(local) < radius * math.cos(math.pi / sides)


def shape_masks(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """[N, S, S] masks of each image's shape in its own (rotated, centred) frame."""
    r = torch.sqrt(u**2 + v**2)
    theta = torch.atan2(v, u)
    R = radius
    masks = torch.stack([
        r < R,
        torch.maximum(u.abs(), v.abs()) < 0.8 * R,
        _polygon(r, theta, 3, R),
        _polygon(r, theta, 5, R),
        _polygon(r, theta, 6, R),
        r < R * (0.55 + 0.45 * torch.cos(5 * theta)),
        ((u.abs() < 0.3 * R) & (v.abs() < R)) | ((v.abs() < 0.3 * R) & (u.abs() < R)),
        (r < R) & (r > 0.5 * R),
        (r < R) & (torch.sqrt((u - 0.45 * R) ** 2 + v**2) > 0.75 * R),
        (u / R) ** 2 + (v / (0.5 * R)) ** 2 < 1,
    ])
    index = labels.view(1, -1, 1, 1).expand(1, *masks.shape[1:])
    return masks.gather(0, index)[0]


def texture_patterns(labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[N, S, S] on/off patterns in image coordinates (x, y integer pixel grids + phase)."""
    patterns = torch.stack([
        torch.ones_like(x, dtype=torch.bool),
        (y % 4) < 2,
        (x % 4) < 2,
        ((x + y) % 4) < 2,
        ((x - y) % 4) < 2,
        ((x // 2 + y // 2) % 2) == 0,
        ((x % 4) < 2) & ((y % 4) < 2),
        ((x // 4 + y // 4) % 2) == 0,
        (y % 6) < 3,
        ((x % 4) == 0) | ((y % 4) == 0),
    ])
    index = labels.view(1, -1, 1, 1).expand(1, *patterns.shape[1:])
    return patterns.gather(0, index)[0]


def render(shape: torch.Tensor, colour: torch.Tensor, texture: torch.Tensor, size: int,
           generator: torch.Generator) -> torch.Tensor:
    """uint8 [N, 3, size, size] images for the given attribute labels."""
    n = shape.shape[0]
    radius = size * (0.26 + 0.08 * torch.rand(n, generator=generator))
    margin = radius + 1
    cx = margin + (size - 2 * margin) * torch.rand(n, generator=generator)
    cy = margin + (size - 2 * margin) * torch.rand(n, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    phase = torch.randint(0, 12, (n, 2), generator=generator)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    dx, dy = xs[None] - cx.view(n, 1, 1), ys[None] - cy.view(n, 1, 1)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = shape_masks(shape, u, v, radius.view(n, 1, 1))
    xi = xs.long()[None] + phase[:, 0].view(n, 1, 1)
    yi = ys.long()[None] + phase[:, 1].view(n, 1, 1)
    on = texture_patterns(texture, xi, yi)
    palette = torch.tensor(PALETTE, dtype=torch.float32)[colour].view(n, 3, 1, 1)
    fill = torch.where(on[:, None], palette, (palette * OFF_SHADE).round())
    image = torch.where(mask[:, None], fill, torch.full_like(fill, BACKGROUND))
    return image.to(torch.uint8)


def generate(count: int, size: int, seed: int, chunk: int = 2000) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    labels = {name: torch.randint(0, 10, (count,), generator=generator) for name in ("shape", "colour", "texture")}
    images = [
        render(labels["shape"][s : s + chunk], labels["colour"][s : s + chunk], labels["texture"][s : s + chunk],
               size, generator)
        for s in range(0, count, chunk)
    ]
    return torch.cat(images), labels


def load_trifeature(data_cfg, cache: Path):
    """Train and test splits, generated once per (counts, size) and cached as a .pt file."""
    size = data_cfg.image_size or 32
    name = f"trifeature-v{VERSION}-{data_cfg.trifeature_train}-{data_cfg.trifeature_test}-{size}.pt"
    path = cache / name
    if path.is_file():
        stored = torch.load(path, weights_only=True)
    else:
        train, train_labels = generate(data_cfg.trifeature_train, size, GENERATOR_SEED)
        test, test_labels = generate(data_cfg.trifeature_test, size, GENERATOR_SEED + 1)
        stored = {"train": train, "test": test, "train_labels": train_labels, "test_labels": test_labels}
        staging = path.with_suffix(f".tmp{torch.randint(0, 10**9, ()).item()}")
        torch.save(stored, staging)
        staging.replace(path)
    return stored
