"""Components and designs: from the spec's component list to named variants.

A component is toggled by its name in docs/methods.md (the `components` of the method's config
class). Each one has *levels*: an on/off component is on at the full experiment's value and
off at its `off` value; `values` adds alternatives (for a choice component, the values it
is compared on). A design turns the levels into variants:

- `leave_one_out`: the full experiment (`full`), then one variant per level that departs
  from it: `no_<c>` (component off) or `<c>=<value>` (another choice).
- `add_one_in`: the baseline (`baseline`: every on/off component off), then `with_<c>`
  (one component back on) or `<c>=<value>`, and `full` when more than one is switched.
- `full_factorial`: every combination of the levels; a name lists the departures from the
  full experiment joined by `+`, and the all-default combination is `full`.
- `explicit`: named variants, each a set of component settings and config overrides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from contrastlab.config import ConfigError, ExperimentConfig, config_hash
from contrastlab.study.values import same

DESIGNS = ("leave_one_out", "add_one_in", "full_factorial", "explicit")
FULL, BASELINE = "full", "baseline"


@dataclass(frozen=True)
class Levels:
    """One toggled component: its config field, `off` (None: a choice) and alternatives."""

    name: str
    field: str
    off: Any
    full_value: Any
    values: tuple[Any, ...] = ()

    @property
    def path(self) -> str:
        return f"method.{self.field}"

    @property
    def switchable(self) -> bool:
        return self.off is not None

    def departures(self) -> list[tuple[str, Any]]:
        """(name token, value) for every level other than the full experiment's."""
        out = [(f"no_{self.name}", self.off)] if self.switchable else []
        out += [(f"{self.name}={value_token(v)}", v) for v in self.values if not same(v, self.full_value)]
        return out


@dataclass
class Variant:
    """One arm of the study. `overrides` are relative to the full experiment; `settings`
    give each toggled component's value in this variant (for TensorBoard and the report)."""

    name: str
    label: str
    overrides: dict[str, Any]
    settings: dict[str, Any]
    config: ExperimentConfig
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = config_hash(self.config)


def value_token(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def method_components(cfg: ExperimentConfig) -> dict[str, Any]:
    """The method's components by name (empty for methods without any)."""
    return {c.name: c for c in getattr(type(cfg.method), "components", ())}


# -- building variants ------------------------------------------------------------------------
class Builder:
    """Validates each variant against the experiment and rejects duplicates, naming the spec field."""

    def __init__(self, full: ExperimentConfig, levels: list[Levels], source: str):
        self.full, self.levels, self.source = full, levels, source
        self.variants: list[Variant] = []
        self._where: dict[str, str] = {}

    def settings(self, config: ExperimentConfig) -> dict[str, Any]:
        # Read back from the resolved config: an explicit variant may set a field directly or
        # switch to another method, where the component does not exist (None).
        return {lv.name: getattr(config.method, lv.field, None) for lv in self.levels}

    def add(
        self, name: str, label: str, chosen: dict[str, Any], where: str, extra: dict[str, Any] | None = None
    ) -> Variant:
        by_name = {lv.name: lv for lv in self.levels}
        overrides = {by_name[c].path: v for c, v in chosen.items() if not same(v, by_name[c].full_value)}
        overrides.update(extra or {})
        try:
            config = self.full.with_overrides(overrides, self.source) if overrides else self.full
        except ConfigError as err:
            raise ConfigError(
                self.source,
                where,
                f"settings the experiment accepts; variant {name!r} fails at {err.field}: {err.expected}",
            ) from None
        variant = Variant(name, label, overrides, self.settings(config), config)
        for other in self.variants:
            if other.name == name:
                raise ConfigError(self.source, where, f"a unique variant name ({name!r} is used twice)")
            if other.key == variant.key:
                raise ConfigError(
                    self.source,
                    where,
                    f"distinct variants: {name!r} resolves to the same config as "
                    f"{other.name!r} ({self._where[other.name]}; hash {variant.key})",
                )
        self.variants.append(variant)
        self._where[name] = where
        return variant


def leave_one_out(builder: Builder) -> None:
    builder.add(FULL, FULL, {}, "design")
    for index, lv in enumerate(builder.levels):
        for token, value in lv.departures():
            replaced = f"{lv.name}={value_token(lv.full_value)} (→ {value_token(value)})"
            label = lv.name if token.startswith("no_") else replaced
            builder.add(token, label, {lv.name: value}, f"components[{index}]")


def add_one_in(builder: Builder) -> None:
    switchable = [lv for lv in builder.levels if lv.switchable]
    if not switchable:
        raise ConfigError(
            builder.source,
            "components",
            "at least one on/off component for add_one_in (choices have no 'off' to start from)",
        )
    base = {lv.name: lv.off for lv in switchable}
    builder.add(BASELINE, BASELINE, base, "design")
    for index, lv in enumerate(builder.levels):
        if lv.switchable:
            builder.add(f"with_{lv.name}", lv.name, {**base, lv.name: lv.full_value}, f"components[{index}]")
        others = [(t, v) for t, v in lv.departures() if not t.startswith("no_")]
        for token, value in others:
            builder.add(token, token, {**base, lv.name: value}, f"components[{index}]")
    if len(switchable) > 1:
        builder.add(FULL, "all components", {}, "design")


def full_factorial(builder: Builder) -> None:
    axes = [[(None, lv.full_value), *lv.departures()] for lv in builder.levels]
    for combination in itertools.product(*axes):
        tokens = [token for token, _ in combination if token]
        chosen = {lv.name: value for lv, (token, value) in zip(builder.levels, combination) if token}
        name = "+".join(tokens) or FULL
        builder.add(name, name, chosen, "components")


def explicit(builder: Builder, raw: Any) -> None:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            builder.source, "variants", "a non-empty list of {name, components, overrides} for the explicit design"
        )
    by_name = {lv.name: lv for lv in builder.levels}
    for index, entry in enumerate(raw):
        where = f"variants[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(
                builder.source, where, "a mapping with a 'name' (and optional components, overrides, label)"
            )
        unknown = sorted(set(entry) - {"name", "label", "components", "overrides"})
        if unknown:
            raise ConfigError(
                builder.source, f"{where}.{unknown[0]}", "no such key (allowed: name, label, components, overrides)"
            )
        chosen = explicit_settings(entry.get("components") or {}, by_name, builder.source, f"{where}.components")
        extra = entry.get("overrides") or {}
        if not isinstance(extra, dict):
            raise ConfigError(builder.source, f"{where}.overrides", "a mapping of config paths to values")
        builder.add(entry["name"], str(entry.get("label") or entry["name"]), chosen, where, dict(extra))


def explicit_settings(raw: Any, by_name: dict[str, Levels], source: str, where: str) -> dict[str, Any]:
    """`{component: on | off | value}`; YAML's on/off arrive as true/false."""
    if not isinstance(raw, dict):
        raise ConfigError(source, where, "a mapping {component: on | off | value}")
    chosen = {}
    for name, value in raw.items():
        if name not in by_name:
            raise ConfigError(
                source,
                f"{where}.{name}",
                f"a component listed under 'components' ({', '.join(by_name) or 'none listed'})",
            )
        lv = by_name[name]
        if value is True or value == "on":
            chosen[name] = lv.full_value
        elif (value is False or value == "off") and lv.switchable:
            chosen[name] = lv.off
        else:
            chosen[name] = value
    return chosen


def expand(
    design: str, full: ExperimentConfig, levels: list[Levels], source: str, explicit_variants: Any = None
) -> list[Variant]:
    builder = Builder(full, levels, source)
    if design == "explicit":
        explicit(builder, explicit_variants)
    else:
        {"leave_one_out": leave_one_out, "add_one_in": add_one_in, "full_factorial": full_factorial}[design](builder)
    return builder.variants


__all__ = ["BASELINE", "DESIGNS", "FULL", "Levels", "Variant", "expand", "method_components", "value_token"]
