"""Typed, validated experiment configuration.

An experiment is one YAML file. It is validated into `ExperimentConfig` before anything
runs; every error is reported as one line that names the file, the field path and what
was expected (`ConfigError`). The method section is validated by the config class that
the chosen method registered, so a method's components are ordinary typed fields. The
sections themselves live in `contrastlab.sections` (re-exported here), below the methods.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import Field, ValidationError, field_validator

from contrastlab.errors import ConfigError
from contrastlab.sections import (
    DATASET_NAMES,
    AugmentConfig,
    DataConfig,
    DatasetName,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ResourcesConfig,
    Section,
)
from contrastlab.yamlfile import read_yaml


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


EXECUTION_ONLY = ("trial_path", "trial_retries")


def config_hash(cfg: ExperimentConfig) -> str:
    """Stable hash of everything that changes what is computed (outputs excluded)."""
    data = cfg.to_dict()
    data.pop("output", None)
    data.pop("name", None)
    # How a study runs a trial (its path, its relaunches) does not change what it computes.
    for key in EXECUTION_ONLY:
        data["resources"].pop(key, None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


__all__ = [
    "DATASET_NAMES",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "DatasetName",
    "EvalConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "ResourcesConfig",
    "Section",
    "config_from_dict",
    "config_hash",
    "load_config",
    "parse_override",
    "tag_override_error",
]
