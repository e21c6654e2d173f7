"""Warm start: a new study begins with the best configurations of a previous one.

`contrastlab tune SPEC --warm-start PREVIOUS_FOLDER [--warm-start-top K]` reads the previous
study's saved spec and database, takes its K best complete trials (one objective: by value;
several: the Pareto front first, then the rest, on the first objective) and enqueues their
parameters in the new study, after the spec's own `points_to_evaluate`. Only parameters the
new space also samples are kept, and only values inside the new range or choices; what is
dropped is logged by name. The objectives must be the same; a previous study with no
parameter in common, or none complete, is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial, TrialState

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.errors import InputError
from contrastlab.tuning.space import SearchSpace
from contrastlab.tuning.study import OVERRIDES, default_storage_url, existing_study, full_url, open_storage

log = logging.getLogger("contrastlab")
OPTION = "--warm-start"
DEFAULT_TOP = 3
SPEC_FILE = "study_spec.yaml"  # the record each study folder keeps (tuning.runner writes it)


def previous_record(folder: Path) -> dict[str, Any]:
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise InputError(f"{folder}: {OPTION}: a study folder holding {SPEC_FILE} (not found)")
    record = yaml.safe_load(path.read_text())
    if not isinstance(record, dict) or "study_name" not in record or "space" not in record:
        raise InputError(f"{path}: {OPTION}: a study record with study_name and space")
    return record


def objectives_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    if record.get("objectives"):
        return [(o["metric"], o["mode"]) for o in record["objectives"]]
    return [(record.get("metric"), record.get("mode"))]


def ranked_trials(trials: list[FrozenTrial], modes: list[str]) -> list[FrozenTrial]:
    """Complete trials, best first: by value for one objective; for several, the Pareto front
    (no other trial at least as good on all and better on one) first, each group on the first."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    signs = [1.0 if m == "max" else -1.0 for m in modes]

    def dominated(t: FrozenTrial) -> bool:
        return any(
            all(s * a >= s * b for s, a, b in zip(signs, o.values, t.values))
            and any(s * a > s * b for s, a, b in zip(signs, o.values, t.values))
            for o in complete
        )

    return sorted(complete, key=lambda t: (dominated(t), -signs[0] * t.values[0], t.number))


def fit_point(
    overrides: dict[str, Any], space: SearchSpace, number: int, dropped: dict[str, list[str]]
) -> dict[str, Any]:
    """The part of a previous trial's parameters that the new space can take."""
    scalars = {p.path: p for p in space.parameters if p.kind != "list"}
    point = {}
    for path, value in overrides.items():
        if path not in scalars:
            dropped["not in the new space"].append(path)
        elif not scalars[path].contains(value):
            dropped["outside the new range"].append(f"{path}={value!r} (trial #{number})")
        else:
            point[path] = value
    return point


def warm_start_points(
    folder: str | Path,
    space: SearchSpace,
    base: ExperimentConfig,
    metrics: list[str],
    modes: list[str],
    top: int = DEFAULT_TOP,
) -> list[dict[str, Any]]:
    """Points (config path -> value) from the `top` best trials of the study in `folder`."""
    folder = Path(folder)
    if top < 1:
        raise InputError(f"{folder}: --warm-start-top: at least 1 (got {top})")
    record = previous_record(folder)
    previous = objectives_of(record)
    wanted = list(zip(metrics, modes))
    if previous != wanted:
        raise InputError(
            f"{folder / SPEC_FILE}: {OPTION}: a study of the same objectives {wanted} (it optimised {previous})"
        )
    new_paths = {p.path for p in space.parameters if p.kind != "list"}
    common = sorted(set(record["space"]) & new_paths)
    if not common:
        raise InputError(
            f"{folder / SPEC_FILE}: {OPTION}: a study whose space shares a parameter with the new one "
            f"(it samples {sorted(record['space'])}; the new space {sorted(new_paths)})"
        )
    url = full_url(record.get("study_storage") or default_storage_url(folder))
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise InputError(f"{folder}: {OPTION}: the study's database {url} (not found)")
    storage = open_storage(url)
    study = existing_study(storage, record["study_name"])
    if study is None:
        raise InputError(f"{folder}: {OPTION}: its database holds no study {record['study_name']!r}")
    best = ranked_trials(study.get_trials(deepcopy=False), modes)[:top]
    if not best:
        raise InputError(f"{folder}: {OPTION}: a study with at least one complete trial (it has none)")
    dropped: dict[str, list[str]] = {"not in the new space": [], "outside the new range": []}
    points: list[dict[str, Any]] = []
    for trial in best:
        point = fit_point(dict(trial.user_attrs.get(OVERRIDES, {})), space, trial.number, dropped)
        try:
            base.with_overrides(point, f"<warm start from trial #{trial.number}>")
        except ConfigError as err:
            log.info("warm start: trial #%d dropped (%s)", trial.number, err)
            continue
        if point and point not in points:
            points.append(point)
    for why, names in dropped.items():
        if names:
            log.info("warm start from %s: dropped (%s): %s", folder, why, ", ".join(dict.fromkeys(names)))
    log.info("warm start: %d point(s) from the %d best trial(s) of %s", len(points), len(best), record["study_name"])
    return points


__all__ = ["DEFAULT_TOP", "fit_point", "ranked_trials", "warm_start_points"]
