"""Datasets (as uint8 tensors), per-sample device augmentation and index sampling."""

from __future__ import annotations

from contrastlab.data.augment import TwoViewAugment
from contrastlab.data.datasets import DataBundle, DatasetNotFound, read_idx
from contrastlab.data.registry import DATASETS, describe_datasets, load_dataset, prepare_dataset
from contrastlab.data.sampling import RandomBatches
from contrastlab.data.trifeature import PALETTE, SHAPES, TEXTURES

__all__ = [
    "DATASETS",
    "PALETTE",
    "SHAPES",
    "TEXTURES",
    "DataBundle",
    "DatasetNotFound",
    "RandomBatches",
    "TwoViewAugment",
    "describe_datasets",
    "load_dataset",
    "prepare_dataset",
    "read_idx",
]
