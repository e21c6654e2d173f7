"""Study specs: one YAML file = one self-contained hyperparameter study.

Everything is checked here, before Ray starts: the base experiment (a file or an inline
mapping), the metric and its direction, the search space (against the experiment's own
validation), the scheduler, the sampler and the resources. Errors name the spec file and
the field, on one line (`ConfigError`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_serializer, model_validator

from contrastlab.config import ConfigError, ExperimentConfig, config_from_dict, config_hash, parse_override, read_yaml
from contrastlab.engine.evaluate import selection_metric
from contrastlab.study.experiment import TUNING_SEED_FLOOR, base_experiment_dict, check_spec_keys
from contrastlab.study.validation import issue, validate
from contrastlab.tuning.objectives import Objective, objectives_raw, parse_objectives, single_objective_view
from contrastlab.tuning.space import SearchSpace, check_against_config
from contrastlab.tuning.space_spec import parse_space

SPEC_KEYS = {
    "name",
    "description",
    "base_config",
    "base",
    "metric",
    "mode",
    "objectives",
    "space",
    "resources",
    "num_samples",
    "scheduler",
    "sampler",
    "max_concurrent_trials",
    "study_storage",
    "points_to_evaluate",
    "seed",
    "keep_checkpoints",
}
# Metrics the engine computes only after the last epoch: ASHA would never see them early.
FINAL_ONLY_METRICS = ("linear_top1", "alignment", "uniformity")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SchedulerSpec(_Section):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3, gt=1, description="keep the best 1/reduction_factor at each rung")
    max_t: int | None = Field(None, ge=1, description="epochs of a full trial (default: optim.epochs)")


class SamplerSpec(_Section):
    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(0, description="sampler seed (null: a fresh one each run)")
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE models the results")
    # TPE only; null: on for a space with conditional parameters (Optuna's own default otherwise).
    multivariate: StrictBool | None = Field(None, description="TPE models the parameters jointly")
    group: StrictBool | None = Field(None, description="TPE models each set of parameters that occur together")

    @model_validator(mode="after")
    def _tpe_options(self) -> SamplerSpec:
        for key in ("multivariate", "group"):
            if self.type != "tpe" and getattr(self, key) is not None:
                raise issue(f"no {key} for a {self.type} sampler (a TPE option)", at=key)
        if self.group and self.multivariate is False:
            raise issue("group: true only with multivariate TPE (multivariate: false is set)", at="group")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # Unset TPE options are left out, so a study saved before they existed resumes unchanged.
        return {k: v for k, v in handler(self).items() if v is not None or k not in ("multivariate", "group")}


class ResourcesSpec(_Section):
    """Per trial; copied into the base experiment's `resources` section."""

    workers: int | None = Field(None, ge=1)
    cpus_per_worker: float | None = Field(None, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0)
    trial_path: Literal["auto", "train"] | None = None
    trial_retries: int | None = Field(None, ge=0)


class _TopLevel(_Section):
    metric: str = Field(min_length=1)
    mode: Literal["min", "max"]
    seed: int = Field(TUNING_SEED_FLOOR, description="the seed of every trial (ablations evaluate below 1000)")

    @field_validator("seed")
    @classmethod
    def _tuning_seed(cls, value: int) -> int:
        if value < TUNING_SEED_FLOOR:
            raise ValueError(
                f"a seed of at least {TUNING_SEED_FLOOR}: seeds below it are the ones ablations "
                "evaluate on, and selection must not share them"
            )
        return value

    num_samples: int = Field(20, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    study_storage: str | None = None
    keep_checkpoints: int = Field(
        3, ge=0, description="finished trials whose Ray checkpoint copies are kept: the best N complete ones"
    )
    scheduler: SchedulerSpec = SchedulerSpec()
    sampler: SamplerSpec = SamplerSpec()
    resources: ResourcesSpec = ResourcesSpec()


@dataclass
class StudySpec:
    """A validated study. `base` already carries the spec's resources and `--set` overrides."""

    path: Path
    name: str
    base: ExperimentConfig
    metric: str
    mode: str
    space: SearchSpace
    num_samples: int
    scheduler: SchedulerSpec
    sampler: SamplerSpec
    max_concurrent_trials: int | None
    study_storage: str | None
    points_to_evaluate: list[dict[str, Any]]
    # Not part of `resolved()`: how much disk a study keeps does not change what it measures.
    keep_checkpoints: int = 3
    # Two or more objectives (empty: the one objective `metric`/`mode`, which then hold the first).
    objectives: list[Objective] = field(default_factory=list)
    # Points enqueued from a previous study (`--warm-start`), after `points_to_evaluate`.
    warm_start: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives] or [self.metric]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives] or [self.mode]

    @property
    def max_t(self) -> int:
        return self.scheduler.max_t or self.base.optim.epochs

    @property
    def study_name(self) -> str:
        """The spec's name plus a hash of what the trials measure (experiment, space, objective)."""
        measured = {
            "base": config_hash(self.base),
            "space": self.space.to_dict(),
            "metric": self.metric,
            "mode": self.mode,
        }
        if self.objectives:
            measured["objectives"] = [o.model_dump() for o in self.objectives]
        blob = json.dumps(
            measured,
            sort_keys=True,
            default=str,
        )
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    def resolved(self) -> dict[str, Any]:
        """Everything that defines the study, as plain data: saved at the first run, compared on resume."""
        record: dict[str, Any] = {
            "name": self.name,
            "study_name": self.study_name,
            "metric": self.metric,
            "mode": self.mode,
            "num_samples": self.num_samples,
            "max_concurrent_trials": self.max_concurrent_trials,
            "scheduler": {**self.scheduler.model_dump(), "max_t": self.max_t},
            "sampler": self.sampler.model_dump(),
            "points_to_evaluate": copy.deepcopy(self.points_to_evaluate),
            "space": self.space.to_dict(),
            "base": self.base.to_dict(),
        }
        if self.objectives:
            record["objectives"] = [o.model_dump() for o in self.objectives]
        if self.warm_start:
            record["warm_start"] = copy.deepcopy(self.warm_start)
        return record


def _build_base(raw: dict[str, Any], path: Path, overrides: list[str], resources: ResourcesSpec) -> ExperimentConfig:
    source = str(path)
    base = config_from_dict(base_experiment_dict(raw, path), f"{source} (base)")
    updates: dict[str, Any] = {f"resources.{k}": v for k, v in resources.model_dump().items() if v is not None}
    if updates:
        base = base.with_overrides(updates, f"{source} (resources)")
    for text in overrides:  # one at a time, so an error names the --set that caused it
        key, value = parse_override(text, f"{source} (--set {text})")
        base = base.with_overrides({key: value}, f"{source} (--set {text})")
    return base


def check_overrides_against_space(overrides: list[str], space: SearchSpace, source: str) -> None:
    """A `--set` of a field the space samples would be silently replaced in every trial."""
    for text in overrides:
        key, _ = parse_override(text, f"{source} (--set {text})")
        for sampled in space.paths:
            if key == sampled or sampled.startswith(f"{key}.") or key.startswith(f"{sampled}."):
                raise ConfigError(
                    f"{source} (--set {text})",
                    key,
                    f"a field the search space does not sample "
                    f"(space.{sampled} sets it in every trial; "
                    "change the space instead)",
                )


def _top_level(raw: dict[str, Any], source: str) -> _TopLevel:
    return validate(_TopLevel, {k: raw[k] for k in _TopLevel.model_fields if k in raw}, source)


def _check_metric(top: _TopLevel, base: ExperimentConfig, source: str) -> None:
    """The objective is a validation metric the runs report (or the training loss); under ASHA
    it must be reported every epoch."""
    top.metric = selection_metric(top.metric, base, source, "metric")
    if top.scheduler.type != "asha":
        return
    bare = top.metric.removeprefix("val/").rpartition("/")[2]
    final_only = bare in FINAL_ONLY_METRICS or bare.startswith("probe_") or "/" in top.metric.removeprefix("val/")
    if bare == "knn_top1" and base.eval.knn_every == 0:
        final_only = True
    if final_only:
        raise ConfigError(
            source,
            "metric",
            f"a metric reported every epoch for ASHA ({top.metric!r} is computed only "
            "after the last epoch): use val/knn_top1 with eval.knn_every >= 1, or "
            "scheduler.type: fifo",
        )
    max_t = top.scheduler.max_t or base.optim.epochs
    if top.scheduler.grace_period > max_t:
        raise ConfigError(
            source, "scheduler.grace_period", f"at most max_t = {max_t} epochs (got {top.scheduler.grace_period})"
        )


def _points(raw: Any, space: SearchSpace, base: ExperimentConfig, source: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ConfigError(source, "points_to_evaluate", "a list of mappings {config path: value}")
    scalars = {p.path: p for p in space.parameters if p.kind != "list"}  # a composition is given as its list
    for index, point in enumerate(raw):
        unknown = sorted(set(point) - set(scalars))
        if unknown:
            raise ConfigError(
                source,
                f"points_to_evaluate[{index}].{unknown[0]}",
                "a scalar parameter of the space (or a composition)",
            )
        for path, value in point.items():
            param = scalars[path]
            if param.kind == "composition" and not (param.contains(value) and len(value) in space.lengths(param)):
                raise ConfigError(
                    source,
                    f"points_to_evaluate[{index}].{path}",
                    f"{'/'.join(map(str, space.lengths(param)))} integers of at least {param.minimum} "
                    f"summing to {param.total.value} (got {value!r})",
                )
            if not param.contains(value):
                raise ConfigError(
                    source,
                    f"points_to_evaluate[{index}].{path}",
                    f"a value inside the parameter's range or choices (got {value!r})",
                )
        try:
            base.with_overrides(point, source)
        except ConfigError as err:
            raise ConfigError(
                source, f"points_to_evaluate[{index}]", f"values the experiment accepts ({err.field}: {err.expected})"
            ) from None
    return raw


def spec_from_dict(
    raw: Any,
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    num_samples: int | None = None,
    study_storage: str | None = None,
) -> StudySpec:
    path = Path(path)
    source = str(path)
    check_spec_keys(raw, source, SPEC_KEYS, "a study spec")
    several, sampler_type = objectives_raw(raw, source), None
    if several is not None:
        raw, sampler_type = single_objective_view(raw, several, source)
    top = _top_level(raw, source)
    if sampler_type:  # nsga2: only a sampler of several objectives
        top.sampler = top.sampler.model_copy(update={"type": sampler_type})
    if num_samples is not None:
        if num_samples < 1:
            raise ConfigError(source, "--samples", f"at least 1 (got {num_samples})")
        top.num_samples = num_samples
    base = _build_base(raw, path, list(overrides), top.resources).with_overrides({"seed": top.seed}, source)
    space = parse_space(raw.get("space"), source)
    check_overrides_against_space(list(overrides), space, source)
    check_against_config(space, base, source)
    objectives = []
    if several is None:
        _check_metric(top, base, source)
    else:
        objectives = parse_objectives(several, base, top.scheduler.type, source)
        top.metric, top.mode = objectives[0].metric, objectives[0].mode
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(source, "name", f"letters, digits, '-' and '_' only (got {name!r})")
    return StudySpec(
        path=path,
        name=name,
        base=base,
        metric=top.metric,
        mode=top.mode,
        space=space,
        num_samples=top.num_samples,
        scheduler=top.scheduler,
        sampler=top.sampler,
        max_concurrent_trials=top.max_concurrent_trials,
        study_storage=study_storage or top.study_storage,
        points_to_evaluate=_points(raw.get("points_to_evaluate"), space, base, source),
        keep_checkpoints=top.keep_checkpoints,
        objectives=objectives,
    )


def load_spec(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    num_samples: int | None = None,
    study_storage: str | None = None,
) -> StudySpec:
    """Read and validate a study spec; `overrides` (`a.b=value`) apply to the base experiment."""
    return spec_from_dict(read_yaml(path), path, overrides, num_samples, study_storage)


# -- comparing a spec with the one a study started from ----------------------------------------
def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def diff_specs(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Field-by-field differences, one line each: `field: saved -> current`."""
    old, new = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"{key}: {old[key]!r} -> (removed)")
        elif key not in old:
            lines.append(f"{key}: (absent) -> {new[key]!r}")
        elif old[key] != new[key]:
            lines.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return lines


__all__ = [
    "ResourcesSpec",
    "SamplerSpec",
    "SchedulerSpec",
    "StudySpec",
    "diff_specs",
    "load_spec",
    "spec_from_dict",
]
