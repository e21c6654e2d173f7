"""Datasets (IDX parsing, Fashion-MNIST, image folders, subsets, errors) and index sampling."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from contrastlab.config import DataConfig
from contrastlab.data import (
    DATASETS,
    DatasetNotFound,
    RandomBatches,
    describe_datasets,
    load_dataset,
    prepare_dataset,
    read_idx,
)
from tests.helpers import needs_fashion


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with (gzip.open if compress else open)(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(folder, train=30, test=10, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_parser_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.gz" if compress else "x")
    write_idx(path, array, compress)
    parsed = read_idx(path)
    assert parsed.shape == (2, 3, 4) and parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, array)


def test_idx_parser_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")  # float IDX
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 5)), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_a_root_folder(tmp_path):
    arrays = fake_fashion(tmp_path)
    bundle = load_dataset(DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path)), seed=0)
    assert bundle.train_images.shape == (30, 1, 28, 28) and bundle.train_images.dtype == torch.uint8
    assert bundle.test_images.shape == (10, 1, 28, 28) and bundle.test_images.dtype == torch.uint8
    np.testing.assert_array_equal(bundle.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(bundle.test_labels["label"].numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert bundle.train_labels["label"].dtype == torch.int64
    assert (bundle.channels, bundle.image_size, bundle.primary_label) == (1, 28, "label")
    assert bundle.num_classes == {"label": 10} and len(bundle.mean) == len(bundle.std) == 1
    assert bundle.pretrain_images is None and bundle.pretraining_images is bundle.train_images


def test_fashion_mnist_in_torchvision_layout(tmp_path):
    fake_fashion(tmp_path / "FashionMNIST" / "raw", train=12, test=4)
    bundle = load_dataset(DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path)))
    assert bundle.train_images.shape == (12, 1, 28, 28)


def test_subsets_are_seeded_and_the_test_subset_is_fixed(tmp_path):
    fake_fashion(tmp_path, train=40, test=20)
    cfg = DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path), subset=12, test_subset=5)
    first, again, other = (load_dataset(cfg, seed=s) for s in (3, 3, 4))
    assert first.train_images.shape == (12, 1, 28, 28) and first.test_images.shape == (5, 1, 28, 28)
    assert torch.equal(first.train_images, again.train_images)
    assert torch.equal(first.train_labels["label"], again.train_labels["label"])
    assert not torch.equal(first.train_images, other.train_images)
    # Every seed is evaluated on the same test images.
    assert torch.equal(first.test_images, other.test_images)
    # The subset is a subset: every kept image is one of the originals, none repeated.
    full = load_dataset(DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path)))
    matches = (first.train_images.flatten(1)[:, None] == full.train_images.flatten(1)[None]).all(-1)
    assert matches.any(1).all() and matches.sum(0).max() == 1


def test_resize_to_image_size(tmp_path):
    fake_fashion(tmp_path, train=8, test=4)
    bundle = load_dataset(DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path), image_size=16))
    assert bundle.train_images.shape == (8, 1, 16, 16) and bundle.train_images.dtype == torch.uint8
    assert bundle.test_images.shape == (4, 1, 16, 16) and bundle.image_size == 16


@needs_fashion
def test_fashion_mnist_system_package():
    bundle = load_dataset(DataConfig(val_size=0, name="fashion_mnist"))
    assert bundle.train_images.shape == (60000, 1, 28, 28) and bundle.test_images.shape == (10000, 1, 28, 28)
    labels = bundle.train_labels["label"]
    assert labels.min() == 0 and labels.max() == 9 and labels.bincount().tolist() == [6000] * 10
    mean = bundle.train_images.float().mean() / 255
    assert abs(mean.item() - bundle.mean[0]) < 0.01


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr("contrastlab.data.datasets.FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DatasetNotFound) as err:
        load_dataset(DataConfig(val_size=0, name="fashion_mnist", root=str(tmp_path)))
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download: true" in message
    assert "contrastlab data prepare" in message and isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetNotFound, match="download: true"):
        load_dataset(DataConfig(val_size=0, name="cifar10", root=str(tmp_path)))
    with pytest.raises(DatasetNotFound, match="data.root"):
        load_dataset(DataConfig(val_size=0, name="image_folder", root=str(tmp_path / "missing")))


class FakeCifar:
    """Stands in for torchvision's CIFAR10: NHWC uint8 `data` and list `targets`."""

    def __init__(self, root, train=True, download=False):
        count = 20 if train else 6
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, count).tolist()


class FakeStl:
    """Stands in for torchvision's STL10: NCHW uint8 `data`, int labels (-1 when unlabelled)."""

    def __init__(self, root, split="train", download=False):
        count = {"train": 10, "test": 8, "unlabeled": 30}[split]
        self.data = np.full((count, 3, 96, 96), {"train": 1, "test": 2, "unlabeled": 3}[split], dtype=np.uint8)
        self.labels = np.full(count, -1 if split == "unlabeled" else 4, dtype=np.int64)


def test_cifar_is_converted_to_nchw(monkeypatch, tmp_path):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    bundle = load_dataset(DataConfig(val_size=0, name="cifar10", root=str(tmp_path)))
    source = FakeCifar(None, train=True)
    assert bundle.train_images.shape == (20, 3, 32, 32) and bundle.train_images.is_contiguous()
    np.testing.assert_array_equal(bundle.train_images.permute(0, 2, 3, 1).numpy(), source.data)
    assert bundle.train_labels["label"].tolist() == source.targets and bundle.test_images.shape[0] == 6
    assert bundle.channels == 3 and len(bundle.mean) == 3 and bundle.pretrain_images is None


def test_stl10_pretrains_on_train_and_unlabelled(monkeypatch, tmp_path):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "STL10", FakeStl)
    bundle = load_dataset(DataConfig(val_size=0, name="stl10", root=str(tmp_path), image_size=32))
    assert bundle.train_images.shape == (10, 3, 32, 32) and bundle.test_images.shape == (8, 3, 32, 32)
    assert bundle.pretrain_images.shape == (40, 3, 32, 32)
    assert torch.equal(bundle.pretraining_images.flatten(1)[:, 0].unique(), torch.tensor([1, 3], dtype=torch.uint8))
    assert bundle.train_labels["label"].unique().tolist() == [4]
    small = load_dataset(DataConfig(val_size=0, name="stl10", root=str(tmp_path), subset=5))
    assert small.train_images.shape[0] == 5 and small.pretrain_images.shape[0] == 5


def make_image_folder(root, classes=("cats", "dogs"), count=5) -> None:
    from PIL import Image

    for index, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (i * 40, 10, 200 * index)).save(root / cls / f"{i}.png")


def test_image_folder_split_and_resize(tmp_path):
    make_image_folder(tmp_path, count=10)
    bundle = load_dataset(DataConfig(val_size=0, name="image_folder", root=str(tmp_path), image_size=16))
    assert bundle.train_images.shape[1:] == (3, 16, 16) and bundle.train_images.dtype == torch.uint8
    assert (bundle.train_images.shape[0], bundle.test_images.shape[0]) == (18, 2)
    assert bundle.num_classes == {"label": 2} and set(bundle.train_labels["label"].tolist()) == {0, 1}
    # Blue channel tells the classes apart: labels follow the folders.
    blue = bundle.train_images[:, 2].float().mean((1, 2))
    assert torch.equal(blue > 100, bundle.train_labels["label"] == 1)
    again = load_dataset(DataConfig(val_size=0, name="image_folder", root=str(tmp_path), image_size=16), seed=9)
    assert torch.equal(bundle.test_images, again.test_images)  # the split does not depend on the run seed


def test_image_folder_with_train_and_test(tmp_path):
    make_image_folder(tmp_path / "train", count=4)
    make_image_folder(tmp_path / "test", count=2)
    bundle = load_dataset(DataConfig(val_size=0, name="image_folder", root=str(tmp_path)))
    assert bundle.train_images.shape == (8, 3, 32, 32) and bundle.test_images.shape == (4, 3, 32, 32)
    assert bundle.test_labels["label"].tolist() == [0, 0, 1, 1]


def test_registry_and_prepare(tmp_path):
    assert set(DATASETS) == {"fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder", "trifeature"}
    listing = describe_datasets()
    assert all(name in listing for name in DATASETS) and len(listing.splitlines()) == len(DATASETS)
    status = prepare_dataset(
        DataConfig(val_size=0, name="trifeature", trifeature_train=20, trifeature_test=10, cache_dir=str(tmp_path))
    )
    assert "\n" not in status and "20 train" in status and "10 test" in status
    assert list(tmp_path.glob("trifeature-*.pt"))


def test_data_list_and_prepare_commands(capsys):
    from contrastlab.cli import main

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in DATASETS)
    assert main(["data", "prepare"]) == 2
    assert "dataset name" in capsys.readouterr().err


# -- RandomBatches --------------------------------------------------------------------------
def test_random_batches_cover_an_epoch_without_repeats():
    sampler = RandomBatches(103, 20, seed=7)
    batches = list(sampler.epoch(0))
    assert len(sampler) == len(batches) == 5 and all(b.shape == (20,) and b.dtype == torch.int64 for b in batches)
    seen = torch.cat(batches)
    assert seen.unique().numel() == 100 and seen.min() >= 0 and seen.max() < 103
    tail = list(RandomBatches(103, 20, seed=7, drop_last=False).epoch(0))
    assert len(tail) == 6 and tail[-1].shape == (3,) and torch.cat(tail).sort().values.tolist() == list(range(103))


def test_random_batches_rank_slices_and_seeding():
    full = list(RandomBatches(100, 20, seed=7).epoch(0))
    parts = [list(RandomBatches(100, 20, seed=7, rank=r, world_size=4).epoch(0)) for r in range(4)]
    for step, batch in enumerate(full):
        slices = [part[step] for part in parts]
        assert all(s.shape == (5,) for s in slices)
        assert torch.equal(torch.cat(slices), batch)  # together they are the global batch
        assert len(set(torch.cat(slices).tolist())) == 20  # and they are disjoint
    again = list(RandomBatches(100, 20, seed=7).epoch(0))
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    assert not torch.equal(torch.cat(full), torch.cat(list(RandomBatches(100, 20, seed=7).epoch(1))))
    assert not torch.equal(torch.cat(full), torch.cat(list(RandomBatches(100, 20, seed=8).epoch(0))))


def test_random_batches_reject_bad_sizes():
    with pytest.raises(ValueError, match="fewer than one batch"):
        RandomBatches(10, 20, seed=0)
    with pytest.raises(ValueError, match="split evenly"):
        RandomBatches(100, 20, seed=0, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        RandomBatches(100, 20, seed=0, rank=2, world_size=2)


# -- the validation split ---------------------------------------------------------------------
def _rows(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.flatten(1)}


def test_val_is_carved_from_train_stratified_and_fixed_by_the_split_seed(tmp_path):
    arrays = fake_fashion(tmp_path, train=400, test=10)
    cfg = DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=100)
    first, other_seed = load_dataset(cfg, seed=0), load_dataset(cfg, seed=5)
    assert first.val_images.shape[0] == 100 and first.train_images.shape[0] == 300
    # Disjoint and complete: train part + val is the whole training split.
    assert not _rows(first.val_images) & _rows(first.train_images)
    source = torch.from_numpy(arrays["train-images-idx3-ubyte.gz"].astype(np.uint8)).unsqueeze(1)
    assert _rows(first.val_images) | _rows(first.train_images) == _rows(source)
    # Stratified: each class's share of val is its share of the training split, within one image.
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte.gz"].astype(np.int64))
    expected = labels.bincount(minlength=10).double() * 100 / 400
    got = first.val_labels["label"].bincount(minlength=10).double()
    assert (got - expected).abs().max() < 1.0 + 1e-9 and int(got.sum()) == 100
    # The run seed never moves images between train and val; the split seed does.
    assert torch.equal(first.val_images, other_seed.val_images)
    moved = load_dataset(cfg.model_copy(update={"split_seed": 1}), seed=0)
    assert not torch.equal(first.val_images, moved.val_images)


def test_val_size_default_fraction_and_off(tmp_path):
    fake_fashion(tmp_path, train=300, test=10)
    default = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert default.val_images.shape[0] == 30 and default.has_val  # 10%
    fraction = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=0.2))
    assert fraction.val_images.shape[0] == 60 and fraction.train_images.shape[0] == 240
    off = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=0))
    assert not off.has_val and off.train_images.shape[0] == 300


def test_subset_is_drawn_from_the_train_part_only(tmp_path):
    fake_fashion(tmp_path, train=200, test=10)
    bundle = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), val_size=50, subset=120), seed=3)
    assert bundle.train_images.shape[0] == 120 and bundle.val_images.shape[0] == 50
    assert not _rows(bundle.val_images) & _rows(bundle.train_images)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"val_size": 200}, "data.val_size", "fewer validation images"),
        ({"val_size": 50, "subset": 151}, "data.subset", "at most the 150"),
    ],
)
def test_split_sizes_the_data_cannot_give_are_refused(tmp_path, fields, field, words):
    from contrastlab.config import ConfigError

    fake_fashion(tmp_path, train=200, test=10)
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path), **fields), source="exp.yaml")
    assert err.value.source == "exp.yaml" and err.value.field == field and words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", [-1, 1.0, 0.0, 1.5, True])
def test_val_size_must_be_a_count_or_a_fraction(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DataConfig(val_size=value)


def test_stl10_val_never_reaches_the_pretraining_pool(monkeypatch, tmp_path):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "STL10", FakeStl)
    bundle = load_dataset(DataConfig(name="stl10", root=str(tmp_path), image_size=32, val_size=4))
    assert bundle.val_images.shape[0] == 4 and bundle.train_images.shape[0] == 6
    assert bundle.pretrain_images.shape[0] == 6 + 30


@needs_fashion
def test_fashion_mnist_default_split_is_5000_balanced_val_images():
    bundle = load_dataset(DataConfig(name="fashion_mnist"))
    assert bundle.train_images.shape[0] == 55000 and bundle.val_images.shape[0] == 5000
    assert bundle.val_labels["label"].bincount().tolist() == [500] * 10
