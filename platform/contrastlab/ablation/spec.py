"""Ablation specs: one YAML file = one ablation study, checked completely before Ray starts.

A spec names the base experiment (`base_config:` a file relative to the spec, e.g. a
study's best_config.yaml, and/or an inline `base:` mapping, then `overrides:`), the
components to toggle by their names in docs/methods.md, the design, the seeds, the metrics, the
reference variant, the resources of each run and, optionally, `retune:` (a small Optuna
search per variant before its seeds run). Every variant's config is validated by the
experiment's own rules; any error is one line naming the spec file and the field.
See docs/ablation.md for the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlab.ablation.retune import RetuneSpec, parse_retune
from contrastlab.ablation.sections import component_entry, report_section, resources_section
from contrastlab.ablation.variants import BASELINE, DESIGNS, FULL, Levels, Variant, expand, method_components
from contrastlab.config import ConfigError, ExperimentConfig, config_from_dict, parse_override, read_yaml
from contrastlab.data.registry import check_split_sizes
from contrastlab.engine.evaluate import check_eval_metric
from contrastlab.study.experiment import TUNING_SEED_FLOOR, base_experiment_dict, check_spec_keys
from contrastlab.study.values import same

SPEC_KEYS = {
    "name",
    "title",
    "description",
    "base_config",
    "base",
    "overrides",
    "components",
    "design",
    "variants",
    "seeds",
    "metrics",
    "reference",
    "resources",
    "retune",
    "report",
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class AblationSpec:
    """A validated study. `full` is the experiment every variant departs from."""

    path: Path
    name: str
    title: str
    full: ExperimentConfig
    design: str
    levels: list[Levels]
    variants: list[Variant]
    seeds: list[int]
    metrics: list[str]
    reference: str
    max_concurrent: int | None = None
    retune: RetuneSpec | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.path)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def component_of(self) -> dict[str, str]:
        return {v.name: v.label for v in self.variants}

    def run_config(self, variant: Variant, seed: int, params: dict[str, Any] | None = None) -> ExperimentConfig:
        """The config of one run: the variant at `seed` (and its retuned values)."""
        updates = {**(params or {}), "seed": seed, "name": f"{self.name}-{variant.name}-seed{seed}"}
        return variant.config.with_overrides(updates, self.source)

    def resolved(self) -> dict[str, Any]:
        """The study as plain data, saved beside its results."""
        return {
            "name": self.name,
            "title": self.title,
            "spec": str(self.path.resolve()),
            "design": self.design,
            "method": self.full.method.name,
            "reference": self.reference,
            "seeds": self.seeds,
            "metrics": self.metrics,
            "max_concurrent": self.max_concurrent,
            "components": [
                {"name": lv.name, "field": lv.path, "off": lv.off, "full": lv.full_value, "values": list(lv.values)}
                for lv in self.levels
            ],
            "variants": [
                {"name": v.name, "label": v.label, "overrides": v.overrides, "config_hash": v.key}
                for v in self.variants
            ],
            "retune": self.retune.resolved() if self.retune else None,
            "full": self.full.to_dict(),
        }


# -- the base experiment ------------------------------------------------------------------------
def _full_experiment(raw: dict[str, Any], path: Path, cli_overrides: list[str]) -> tuple[ExperimentConfig, int | None]:
    """Base, then the spec's `overrides`, its `resources`, then `--set` (the last one wins)."""
    source = str(path)
    base = config_from_dict(base_experiment_dict(raw, path), f"{source} (base)")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(source, "overrides", "a mapping of config paths to values, e.g. optim.epochs: 4")
    resources, concurrent = resources_section(raw.get("resources"), source)
    steps: list[tuple[str, dict[str, Any]]] = [("overrides", dict(overrides)), ("resources", resources)]
    for text in cli_overrides:
        key, value = parse_override(text, f"{source} (--set {text})")
        steps.append((f"--set {text}", {key: value}))
    for where, updates in steps:
        if updates:
            try:
                base = base.with_overrides(updates, source)
            except ConfigError as err:
                raise ConfigError(source, f"{where}: {err.field}", err.expected) from None
    return base, concurrent


# -- components, seeds, metrics --------------------------------------------------------------
def _levels(raw: Any, full: ExperimentConfig, source: str, design: str) -> list[Levels]:
    if raw is None and design == "explicit":
        return []
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            source,
            "components",
            "a non-empty list of component names (docs/methods.md), or {name: COMPONENT, values: [...]}",
        )
    known = method_components(full)
    levels: list[Levels] = []
    for index, entry in enumerate(raw):
        where = f"components[{index}]"
        name, values = component_entry(entry, source, where)
        if name not in known:
            listed = ", ".join(known) or "none"
            raise ConfigError(source, where, f"a component of method {full.method.name!r} ({listed}); got {name!r}")
        if any(lv.name == name for lv in levels):
            raise ConfigError(source, where, f"each component once ({name!r} is listed twice)")
        component = known[name]
        full_value = getattr(full.method, component.field)
        lv = Levels(name, component.field, component.off, full_value, tuple(values))
        _check_levels(lv, full, source, where, design)
        levels.append(lv)
    return levels


def _check_levels(lv: Levels, full: ExperimentConfig, source: str, where: str, design: str) -> None:
    if lv.switchable and same(lv.full_value, lv.off) and design != "explicit":
        raise ConfigError(
            source,
            where,
            f"component {lv.name!r} switched on in the base experiment ({lv.path} is "
            f"{lv.full_value!r}, its 'off' value); switch it on in base or overrides",
        )
    if not lv.switchable and not lv.values and design != "explicit":
        raise ConfigError(source, f"{where}.values", f"the values to compare: {lv.name!r} is a choice with no 'off'")
    for index, value in enumerate(lv.values):
        if any(same(value, other) for other in lv.values[:index]):
            raise ConfigError(source, f"{where}.values[{index}]", f"distinct values ({value!r} repeats)")
        try:
            full.with_overrides({lv.path: value}, source)
        except ConfigError as err:
            raise ConfigError(
                source, f"{where}.values[{index}]", f"a value {lv.path} accepts; {value!r} fails: {err.expected}"
            ) from None


def _seeds(raw: Any, cli_seeds: int | None, source: str) -> list[int]:
    if cli_seeds is not None:
        if not 1 <= cli_seeds <= TUNING_SEED_FLOOR:
            raise ConfigError(source, "--seeds", f"between 1 and {TUNING_SEED_FLOOR} (got {cli_seeds})")
        return list(range(cli_seeds))
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= TUNING_SEED_FLOOR:
            raise ConfigError(source, "seeds", f"a count between 1 and {TUNING_SEED_FLOOR} (got {raw})")
        return list(range(raw))
    valid = (
        isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw)
    )
    if not valid:
        raise ConfigError(source, "seeds", f"a count, or a non-empty list of non-negative integers (got {raw!r})")
    if len(set(raw)) != len(raw):
        raise ConfigError(source, "seeds", f"distinct seeds (got {raw})")
    if max(raw) >= TUNING_SEED_FLOOR:
        raise ConfigError(
            source,
            "seeds",
            f"seeds below {TUNING_SEED_FLOOR}: seeds from {TUNING_SEED_FLOOR} up are "
            f"kept for tuning, so selection never shares a seed with evaluation "
            f"(got {max(raw)})",
        )
    return list(raw)


def _metrics(raw: Any, full: ExperimentConfig, source: str) -> list[str]:
    """Bare evaluation names; every run reports each one on val and on test (`val/…`, `test/…`)."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(m, str) and m for m in raw):
        raise ConfigError(source, "metrics", "a non-empty list of metric names, e.g. [linear_top1, knn_top1]")
    if full.data.val_size == 0:
        raise ConfigError(source, "data.val_size", "a validation split (not 0): ablation runs report val beside test")
    check_split_sizes(full.data, source)
    names = [check_eval_metric(metric, full, source, f"metrics[{index}]") for index, metric in enumerate(raw)]
    if len(set(names)) != len(names):
        raise ConfigError(source, "metrics", f"distinct names (got {raw})")
    return names


def _name(raw: dict[str, Any], path: Path) -> str:
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(str(path), "name", f"letters, digits, '.', '-' and '_' only (got {name!r})")
    return name


def spec_from_dict(
    raw: Any, path: str | Path, overrides: list[str] | tuple[str, ...] = (), seeds: int | None = None
) -> AblationSpec:
    path = Path(path)
    source = str(path)
    check_spec_keys(raw, source, SPEC_KEYS, "an ablation spec")
    name = _name(raw, path)
    design = raw.get("design", "leave_one_out")
    if design not in DESIGNS:
        raise ConfigError(source, "design", f"one of {', '.join(DESIGNS)} (got {design!r})")
    if ("variants" in raw) != (design == "explicit"):
        raise ConfigError(source, "variants", "a list of variants with design: explicit, and only then")
    full, concurrent = _full_experiment(raw, path, list(overrides))
    levels = _levels(raw.get("components"), full, source, design)
    variants = expand(design, full, levels, source, raw.get("variants"))
    default_reference = BASELINE if design == "add_one_in" else FULL if design != "explicit" else variants[0].name
    reference = raw.get("reference", default_reference)
    if reference not in {v.name for v in variants}:
        raise ConfigError(
            source, "reference", f"one of the variants ({', '.join(v.name for v in variants)}); got {reference!r}"
        )
    seed_list = _seeds(raw.get("seeds", 3), seeds, source)
    metrics = _metrics(raw.get("metrics", ["linear_top1", "knn_top1"]), full, source)
    retune = parse_retune(raw.get("retune"), variants, levels, source) if "retune" in raw else None
    title = raw.get("title") or f"Ablation of {full.method.name}: {design.replace('_', '-')} ({name})"
    return AblationSpec(
        path=path,
        name=name,
        title=str(title),
        full=full,
        design=design,
        levels=levels,
        variants=variants,
        seeds=seed_list,
        metrics=metrics,
        reference=reference,
        max_concurrent=concurrent,
        retune=retune,
        report=report_section(raw.get("report"), source),
    )


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), seeds: int | None = None) -> AblationSpec:
    """Read and validate an ablation spec; `overrides` (`a.b=value`) apply to the base experiment."""
    return spec_from_dict(read_yaml(path), path, overrides, seeds)


__all__ = ["AblationSpec", "load_spec", "spec_from_dict"]
