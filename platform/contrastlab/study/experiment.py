"""What every spec file has: known top-level keys, and a base experiment.

A tuning spec and an ablation spec both name their experiment as `base_config:` (a YAML
file relative to the spec, e.g. a study's best_config.yaml) and/or an inline `base:`
mapping merged over it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contrastlab.errors import ConfigError
from contrastlab.yamlfile import read_yaml

# Tuning trials run at seeds no ablation evaluates on: ablation seeds stay below this.
TUNING_SEED_FLOOR = 1000


def check_spec_keys(raw: Any, source: str, allowed: Iterable[str], what: str) -> None:
    """A spec file is a mapping of known top-level fields (tune and ablation specs alike)."""
    allowed = set(allowed)
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"a YAML mapping ({what})")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(source, unknown[0], f"no such field (allowed: {', '.join(sorted(allowed))})")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, mapping by mapping; neither input is changed."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def base_experiment_dict(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A spec's experiment: `base_config` (a YAML path relative to the spec) merged with the
    inline `base` mapping, or the inline mapping alone."""
    source = str(path)
    inline = raw.get("base", {})
    if not isinstance(inline, dict):
        raise ConfigError(source, "base", "a mapping (the experiment, or changes to base_config)")
    if "base_config" not in raw:
        if not inline:
            raise ConfigError(source, "base", "an experiment: an inline mapping, or base_config: PATH")
        return inline
    ref = raw["base_config"]
    if not isinstance(ref, str) or not ref:
        raise ConfigError(source, "base_config", "a path to an experiment YAML, relative to the spec file")
    target = (path.parent / ref).resolve()
    if not target.is_file():
        raise ConfigError(source, "base_config", f"an existing experiment file (not found: {target})")
    loaded = read_yaml(target)
    if not isinstance(loaded, dict):
        raise ConfigError(str(target), "", "a YAML mapping of config sections")
    return deep_merge(loaded, inline)


__all__ = ["TUNING_SEED_FLOOR", "base_experiment_dict", "check_spec_keys", "deep_merge"]
