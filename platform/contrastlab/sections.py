"""The sections of an experiment config, and the base of every method's config.

Below both `contrastlab.config` (which assembles them into `ExperimentConfig` and
dispatches the method section by name) and the methods (whose configs subclass
`MethodConfig`), so the methods never import `contrastlab.config`. Importing this module
stays light: no torch.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The dataset names, once: config validation, the data registry and the CLI read them here.
DatasetName = Literal["fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder", "trifeature"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)


class Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `temperature: .nan` is refused here, not hours later as a NaN loss.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    """Which images to pretrain and evaluate on."""

    name: DatasetName = "fashion_mnist"
    root: str | None = Field(None, description="folder holding the dataset files")
    download: bool = Field(False, description="let torchvision download missing files")
    subset: int | None = Field(None, ge=1, description="train on a seeded random subset of this size")
    test_subset: int | None = Field(None, ge=1, description="evaluate on this many test images")
    val_size: int | float | None = Field(
        None,
        description="validation images carved from the training split: a count, a fraction in (0, 1), "
        "or None for 10% capped at 5,000; 0 switches validation off (plain train runs only)",
    )
    split_seed: int = Field(0, ge=0, description="seed of the train/val split (the same for every run seed)")
    image_size: int | None = Field(None, ge=8, le=512, description="resize images (None: native)")
    trifeature_train: int = Field(10000, ge=10)
    trifeature_test: int = Field(2000, ge=10)
    cache_dir: str | None = Field(None, description="cache for generated data (default ~/.cache/contrastlab)")

    @field_validator("val_size", mode="before")
    @classmethod
    def _val_size_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML `true` would otherwise pass as the count 1
            raise ValueError("a count (int >= 0), a fraction in (0, 1), or null")
        return value

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError("a fraction strictly between 0 and 1, or a whole count of images")
        if isinstance(value, int) and value < 0:
            raise ValueError("a count of at least 0")
        return value


class AugmentConfig(Section):
    """Per-sample two-view augmentation, applied on the device."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = Field(0.5, ge=0, le=1)
    jitter_prob: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale_prob: float = Field(0.2, ge=0, le=1)
    blur_prob: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @field_validator("crop_scale", "crop_ratio", "blur_sigma")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("a pair [low, high] with 0 < low <= high")
        return value


class ModelConfig(Section):
    """Encoder and projection head."""

    encoder: Literal["small_cnn", "resnet18", "resnet34", "resnet50", "alexnet"] = Field(
        "small_cnn", description="backbone; alexnet is the half-width AlexNet of CMC and MetAug's released code"
    )
    width: int = Field(32, ge=4, description="base channel width of small_cnn")
    projector_hidden: int = Field(512, ge=1)
    projector_out: int = Field(128, ge=1)
    projector_layers: int = Field(2, ge=1, le=4)
    projector_bn: bool | None = Field(
        None,
        description=(
            "BatchNorm in the projection head; None: the method's published head (BN for SimCLR, none for "
            "MoCo v2 and the methods built on it); a method's own projector_bn field wins over this one"
        ),
    )
    sync_batchnorm: bool = Field(False, description="SyncBatchNorm across Ray Train workers")
    channels_last: bool = Field(True, description="channels_last memory format on GPU")
    compile: bool = Field(False, description="torch.compile the encoder and head")


class OptimConfig(Section):
    """Optimiser, schedule and budget."""

    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = Field(0.06, gt=0, description="learning rate at batch 256 (scaled linearly)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    epochs: int = Field(10, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    batch_size: int = Field(256, ge=2, description="global batch (split over workers)")
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _warmup_within_budget(self) -> OptimConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) <= epochs ({self.epochs})")
        return self


class EvalConfig(Section):
    """What is measured during and after training."""

    knn_every: int = Field(1, ge=0, description="kNN monitor every N epochs (0: only at the end)")
    knn_k: int = Field(200, ge=1)
    knn_temperature: float = Field(0.1, gt=0)
    linear_probe: bool = True
    probe_epochs: int = Field(100, ge=1)
    probe_lr: float = Field(0.1, gt=0)
    align_uniform: bool = True
    batch_size: int = Field(1024, ge=1, description="batch for feature extraction")


class ResourcesConfig(Section):
    """Where and how the run executes."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(1, ge=1, description="Ray Train workers (1: in-process)")
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: float = Field(1, gt=0)
    max_failures: int = Field(0, ge=-1, description="worker-group restarts from the last checkpoint")
    trial_path: Literal["auto", "train"] = Field(
        "auto", description="in a study: auto runs one-worker trials in the Tune trial itself; train forces Ray Train"
    )
    trial_retries: int = Field(
        2, ge=0, description="in a study: relaunches of a trial whose actor or node was lost (not its own errors)"
    )
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every N epochs")


class OutputConfig(Section):
    dir: str = "runs"
    tensorboard: bool = True
    progress_every: int = Field(20, ge=0, description="log a progress line every N steps (0: off)")


class MethodConfig(Section):
    """Base of every method's config; `name` selects the method."""

    name: str
