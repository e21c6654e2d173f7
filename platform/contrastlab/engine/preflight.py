"""Checks of a run's request against this machine and its data, before anything is written.

Each fails with one line naming the config file and the field (`ConfigError`), where the
same problem would otherwise surface as a traceback from torch or from the sampler.
"""

from __future__ import annotations

import torch

from contrastlab.config import ExperimentConfig
from contrastlab.errors import ConfigError


def check_device(cfg: ExperimentConfig, source: str) -> None:
    """`resources.device: cuda` needs a GPU this process can see (in-process runs)."""
    if cfg.resources.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            source, "resources.device", "auto or cpu on this machine (cuda was asked, but no CUDA device is visible)"
        )


def training_images(bundle) -> int:
    """How many images pretraining draws from (the unlabelled pool where a dataset has one)."""
    pool = getattr(bundle, "pretrain_images", None)
    return int((pool if pool is not None else bundle.train_images).shape[0])


def check_batch_fits(cfg: ExperimentConfig, images: int, source: str) -> None:
    """One global batch must fit in the training set (every epoch drops the partial batch)."""
    if cfg.optim.batch_size > images:
        raise ConfigError(
            source,
            "optim.batch_size",
            f"at most the {images} training images of {cfg.data.name} (got {cfg.optim.batch_size})",
        )


__all__ = ["check_batch_fits", "check_device", "training_images"]
