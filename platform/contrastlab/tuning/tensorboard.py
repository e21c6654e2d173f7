"""A study's TensorBoard folder: its HParams declaration, its custom-scalars layout, its figures.

`tensorboard/` holds one run per trial, pruned and failed ones included (written by
`contrastlab.tuning.callbacks.StudyCallback` from the results Tune receives), and, at its
root, one event file with the table's declaration (the tuned parameters first, typed from
the search space, then the trial's state; the metric columns) and a layout that overlays
the selection metric and the loss of every trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorboard.plugins.hparams import summary_v2 as hp

from contrastlab.tracking.hparams import as_category, column_kind, hparam_value, mark_leading
from contrastlab.tracking.layout import category, exact, layout_summary, log_report_images, multiline, replace_events
from contrastlab.tracking.tags import tag_for
from contrastlab.tuning.space import Parameter, SearchSpace

STATE_PARAM = "trial_state"
STATES = ("COMPLETE", "PRUNED", "FAIL")
REPORTED_FINALS = ("loss", "val/knn_top1", "val/linear_top1", "test/knn_top1", "test/linear_top1")


def metric_tags(metric: str) -> list[str]:
    """The table's metric columns: the study's metric, then the usual finals, as tags."""
    tags = (tag_for(name) for name in dict.fromkeys([metric, *REPORTED_FINALS]))
    return [tag for tag in tags if tag is not None]


def parameter_kind(param: Parameter) -> str:
    if param.kind in ("float", "int"):
        return "number"
    if param.kind == "categorical":
        return column_kind(param.choices)
    return "category"  # a list: its JSON text


def parameter_domain(param: Parameter) -> hp.Domain:
    if param.kind == "float":
        return hp.RealInterval(float(param.low), float(param.high))
    if param.kind == "int":
        return hp.IntInterval(int(param.low), int(param.high))
    kind = parameter_kind(param)
    if kind == "bool":
        return hp.Discrete([False, True])
    if kind == "number":
        return hp.Discrete(sorted({float(c) for c in param.choices}))
    if param.kind == "categorical":
        return hp.Discrete(sorted({as_category(c) for c in param.choices}))
    return None


def space_kinds(space: SearchSpace | None) -> dict[str, str]:
    return {p.path: parameter_kind(p) for p in (space.parameters if space else ())}


def session_values(params: dict[str, Any], state: str, space: SearchSpace | None) -> dict[str, Any]:
    """A trial's session values: each tuned value typed as its column, then the state."""
    kinds = space_kinds(space)
    values = {
        path: as_category(value) if kinds.get(path) == "category" else hparam_value(value)
        for path, value in params.items()
    }
    values[STATE_PARAM] = state
    return values


def study_layout(metric: str) -> list:
    """Every trial's curve of the study's metric (pruned ones stop early), its loss and throughput."""
    tag = tag_for(metric) or metric
    charts = [multiline(f"{tag}: every trial", [exact(tag)])]
    if tag != "train/loss":
        charts.append(multiline("train/loss: every trial", [exact("train/loss")]))
    charts.append(multiline("system/throughput: every trial", [exact("system/throughput")]))
    return [category(f"study: {tag} of every trial", charts)]


def write_study_tensorboard(root: Path, space: SearchSpace, metric: str) -> Path:
    """The root event file of a study's TensorBoard folder (rewritten, never appended to)."""
    hparams = [hp.HParam(p.path, parameter_domain(p)) for p in space.parameters]
    hparams.append(hp.HParam(STATE_PARAM, hp.Discrete(list(STATES)), description="how the trial ended"))
    metrics = [hp.Metric(tag, display_name=tag) for tag in metric_tags(metric)]
    experiment = mark_leading(hp.hparams_config_pb(hparams, metrics), {h.name for h in hparams})
    return replace_events(root, [experiment, layout_summary(study_layout(metric))])


def log_study_figures(output: str | Path) -> int:
    """Log the PNG figures of the study's report (beside `report.md` in the output folder, if
    any) as images in `tensorboard/report`; returns how many were logged."""
    output = Path(output)
    return log_report_images(output / "tensorboard", output)


__all__ = [
    "REPORTED_FINALS",
    "STATE_PARAM",
    "log_study_figures",
    "metric_tags",
    "session_values",
    "study_layout",
    "write_study_tensorboard",
]
