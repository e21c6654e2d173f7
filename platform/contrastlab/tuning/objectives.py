"""Several objectives in one study: the `objectives` list of a study spec.

A spec names either `metric` and `mode` (one objective) or `objectives`, a list of
`{metric, mode}` (two or three). Besides the validation metrics and the training loss, an
objective may be a cost of the run: `train_seconds`, the training time of the whole run
(evaluation excluded) that every epoch reports. A multi-objective study has no single
best trial: Optuna keeps the Pareto front (`study.best_trials`). No scheduler can stop a
trial on several objectives at once, so such a study runs FIFO; ASHA is refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.engine.evaluate import selection_metric
from contrastlab.study.validation import validate

# Costs a run reports at every epoch, usable as objectives (they are not selection metrics:
# they say what a configuration costs, not how good its representation is).
COST_METRICS = {"train_seconds": "seconds of training of the whole run, evaluation excluded"}
MAX_OBJECTIVES = 3
# Samplers for several objectives only (one objective keeps TPE or random sampling).
MULTI_SAMPLERS = ("nsga2",)


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field(min_length=1)
    mode: Literal["min", "max"]


def _normalise(metric: str, base: ExperimentConfig, source: str, field: str) -> str:
    if metric in COST_METRICS:
        return metric
    return selection_metric(metric, base, source, field)


def objectives_raw(raw: dict[str, Any], source: str) -> list[dict[str, Any]] | None:
    """The spec's `objectives` as a list of mappings (None when the spec has one objective);
    checks the shape and that `metric`/`mode` are not given beside it."""
    if "objectives" not in raw:
        return None
    given = raw["objectives"]
    if not isinstance(given, list) or not all(isinstance(o, dict) for o in given):
        raise ConfigError(source, "objectives", "a list of mappings {metric: NAME, mode: min|max}")
    if not 2 <= len(given) <= MAX_OBJECTIVES:
        raise ConfigError(
            source,
            "objectives",
            f"2 to {MAX_OBJECTIVES} objectives (got {len(given)}); one objective is written metric: and mode:",
        )
    for key in ("metric", "mode"):
        if key in raw:
            raise ConfigError(source, key, "either metric and mode (one objective) or objectives, not both")
    return given


def single_objective_view(
    raw: dict[str, Any], given: list[dict[str, Any]], source: str
) -> tuple[dict[str, Any], str | None]:
    """The spec as the one-objective checks read it: the first objective as `metric`/`mode`,
    FIFO as the default scheduler (ASHA stops trials on one metric only), and a sampler of
    several objectives only (`nsga2`) read as TPE; returns the view and that sampler's type."""
    view = {k: v for k, v in raw.items() if k != "objectives"}
    sampler_type = None
    sampler = view.get("sampler")
    if isinstance(sampler, dict) and "type" in sampler:
        if sampler["type"] not in ("tpe", "random", *MULTI_SAMPLERS):
            raise ConfigError(source, "sampler.type", f"tpe, random or nsga2 (got {sampler['type']!r})")
        if sampler["type"] in MULTI_SAMPLERS:
            sampler_type = sampler["type"]
            view["sampler"] = {**sampler, "type": "tpe"}
    first = given[0]
    if isinstance(first.get("metric"), str) and first.get("mode") in ("min", "max"):
        view.update(metric=first["metric"], mode=first["mode"])
    else:
        view.update(metric="loss", mode="min")  # placeholder: parse_objectives names the error
    scheduler = view.get("scheduler")
    if scheduler is None:
        view["scheduler"] = {"type": "fifo"}
    elif isinstance(scheduler, dict) and "type" not in scheduler:
        view["scheduler"] = {**scheduler, "type": "fifo"}
    return view, sampler_type


def parse_objectives(
    given: list[dict[str, Any]], base: ExperimentConfig, scheduler_type: str, source: str
) -> list[Objective]:
    """Validated objectives with their metrics normalised (`val/...`, `loss`, a cost)."""
    objectives = []
    for index, item in enumerate(given):
        objective = validate(Objective, item, source, f"objectives[{index}]")
        objective.metric = _normalise(objective.metric, base, source, f"objectives[{index}].metric")
        objectives.append(objective)
    metrics = [o.metric for o in objectives]
    for index, metric in enumerate(metrics):
        if metric in metrics[:index]:
            raise ConfigError(source, f"objectives[{index}].metric", f"a metric not already an objective ({metric!r})")
    if scheduler_type != "fifo":
        raise ConfigError(
            source,
            "scheduler.type",
            f"fifo for a study with {len(objectives)} objectives (got {scheduler_type!r}: "
            "a pruning scheduler stops trials on one metric only)",
        )
    return objectives


def name_objectives(study, names: list[str]) -> None:
    """Record the objectives' names in the study (the report and optuna-dashboard show them)."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # `set_metric_names` is marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))


def study_directions(objectives: list[Objective], mode: str) -> dict[str, Any]:
    """The keyword `optuna.create_study` takes: `direction` for one objective, `directions` for several."""
    if not objectives:
        return {"direction": "maximize" if mode == "max" else "minimize"}
    return {"directions": ["maximize" if o.mode == "max" else "minimize" for o in objectives]}


__all__ = [
    "COST_METRICS",
    "Objective",
    "objectives_raw",
    "parse_objectives",
    "single_objective_view",
    "name_objectives",
    "study_directions",
]
