"""Fair ablation: a small Optuna search per variant before its seeds run.

Removing a component can move the best value of the hyperparameters that remain (a method
without hard-negative weighting may want another temperature), so comparing every variant
at the full method's values can blame the component for a mistuned baseline. With
`retune:`, each variant gets its own study over the parameters it still has, run by the
tuning package (`contrastlab.tuning.run_study`: Ray Tune + OptunaSearch over Ray Train,
its study in a SQLite database), on a search seed that no evaluation run uses. The variant's
seeds then run at the best values found.

A parameter is dropped for a variant when the variant's config has no such field (an
explicit variant that switches method) or when a component it `requires` is off there.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field, field_validator

from contrastlab.ablation.variants import Levels, Variant
from contrastlab.config import ConfigError, ExperimentConfig, config_hash
from contrastlab.engine.evaluate import selection_metric
from contrastlab.study.experiment import TUNING_SEED_FLOOR
from contrastlab.study.validation import Section, issue, validate
from contrastlab.study.values import same
from contrastlab.tuning.space import SearchSpace, check_against_config
from contrastlab.tuning.space_spec import parse_space
from contrastlab.tuning.spec import SamplerSpec

RETUNE_KEYS = {"parameters", "samples", "metric", "mode", "overrides", "sampler", "seed"}
DEFAULT_SEARCH_SEED = 10_000


@dataclass
class RetuneSpec:
    parameters: dict[str, dict[str, Any]]
    requires: dict[str, tuple[str, ...]]
    samples: int
    metric: str
    mode: str
    overrides: dict[str, Any]
    sampler: dict[str, Any]
    seed: int
    spaces: dict[str, SearchSpace | None] = field(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "requires": {k: list(v) for k, v in self.requires.items()},
            "samples": self.samples,
            "metric": self.metric,
            "mode": self.mode,
            "overrides": self.overrides,
            "sampler": self.sampler,
            "seed": self.seed,
            "per_variant": {name: space.paths if space else [] for name, space in self.spaces.items()},
        }

    def search_config(self, run_config: ExperimentConfig) -> ExperimentConfig:
        return run_config.with_overrides(self.overrides) if self.overrides else run_config

    def search_key(self, search_config: ExperimentConfig, space: SearchSpace) -> str:
        """What a search measures: its experiment, space, budget and objective."""
        blob = json.dumps(
            {
                "config": config_hash(search_config),
                "space": space.to_dict(),
                "samples": self.samples,
                "metric": self.metric,
                "mode": self.mode,
                "sampler": self.sampler,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def note(self) -> str:
        """The report's mode line."""
        budget = f", search budget {json.dumps(self.overrides, sort_keys=True)}" if self.overrides else ""
        return (
            f"retuned: before its seeds ran, each variant got its own Optuna search ({self.samples} trials, "
            f"{self.sampler.get('type', 'tpe')} sampler, {self.mode} {self.metric}, search seed {self.seed}"
            f"{budget}) over the parameters it still has ({', '.join(self.parameters)}); its seeds then ran "
            "at its best values (see the Variants table)"
        )


def has_path(data: dict[str, Any], path: str) -> bool:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _wrap(err: ConfigError, source: str, prefix: str = "retune.parameters") -> ConfigError:
    where = re.sub(r"^space", prefix, err.field) if err.field.startswith("space") else f"{prefix}: {err.field}"
    return ConfigError(source, where, err.expected)


def _requires(raw: dict[str, Any], levels: list[Levels], source: str) -> tuple[dict[str, Any], dict[str, tuple]]:
    """Split the `requires:` key off each parameter (the rest is the tuning format)."""
    names = {lv.name for lv in levels}
    fields = {lv.path for lv in levels}
    params, requires = {}, {}
    for path, entry in raw.items():
        where = f"retune.parameters.{path}"
        if path in fields:
            raise ConfigError(
                source, where, "a parameter that is not a toggled component's own field (the design sets it)"
            )
        if not isinstance(entry, dict):
            raise ConfigError(source, where, "a parameter definition (the tuning format: type, low, high, ...)")
        entry = dict(entry)
        needed = entry.pop("requires", [])
        needed = [needed] if isinstance(needed, str) else needed
        if not isinstance(needed, list) or any(n not in names for n in needed):
            raise ConfigError(
                source, f"{where}.requires", f"toggled component names ({', '.join(sorted(names))}); got {needed!r}"
            )
        params[path], requires[path] = entry, tuple(needed)
    return params, requires


def _variant_space(spec: RetuneSpec, variant: Variant, levels: list[Levels], source: str) -> SearchSpace | None:
    off = {lv.name: lv.off for lv in levels if lv.switchable}
    config = spec.search_config(variant.config)
    data = config.to_dict()
    kept = {
        path: entry
        for path, entry in spec.parameters.items()
        if has_path(data, path)
        and not any(name in off and same(variant.settings.get(name), off[name]) for name in spec.requires[path])
    }
    if not kept:
        return None
    try:
        space = parse_space(kept, source)
        check_against_config(space, config, source)
    except ConfigError as err:
        raise _wrap(err, source, f"retune.parameters (variant {variant.name!r})") from None
    return space


def _integer(minimum: int, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise issue(f"an integer of at least {minimum} (got {value!r})")
    return value


class RetuneSection(Section):
    """The `retune:` mapping of an ablation spec, before its parameters meet the variants."""

    _shape: ClassVar[str] = "a mapping with parameters, samples, metric, mode"
    parameters: Any = Field(None, validate_default=True)
    metric: Any = Field(None, validate_default=True)
    mode: Any = Field(None, validate_default=True)
    overrides: Any = Field(None, validate_default=True)
    sampler: SamplerSpec = Field(None, validate_default=True)
    seed: Any = DEFAULT_SEARCH_SEED
    samples: Any = 8

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise issue(
                "a non-empty mapping of config paths to parameters "
                "(the tuning format, plus optional requires: COMPONENT)"
            )
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise issue("the metric each search optimises, e.g. val/knn_top1")
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if value not in ("min", "max"):
            raise issue(f"min or max (got {value!r})")
        return value

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: Any) -> dict[str, Any]:
        value = value or {}
        if not isinstance(value, dict):
            raise issue("a mapping of config paths to values (the search budget)")
        return dict(value)

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler(cls, value: Any) -> Any:
        if value and not isinstance(value, dict):
            raise issue(f"a mapping of type (tpe | random), seed, n_startup_trials (got {value!r})")
        return value or {}  # absent or empty: the tuning defaults

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        _integer(0, value)
        if value < TUNING_SEED_FLOOR:
            raise issue(f"a tuning seed of at least {TUNING_SEED_FLOOR}, which no evaluation run uses (got {value})")
        return value

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: Any) -> Any:
        return _integer(1, value)


def parse_retune(raw: Any, variants: list[Variant], levels: list[Levels], source: str) -> RetuneSpec:
    section = validate(RetuneSection, raw, source, "retune")
    params, requires = _requires(section.parameters, levels, source)
    try:
        parse_space(params, source)
    except ConfigError as err:
        raise _wrap(err, source) from None
    metric = section.metric
    if variants:
        metric = selection_metric(metric, variants[0].config, source, "retune.metric")
    spec = RetuneSpec(
        params,
        requires,
        section.samples,
        metric,
        section.mode,
        section.overrides,
        section.sampler.model_dump(),
        section.seed,
    )
    for variant in variants:
        try:
            spec.search_config(variant.config)
        except ConfigError as err:
            raise ConfigError(source, f"retune.overrides: {err.field}", err.expected) from None
        spec.spaces[variant.name] = _variant_space(spec, variant, levels, source)
    return spec


__all__ = ["DEFAULT_SEARCH_SEED", "RetuneSpec", "has_path", "parse_retune"]
