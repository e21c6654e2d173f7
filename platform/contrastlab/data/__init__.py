"""Datasets (as uint8 tensors), device augmentation and index sampling."""

from __future__ import annotations

from contrastlab.data.augment import TwoViewAugment
from contrastlab.data.datasets import (
    DataBundle,
    DatasetNotFound,
    cache_dir,
    channel_stats,
    load_cifar,
    load_fashion_mnist,
    load_image_folder,
    load_stl10,
    resize,
    take_subset,
)
from contrastlab.data.sampling import RandomBatches
from contrastlab.data.trifeature import PALETTE, load_trifeature


def _trifeature(data_cfg) -> DataBundle:
    stored = load_trifeature(data_cfg, cache_dir(data_cfg))
    train = stored["train"]
    mean, std = channel_stats(train)
    return DataBundle(
        "trifeature", train, dict(stored["train_labels"]), stored["test"], dict(stored["test_labels"]),
        {"shape": 10, "colour": 10, "texture": 10}, primary_label="shape", mean=mean, std=std,
    )


DATASETS = {
    "fashion_mnist": (load_fashion_mnist, "Fashion-MNIST, 60k/10k 28x28 grey (Debian dataset-fashion-mnist)"),
    "cifar10": (lambda c: load_cifar(c, 10), "CIFAR-10, 50k/10k 32x32 colour (torchvision files)"),
    "cifar100": (lambda c: load_cifar(c, 100), "CIFAR-100, 50k/10k 32x32 colour (torchvision files)"),
    "stl10": (load_stl10, "STL-10, 105k unlabelled+train / 8k test 96x96 colour (torchvision files)"),
    "image_folder": (load_image_folder, "your images: data.root/<class>/*.png|jpg"),
    "trifeature": (_trifeature, "synthetic shape x colour x texture, 32x32 (generated, cached)"),
}


def load_dataset(data_cfg, seed: int = 0) -> DataBundle:
    """Load, subset and resize one dataset (see `DATASETS`)."""
    loader, _ = DATASETS[data_cfg.name]
    bundle = loader(data_cfg)
    bundle.train_images, bundle.train_labels = take_subset(
        bundle.train_images, bundle.train_labels, data_cfg.subset, seed)
    bundle.test_images, bundle.test_labels = take_subset(
        bundle.test_images, bundle.test_labels, data_cfg.test_subset, seed + 1)
    if data_cfg.name != "trifeature":
        bundle.train_images = resize(bundle.train_images, data_cfg.image_size)
        bundle.test_images = resize(bundle.test_images, data_cfg.image_size)
        if bundle.pretrain_images is not None:
            bundle.pretrain_images = resize(bundle.pretrain_images, data_cfg.image_size)
    return bundle


def describe_datasets() -> str:
    width = max(map(len, DATASETS))
    return "\n".join(f"{name:<{width}}  {text}" for name, (_, text) in DATASETS.items())


def prepare_dataset(data_cfg) -> str:
    """Make a dataset available (check, download where allowed, generate); one status line."""
    bundle = DATASETS[data_cfg.name][0](data_cfg)
    return (f"{data_cfg.name}: ready, {bundle.train_images.shape[0]} train / {bundle.test_images.shape[0]} test "
            f"images of {tuple(bundle.train_images.shape[1:])}")


__all__ = [
    "DATASETS",
    "PALETTE",
    "DataBundle",
    "DatasetNotFound",
    "RandomBatches",
    "TwoViewAugment",
    "describe_datasets",
    "load_dataset",
    "prepare_dataset",
]
