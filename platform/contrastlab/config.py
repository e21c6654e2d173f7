"""Typed, validated experiment configuration.

An experiment is one YAML file. It is validated into `ExperimentConfig` before anything
runs; every error is reported as one line that names the file, the field path and what
was expected (`ConfigError`). The method section is validated by the config class that
the chosen method registered, so a method's components are ordinary typed fields.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contrastlab.errors import ConfigError
from contrastlab.yamlfile import read_yaml


class Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `temperature: .nan` is refused here, not hours later as a NaN loss.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Section):
    """Which images to pretrain and evaluate on."""

    name: Literal["fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder", "trifeature"] = "fashion_mnist"
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
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every N epochs")


class OutputConfig(Section):
    dir: str = "runs"
    tensorboard: bool = True
    progress_every: int = Field(20, ge=0, description="log a progress line every N steps (0: off)")


class MethodConfig(Section):
    """Base of every method's config; `name` selects the method."""

    name: str


class ExperimentConfig(Section):
    name: str = "experiment"
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: _method_config({"name": "simclr"}))
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    resources: ResourcesConfig = ResourcesConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("method", mode="before")
    @classmethod
    def _dispatch_method(cls, value: Any) -> Any:
        if isinstance(value, MethodConfig):
            return value
        if not isinstance(value, dict) or "name" not in value:
            raise ValueError("a mapping with a 'name' naming a registered method")
        return _method_config(value)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["method"] = self.method.model_dump(mode="json")
        return data

    def with_overrides(self, overrides: dict[str, Any], source: str = "<overrides>") -> ExperimentConfig:
        data = self.to_dict()
        for path, value in overrides.items():
            _set_path(data, path, value, source)
        return config_from_dict(data, source)


def _method_config(value: dict[str, Any]) -> MethodConfig:
    from contrastlab.methods.registry import get_method_class

    cls = get_method_class(str(value["name"])).config_class
    return cls.model_validate(value)


def _set_path(data: dict[str, Any], path: str, value: Any, source: str) -> None:
    """Set a dotted path; missing sections are created, validation then checks the names."""
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(source, path, "a dotted field path such as optim.lr")
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(source, ".".join(keys[: depth + 1]), "a config section, not a value")
        node = child
    node[keys[-1]] = value


def _format_location(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts)


def _error_from_validation(source: str, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    field = _format_location(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        expected = "no such field (unknown field)"
    elif kind == "missing":
        expected = "a value (field is required)"
    else:
        message = first["msg"].removeprefix("Value error, ")
        expected = f"{message} (got {first.get('input')!r})"
    return ConfigError(source, field, expected)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, "", "a YAML mapping of config sections")
    try:
        return ExperimentConfig.model_validate(copy.deepcopy(data))
    except ValidationError as err:
        raise _error_from_validation(source, err) from None
    except KeyError as err:  # unknown method name from the registry
        raise ConfigError(source, "method.name", str(err.args[0])) from None


def parse_override(text: str, source: str = "--set") -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(source, text, "an override of the form section.field=value")
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


def _covers(field: str, key: str) -> bool:
    """Whether an error at `field` concerns the override of `key` (same path, or one inside the other)."""
    return field == key or field.startswith(f"{key}.") or key.startswith(f"{field}.")


def tag_override_error(err: ConfigError, overrides: dict[str, str], source: str) -> ConfigError:
    """Name the `--set` that caused a validation error: `FILE (--set a.b=v): a.b: expected ...`."""
    for key, text in reversed(list(overrides.items())):  # the last override of a field wins
        if _covers(err.field, key):
            return ConfigError(f"{source} (--set {text})", err.field, err.expected)
    return err


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read, override (`a.b=value`) and validate one experiment file."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "a YAML mapping of config sections")
    applied: dict[str, str] = {}
    for text in overrides:
        key, value = parse_override(text, f"{path} (--set {text})")
        _set_path(data, key, value, f"{path} (--set {text})")
        applied[key] = text
    try:
        return config_from_dict(data, str(path))
    except ConfigError as err:
        raise tag_override_error(err, applied, str(path)) from None


def config_hash(cfg: ExperimentConfig) -> str:
    """Stable hash of everything that changes what is computed (outputs excluded)."""
    data = cfg.to_dict()
    data.pop("output", None)
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
