"""The dataset registry: names, loading with subsets and resizing, and preparation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from contrastlab.data.datasets import (
    DataBundle,
    load_cifar,
    load_fashion_mnist,
    load_image_folder,
    load_stl10,
    resize,
    stratified_split,
    subset_indices,
    val_count,
)
from contrastlab.data.trifeature import load_trifeature
from contrastlab.errors import ConfigError
from contrastlab.progress import Progress
from contrastlab.sections import DATASET_NAMES

DATASETS: dict[str, Callable[..., DataBundle]] = {
    "fashion_mnist": load_fashion_mnist,
    "cifar10": lambda data_cfg: load_cifar(data_cfg, 10),
    "cifar100": lambda data_cfg: load_cifar(data_cfg, 100),
    "stl10": load_stl10,
    "image_folder": load_image_folder,
    "trifeature": load_trifeature,
}

DESCRIPTIONS = {
    "fashion_mnist": "Fashion-MNIST, 60k/10k 28x28 grey, 10 classes (Debian package dataset-fashion-mnist)",
    "cifar10": "CIFAR-10, 50k/10k 32x32 colour, 10 classes (torchvision files; data.download)",
    "cifar100": "CIFAR-100, 50k/10k 32x32 colour, 100 classes (torchvision files; data.download)",
    "stl10": "STL-10, pretrain on 105k train+unlabelled, probe on 5k/8k, 96x96 colour (torchvision files)",
    "image_folder": "your images: data.root/<class>/*.png|jpg, or root/train and root/test",
    "trifeature": "synthetic shape x colour x texture (10 each), 32x32 by default (generated once, cached)",
}

# The names come from `contrastlab.sections.DATASET_NAMES` (what the config accepts and the
# CLI offers); every name needs a loader and a description here, and nothing else may be.
if not set(DATASETS) == set(DESCRIPTIONS) == set(DATASET_NAMES):
    raise ImportError(f"the data registry must cover exactly the dataset names {DATASET_NAMES}")

# The test subset is drawn with a fixed seed, so every run (every seed and variant) is
# evaluated on the same test images and differences between runs come from training.
TEST_SUBSET_SEED = 0


def _carve_val(bundle: DataBundle, data_cfg, source: str) -> None:
    """Move `data.val_size` images of the training split into `val` (stratified, fixed by
    `data.split_seed`); what stays is the train part that pretraining and the probes use."""
    count = _checked_val_count(data_cfg, bundle.train_images.shape[0], source)
    train, val = stratified_split(bundle.train_labels[bundle.primary_label], count, data_cfg.split_seed)
    bundle.val_images = bundle.train_images[val]
    bundle.val_labels = {k: v[val] for k, v in bundle.train_labels.items()}
    bundle.train_images = bundle.train_images[train]
    bundle.train_labels = {k: v[train] for k, v in bundle.train_labels.items()}


# Training-split sizes known without reading the files, so a spec can be checked before Ray
# starts; image folders are counted when they are loaded.
def _known_train_size(data_cfg) -> int | None:
    return {
        "fashion_mnist": 60000,
        "cifar10": 50000,
        "cifar100": 50000,
        "stl10": 5000,
        "trifeature": data_cfg.trifeature_train,
    }.get(data_cfg.name)


def check_split_sizes(data_cfg, source: str) -> None:
    """The val size and subset that `load_dataset` would refuse, refused before any data is read
    (for datasets whose size is known in advance)."""
    total = _known_train_size(data_cfg)
    if total is None:
        return
    count = _checked_val_count(data_cfg, total, source)
    if data_cfg.name != "stl10":  # its pretraining pool adds the unlabelled images
        _check_subset(data_cfg.subset, total - count, data_cfg, source)


def known_train_part(data_cfg) -> int | None:
    """How many images pretraining draws from, for datasets whose size is known without reading
    them (None otherwise, and for STL-10's unlabelled pool)."""
    total = _known_train_size(data_cfg)
    if total is None or data_cfg.name == "stl10":
        return None
    available = total - val_count(data_cfg.val_size, total)
    return min(available, data_cfg.subset) if data_cfg.subset else available


def _checked_val_count(data_cfg, total: int, source: str) -> int:
    """How many of `total` training images `data.val_size` moves to val; refused when none would stay."""
    count = val_count(data_cfg.val_size, total)
    if count >= total:
        raise ConfigError(
            source,
            "data.val_size",
            f"fewer validation images than the {total} of the training split of {data_cfg.name} (got {count})",
        )
    return count


def _check_subset(count: int | None, available: int, data_cfg, source: str) -> None:
    if count is not None and count > available:
        raise ConfigError(
            source,
            "data.subset",
            f"at most the {available} training images {data_cfg.name} has after the validation split (got {count})",
        )


def load_dataset(data_cfg, seed: int = 0, source: str = "data") -> DataBundle:
    """Load one dataset (see `DATASETS`), carve the validation split, take the seeded training
    subset, resize.

    Validation images come out of the full training split first, with `data.split_seed`, so
    every run seed and variant is measured on the same images. `data.subset` then caps the
    training part (and STL-10's pretraining pool) with a random, class-agnostic subset drawn
    from `seed`; `data.test_subset` caps the test images. A subset larger than what is left is
    refused (`ConfigError`), never silently clamped.
    """
    if data_cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {data_cfg.name!r}; expected one of {', '.join(DATASETS)}")
    with Progress(f"loading {data_cfg.name}"):  # the whole step, timed; its parts log their own progress
        return _load(data_cfg, seed, source)


def _load(data_cfg, seed: int, source: str) -> DataBundle:
    bundle = DATASETS[data_cfg.name](data_cfg)
    _carve_val(bundle, data_cfg, source)
    if bundle.unlabeled_images is not None:
        bundle.pretrain_images = torch.cat([bundle.train_images, bundle.unlabeled_images])
        bundle.unlabeled_images = None
    _check_subset(data_cfg.subset, bundle.pretraining_images.shape[0], data_cfg, source)
    index = subset_indices(bundle.train_images.shape[0], data_cfg.subset, seed)
    if index is not None:
        bundle.train_images = bundle.train_images[index]
        bundle.train_labels = {k: v[index] for k, v in bundle.train_labels.items()}
    if bundle.pretrain_images is not None:
        index = subset_indices(bundle.pretrain_images.shape[0], data_cfg.subset, seed)
        if index is not None:
            bundle.pretrain_images = bundle.pretrain_images[index]
    index = subset_indices(bundle.test_images.shape[0], data_cfg.test_subset, TEST_SUBSET_SEED)
    if index is not None:
        bundle.test_images = bundle.test_images[index]
        bundle.test_labels = {k: v[index] for k, v in bundle.test_labels.items()}
    # Resizing after subsetting touches only the images that are kept (Trifeature and image
    # folders are made at the requested size already, so this is a no-op for them).
    size = data_cfg.image_size
    bundle.train_images = resize(bundle.train_images, size, what="resizing train images")
    bundle.val_images = resize(bundle.val_images, size, what="resizing val images")
    bundle.test_images = resize(bundle.test_images, size, what="resizing test images")
    if bundle.pretrain_images is not None:
        bundle.pretrain_images = resize(bundle.pretrain_images, size, what="resizing pretraining images")
    return bundle


def describe_datasets() -> str:
    """One line per dataset, for `contrastlab data list`."""
    width = max(map(len, DESCRIPTIONS))
    return "\n".join(f"{name:<{width}}  {DESCRIPTIONS[name]}" for name in DATASETS)


def prepare_dataset(data_cfg) -> str:
    """Make a dataset available (check the files, download where allowed, generate and cache
    synthetic data); return one status line. Raises `DatasetNotFound` when it cannot."""
    with Progress(f"preparing {data_cfg.name}"):
        bundle = DATASETS[data_cfg.name](data_cfg)
    total = bundle.train_images.shape[0]
    val = val_count(data_cfg.val_size, total)
    pool = "" if bundle.unlabeled_images is None else f" (+{bundle.unlabeled_images.shape[0]} unlabelled)"
    return (
        f"{data_cfg.name}: ready, {total - val} train + {val} val{pool} / {bundle.test_images.shape[0]} "
        f"test images of {tuple(bundle.train_images.shape[1:])}"
    )
