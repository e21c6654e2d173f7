"""Datasets, sampling and the device augmentation."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from contrastlab.config import AugmentConfig, DataConfig
from contrastlab.data import PALETTE, DatasetNotFound, RandomBatches, TwoViewAugment, load_dataset
from contrastlab.data.datasets import FASHION_MNIST_SYSTEM_DIR, read_idx

HAS_FASHION = FASHION_MNIST_SYSTEM_DIR.is_dir()


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_parser_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), array)


def test_fashion_mnist_from_a_root_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, shape in [("train-images-idx3-ubyte.gz", (30, 28, 28)), ("t10k-images-idx3-ubyte.gz", (10, 28, 28))]:
        write_idx(tmp_path / name, rng.integers(0, 256, shape))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 30))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 10))
    bundle = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), subset=12), seed=3)
    assert bundle.train_images.shape == (12, 1, 28, 28) and bundle.train_images.dtype == torch.uint8
    assert bundle.test_images.shape == (10, 1, 28, 28)
    again = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), subset=12), seed=3)
    assert torch.equal(bundle.train_images, again.train_images)
    other = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), subset=12), seed=4)
    assert not torch.equal(bundle.train_labels["label"], other.train_labels["label"]) or not torch.equal(
        bundle.train_images, other.train_images)


@pytest.mark.skipif(not HAS_FASHION, reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_system_package():
    bundle = load_dataset(DataConfig(name="fashion_mnist", subset=500, test_subset=100))
    assert bundle.train_images.shape == (500, 1, 28, 28)
    labels = bundle.train_labels["label"]
    assert labels.min() >= 0 and labels.max() <= 9 and bundle.num_classes == {"label": 10}


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("contrastlab.data.datasets.FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    with pytest.raises(DatasetNotFound, match="download: true"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (40, 30), (i * 40, 10, 200 if cls == "cats" else 0)).save(tmp_path / cls / f"{i}.png")
    bundle = load_dataset(DataConfig(name="image_folder", root=str(tmp_path), image_size=16))
    assert bundle.train_images.shape[1:] == (3, 16, 16)
    assert bundle.train_images.shape[0] + bundle.test_images.shape[0] == 10 and bundle.num_classes == {"label": 2}


def trifeature(count=300, size=32):
    return load_dataset(DataConfig(name="trifeature", trifeature_train=count, trifeature_test=50, image_size=size))


def test_trifeature_colour_label_is_in_the_pixels():
    bundle = trifeature()
    palette = torch.tensor(PALETTE)
    images, colours = bundle.train_images, bundle.train_labels["colour"]
    pixels = images.permute(0, 2, 3, 1).reshape(images.shape[0], -1, 3).long()
    for index in range(images.shape[0]):
        present = (pixels[index][:, None, :] == palette[None]).all(-1).any(0)
        assert present.nonzero().flatten().tolist() == [colours[index].item()]


def test_trifeature_attributes_independent_and_visible():
    bundle = trifeature(600)
    labels = bundle.train_labels
    for name in ("shape", "colour", "texture"):
        assert labels[name].bincount(minlength=10).min() > 20
    background = (bundle.train_images == 128).all(1)
    area = (~background).float().mean((1, 2))
    assert area.min() > 0.05 and area.max() < 0.6
    same = (labels["shape"] == labels["shape"][0]) & (labels["colour"] == labels["colour"][0])
    tex = labels["texture"]
    assert len(set(tex[same].tolist())) >= 1 and bundle.num_classes == {"shape": 10, "colour": 10, "texture": 10}


def test_trifeature_is_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path))
    first = trifeature(100)
    assert list(tmp_path.glob("trifeature-*.pt"))
    second = trifeature(100)
    assert torch.equal(first.train_images, second.train_images)


def augment(channels=3, size=16, **overrides):
    cfg = AugmentConfig(**overrides)
    return TwoViewAugment(cfg, channels, size, (0.5,) * channels, (0.25,) * channels)


def test_augmentation_shapes_ranges_and_per_sample_randomness():
    images = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8).repeat(16, 1, 1, 1)
    aug = augment()
    out = aug(images, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 16, 16) and out.dtype == torch.float32
    raw = out * 0.25 + 0.5
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    distinct = {tuple(v.flatten()[:20].tolist()) for v in out}
    assert len(distinct) == 16


def test_flip_varies_per_sample():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 1, 16).expand(64, 1, 16, 16).contiguous() * 10
    aug = augment(channels=1, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    out = aug(image, torch.Generator().manual_seed(1))
    increasing = out[:, 0, 0, -1] > out[:, 0, 0, 0]
    assert 10 < increasing.sum() < 54


def test_seed_reproducibility_and_identity():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = augment()
    a = aug.two_views(images, torch.Generator().manual_seed(5))
    b = aug.two_views(images, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], a[1])
    identity = augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_prob=0.0, jitter_prob=0.0,
                       grayscale_prob=0.0)
    torch.testing.assert_close(identity(images, torch.Generator()), identity.normalize(images), atol=1e-5, rtol=0)
    torch.testing.assert_close(identity.normalize(images) * 0.25 + 0.5, images.float() / 255)


def test_one_channel_and_blur_and_grayscale():
    images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    out = augment(channels=1, blur_prob=1.0)(images, torch.Generator().manual_seed(0))
    assert out.shape == (6, 1, 16, 16) and torch.isfinite(out).all()
    colour = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    gray = augment(grayscale_prob=1.0, jitter_prob=0.0)(colour, torch.Generator().manual_seed(0))
    raw = gray * 0.25 + 0.5
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)


def test_random_batches_rank_slices_and_seeding():
    full = list(RandomBatches(100, 20, seed=7).epoch(0))
    parts = [list(RandomBatches(100, 20, seed=7, rank=r, world_size=2).epoch(0)) for r in range(2)]
    for step, batch in enumerate(full):
        joined = torch.cat([parts[0][step], parts[1][step]])
        assert torch.equal(joined, batch)
        assert not set(parts[0][step].tolist()) & set(parts[1][step].tolist())
    again = list(RandomBatches(100, 20, seed=7).epoch(0))
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    assert not torch.equal(full[0], next(RandomBatches(100, 20, seed=7).epoch(1)))
    assert len(full) == 5
    with pytest.raises(ValueError, match="fewer than one batch"):
        RandomBatches(10, 20, seed=0)


def test_data_list_and_prepare_commands(capsys):
    from contrastlab.cli import main

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("fashion_mnist", "cifar10", "stl10", "image_folder", "trifeature"))
    assert main(["data", "prepare"]) == 2
    assert "dataset name" in capsys.readouterr().err
