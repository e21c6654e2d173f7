"""Synthetic Trifeature data: the labels are in the pixels, generation is seeded and cached."""

from __future__ import annotations

import math

import pytest
import torch

from contrastlab.config import DataConfig
from contrastlab.data import PALETTE, load_dataset
from contrastlab.data import trifeature as tf


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cache = tmp_path_factory.mktemp("trifeature")
    return load_dataset(DataConfig(name="trifeature", trifeature_train=400, trifeature_test=40, cache_dir=str(cache)))


def foreground(images: torch.Tensor) -> torch.Tensor:
    return ~(images == tf.BACKGROUND).all(1)


def test_bundle_fields(bundle):
    # 10% of the generated training images are the validation split, stratified by shape.
    assert bundle.train_images.shape == (360, 3, 32, 32) and bundle.train_images.dtype == torch.uint8
    assert bundle.val_images.shape == (40, 3, 32, 32) and bundle.test_images.shape == (40, 3, 32, 32)
    assert bundle.val_labels["shape"].bincount(minlength=10).min() >= 3
    assert bundle.num_classes == {"shape": 10, "colour": 10, "texture": 10} and bundle.primary_label == "shape"
    attributes = {"shape", "colour", "texture"}
    assert set(bundle.train_labels) == set(bundle.val_labels) == set(bundle.test_labels) == attributes
    for labels in bundle.train_labels.values():
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
        assert labels.bincount(minlength=10).min() >= 20  # every value occurs
    assert len(bundle.mean) == len(bundle.std) == 3 and all(0 < s < 1 for s in bundle.std)


def test_colour_label_is_recoverable_from_pixels(bundle):
    images, colours = bundle.train_images, bundle.train_labels["colour"]
    palette, shades = torch.tensor(PALETTE), tf.off_shades()
    fg = foreground(images)
    pixels = images.permute(0, 2, 3, 1).long()
    for index in range(images.shape[0]):
        values = pixels[index][fg[index]].unique(dim=0)
        # Shape pixels are only the colour and its darker shade ...
        allowed = torch.stack([palette[colours[index]], shades[colours[index]]])
        assert (values[:, None] == allowed[None]).all(-1).any(1).all()
        # ... and the brightest one, read by nearest palette colour, gives the label exactly.
        brightest = values[values.sum(1).argmax()]
        assert (palette - brightest).abs().sum(1).argmin() == colours[index]


def test_texture_label_is_recoverable_from_pixels(bundle):
    """Within each shape, the on/off pattern matches its own texture (at some phase) and no other."""
    images, textures = bundle.train_images, bundle.train_labels["texture"]
    fg = foreground(images)
    palette = torch.tensor(PALETTE, dtype=torch.uint8)[bundle.train_labels["colour"]]
    on = (images == palette[:, :, None, None]).all(1)
    pixel = torch.arange(32)
    candidates = []
    for phase_x in range(4):  # every pattern has period 4 in x and y
        for phase_y in range(4):
            x = (pixel.view(1, 1, 32) + phase_x).expand(10, 32, 32)
            y = (pixel.view(1, 32, 1) + phase_y).expand(10, 32, 32)
            candidates.append(tf.texture_patterns(torch.arange(10), x, y))
    candidates = torch.stack(candidates, 1)  # [texture, phase, H, W]
    mismatch = ((candidates[None] != on[:, None, None]) & fg[:, None, None]).sum((-1, -2))
    matching = (mismatch == 0).any(2)  # [N, texture]
    assert torch.equal(matching, torch.nn.functional.one_hot(textures, 10).bool())


def test_shapes_are_distinct_and_inside_the_image(bundle):
    centre = torch.arange(32, dtype=torch.float64) + 0.5 - 16
    v, u = torch.meshgrid(centre, centre, indexing="ij")
    masks = tf.shape_masks(
        torch.arange(10), u.expand(10, 32, 32), v.expand(10, 32, 32), torch.full((10, 1, 1), 9.0, dtype=torch.float64)
    )
    inter = (masks[:, None] & masks[None]).sum((-1, -2)).double()
    union = (masks[:, None] | masks[None]).sum((-1, -2)).double()
    iou = inter / union
    assert (iou - torch.eye(10)).max() < 0.85  # no two shapes nearly the same mask
    fg = foreground(bundle.train_images)
    border = fg[:, 0].any() | fg[:, -1].any() | fg[:, :, 0].any() | fg[:, :, -1].any()
    assert not border  # the whole shape is always visible
    area = fg.float().mean((1, 2))
    shapes = bundle.train_labels["shape"]
    mean_area = torch.stack([area[shapes == s].mean() for s in range(10)])
    name = {n: i for i, n in enumerate(tf.SHAPES)}
    assert mean_area[name["circle"]] > mean_area[name["ring"]] and mean_area[name["square"]] > mean_area[name["cross"]]
    assert area.min() > 0.04 and area.max() < 0.6


def test_rotation_moves_the_pixels():
    shape = torch.full((2,), tf.SHAPES.index("triangle"))
    a = tf.render(
        shape, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 32, torch.Generator().manual_seed(1)
    )
    assert not torch.equal(a[0], a[1])  # same attributes, different pose


def test_generation_is_deterministic_and_sized():
    first, labels = tf.generate(50, 24, seed=3)
    again, labels_again = tf.generate(50, 24, seed=3)
    other, _ = tf.generate(50, 24, seed=4)
    assert first.shape == (50, 3, 24, 24)
    assert torch.equal(first, again) and all(torch.equal(labels[k], labels_again[k]) for k in labels)
    assert not torch.equal(first, other)


def test_cached_once_and_independent_of_the_run_seed(tmp_path, monkeypatch):
    cfg = DataConfig(name="trifeature", trifeature_train=30, trifeature_test=10, image_size=16, cache_dir=str(tmp_path))
    first = load_dataset(cfg, seed=0)
    files = list(tmp_path.glob("trifeature-*.pt"))
    assert len(files) == 1 and "-30-10-16" in files[0].name and not list(tmp_path.glob("*.tmp"))
    assert first.train_images.shape[0] + first.val_images.shape[0] == 30

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(tf, "generate", fail)
    second = load_dataset(cfg, seed=5)  # another run seed reads the same cached images
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels["shape"], second.test_labels["shape"])


def test_train_and_test_differ(bundle):
    # Different generator streams: the test set is not a copy of the first training images.
    assert not torch.equal(bundle.test_images, bundle.train_images[: bundle.test_images.shape[0]])
    assert math.isclose(bundle.train_images.float().mean().item() / 255, sum(bundle.mean) / 3, abs_tol=0.02)
