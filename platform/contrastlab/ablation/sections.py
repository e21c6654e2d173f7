"""Sections of an ablation spec as pydantic models (`resources`, `report`, component entries).

Each model checks one section's shape and values; the spec keeps the values as written (no
defaults are added), and errors are the one-line `ConfigError`s of `study.validation`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import field_validator

from contrastlab.study.validation import Section, issue, validate

RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "max_failures", "trial_path", "trial_retries")
REPORT_KEYS = ("test", "interval", "confidence", "n_boot", "primary_metric", "effect")


def _plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ResourcesSection(Section):
    """Per run; copied into the experiment's `resources`, plus how many runs at once."""

    _shape: ClassVar[str] = f"a mapping ({', '.join(RESOURCE_KEYS)}, max_concurrent)"
    workers: Any = None
    cpus_per_worker: Any = None
    gpus_per_worker: Any = None
    max_failures: Any = None
    trial_path: Any = None
    trial_retries: Any = None
    max_concurrent: Any = None

    @classmethod
    def _unknown(cls, allowed: list[str]) -> str:
        return f"no such key (allowed: {', '.join(RESOURCE_KEYS)}, max_concurrent)"

    @field_validator("max_concurrent")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise issue(f"a positive integer (got {value!r})")
        return value

    def overrides(self) -> dict[str, Any]:
        """The experiment's `resources.*` values this section sets (as written; the config checks them)."""
        return {f"resources.{k}": getattr(self, k) for k in RESOURCE_KEYS if k in self.model_fields_set}


class ReportSection(Section):
    """How the report tests and shows the comparisons."""

    _shape: ClassVar[str] = f"a mapping with {', '.join(REPORT_KEYS)}"
    test: Any = None
    interval: Any = None
    confidence: Any = 0.95
    n_boot: Any = 10000
    primary_metric: Any = None
    effect: Any = 0.01

    _unknown_names_key: ClassVar[bool] = False

    @classmethod
    def _unknown(cls, allowed: list[str]) -> str:
        return cls._shape

    @field_validator("test")
    @classmethod
    def _test(cls, value: Any) -> Any:
        if value not in ("sign_flip", "t"):
            raise issue(f"sign_flip or t (got {value!r})")
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        if value not in ("t", "bca"):
            raise issue(f"t or bca (got {value!r})")
        return value

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, float) or not 0 < value < 1:
            raise issue(f"a number in (0, 1) (got {value!r})")
        return value

    @field_validator("n_boot")
    @classmethod
    def _n_boot(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 100:
            raise issue(f"an integer of at least 100 (got {value!r})")
        return value

    @field_validator("primary_metric")
    @classmethod
    def _primary(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise issue(f"one of the spec's metrics (got {value!r})")
        return value

    @field_validator("effect")
    @classmethod
    def _effect(cls, value: Any) -> Any:
        if not _plain_number(value) or not 0 < value < math.inf:
            raise issue(f"a positive number in metric units, e.g. 0.01 (got {value!r})")
        return value


class ComponentEntry(Section):
    """`{name: COMPONENT, values: [...]}`: a component and the values to compare it at."""

    _shape: ClassVar[str] = "a component name, or a mapping {name: COMPONENT, values: [...]}"
    name: str
    values: Any = []

    @classmethod
    def _check_shape(cls, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise issue(cls._shape)

    @field_validator("values")
    @classmethod
    def _values(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise issue("a list of the values to compare")
        return value


def resources_section(raw: Any, source: str) -> tuple[dict[str, Any], int | None]:
    """The `resources` overrides of the experiment, and `max_concurrent` (None: what fits)."""
    if raw is None:
        return {}, None
    section = validate(ResourcesSection, raw, source, "resources")
    return section.overrides(), section.max_concurrent


def report_section(raw: Any, source: str) -> dict[str, Any]:
    """The spec's `report:` mapping, checked and kept as written; primary_metric is checked
    against the metrics by the caller."""
    if raw is None:
        return {}
    validate(ReportSection, raw, source, "report")
    return dict(raw)


def component_entry(entry: Any, source: str, where: str) -> tuple[str, list[Any]]:
    """A `components` entry: a bare name (its on/off levels) or a name with values."""
    if isinstance(entry, str):
        return entry, []
    parsed = validate(ComponentEntry, entry, source, where)
    return parsed.name, parsed.values


__all__ = [
    "ComponentEntry",
    "ReportSection",
    "ResourcesSection",
    "component_entry",
    "report_section",
    "resources_section",
]
