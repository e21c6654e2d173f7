"""The dataset registry: names, loading with subsets and resizing, and preparation."""

from __future__ import annotations

from collections.abc import Callable

from contrastlab.data.datasets import (
    DataBundle,
    load_cifar,
    load_fashion_mnist,
    load_image_folder,
    load_stl10,
    resize,
    subset_indices,
)
from contrastlab.data.trifeature import load_trifeature

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

# The test subset is drawn with a fixed seed, so every run (every seed and variant) is
# evaluated on the same test images and differences between runs come from training.
TEST_SUBSET_SEED = 0


def load_dataset(data_cfg, seed: int = 0) -> DataBundle:
    """Load one dataset (see `DATASETS`), take the seeded training subset, resize.

    `data.subset` caps the training images (and STL-10's pretraining pool) with a random,
    class-agnostic subset drawn from `seed`; `data.test_subset` caps the test images.
    """
    if data_cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {data_cfg.name!r}; expected one of {', '.join(DATASETS)}")
    bundle = DATASETS[data_cfg.name](data_cfg)
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
    bundle.train_images = resize(bundle.train_images, data_cfg.image_size)
    bundle.test_images = resize(bundle.test_images, data_cfg.image_size)
    if bundle.pretrain_images is not None:
        bundle.pretrain_images = resize(bundle.pretrain_images, data_cfg.image_size)
    return bundle


def describe_datasets() -> str:
    """One line per dataset, for `contrastlab data list`."""
    width = max(map(len, DESCRIPTIONS))
    return "\n".join(f"{name:<{width}}  {DESCRIPTIONS[name]}" for name in DATASETS)


def prepare_dataset(data_cfg) -> str:
    """Make a dataset available (check the files, download where allowed, generate and cache
    synthetic data); return one status line. Raises `DatasetNotFound` when it cannot."""
    bundle = DATASETS[data_cfg.name](data_cfg)
    pool = "" if bundle.pretrain_images is None else f" (+{bundle.pretrain_images.shape[0]} pretraining)"
    return (f"{data_cfg.name}: ready, {bundle.train_images.shape[0]} train{pool} / {bundle.test_images.shape[0]} "
            f"test images of {tuple(bundle.train_images.shape[1:])}")
