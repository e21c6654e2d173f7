"""An ablation's TensorBoard folder (`OUTPUT/runs`, opened with `tensorboard --logdir`).

Each run `<variant>/seed<k>/tensorboard` holds the engine's grouped scalars and one HParams
session: the labels written here before it starts (`ablation/variant`, `ablation/seed`,
`ablation/component/<name>`, `ablation/tuned/<path>`), then its config. The root holds one
event file, rewritten after every invocation: the table's declaration (the labels and the
config fields that differ between runs listed first, then the constant ones; the val and
test metrics and the loss as metric columns), a custom-scalars layout and the report's
figures as images. The layout overlays, per metric, each variant's mean over seeds with a
band of one standard deviation (written per variant and epoch in its own run,
`mean_over_seeds/<variant>`, as `over_seeds/<tag>/mean|lower|upper`, so each variant has
its colour) and, in a second category, every run's curve.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from contrastlab.study.values import safe_name
from contrastlab.tracking.hparams import columns, experiment_summary, run_session_values, write_run_labels
from contrastlab.tracking.layout import (
    category,
    exact,
    layout_summary,
    margin,
    multiline,
    replace_events,
    report_images,
    scalar_summary,
)
from contrastlab.tracking.tags import tag_for

BANDS_DIR = "mean_over_seeds"  # runs/mean_over_seeds/<variant>: one run (one colour) per variant
BAND_PREFIX = "over_seeds"
LABEL_PREFIX = "ablation/"
DESCRIPTIONS = {
    "ablation/variant": "the ablation's variant",
    "ablation/seed": "the seed (data order and initialisation; paired across variants)",
}


def run_labels(run: Any) -> dict[str, Any]:
    """`ablation/variant`, `ablation/seed`, `ablation/component/<name>`, `ablation/tuned/<path>`:
    TensorBoard lists the columns that vary by name, so the prefix puts these first (and
    its table shows the first few columns by default)."""
    return {f"{LABEL_PREFIX}{name}": value for name, value in run.hparams().items()}


def session_rows(plan: Sequence[Any]) -> list[dict[str, Any]]:
    """Each planned run's session values, as the engine writes them."""
    return [run_session_values(run.config.to_dict(), run_labels(run)) for run in plan]


def label_runs(runs: Sequence[Any], plan: Sequence[Any]) -> None:
    """Write the labels of `runs` into their folders (after the folders are prepared): their
    sessions then lead with them, and a column mixing text and numbers across the whole
    plan is held as text in every run."""
    rows = session_rows(plan)
    categories = [name for name, kind, *_ in columns(rows) if kind == "category"]
    for run in runs:
        write_run_labels(run.run_dir, run_labels(run), categories)


def band_tags(tag: str) -> tuple[str, str, str]:
    base = f"{BAND_PREFIX}/{tag}"
    return f"{base}/mean", f"{base}/lower", f"{base}/upper"


def run_points(result: dict[str, Any], key: str) -> dict[int, float]:
    """A run's (epoch -> value) of a metric key: its curve, else its final value at its last epoch."""
    curve = {int(e): float(v) for e, v in (result.get("curves") or {}).get(key) or []}
    if curve:
        return curve
    value = (result.get("metrics") or {}).get(key)
    epoch = (result.get("metrics") or {}).get("epoch")
    if isinstance(value, (int, float)) and isinstance(epoch, (int, float)) and math.isfinite(value):
        return {int(epoch): float(value)}
    return {}


def band(values: list[float]) -> tuple[float, float, float]:
    """(mean, mean - sd, mean + sd) over seeds; the sample SD, 0 for one seed."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, mean - sd, mean + sd


def band_summaries(results: Sequence[dict[str, Any]], variant: str, keys: Sequence[str]) -> list:
    """Per metric key and epoch of `variant`: the mean and band over the seeds that reached that epoch."""
    summaries = []
    runs = [r for r in results if r.get("variant") == variant and not r.get("error")]
    for key in keys:
        per_run = [run_points(r, key) for r in runs]
        for epoch in sorted({e for points in per_run for e in points}):
            values = [points[epoch] for points in per_run if epoch in points]
            for tag, value in zip(band_tags(tag_for(key) or key), band(values)):
                summaries.append((scalar_summary(tag, value), epoch))
    return summaries


def ablation_layout(name: str, keys: Sequence[str]) -> list:
    tags = [tag_for(key) or key for key in keys]
    bands = [margin(f"{tag}: mean ± 1 sd over seeds, per variant", [band_tags(tag)]) for tag in tags]
    runs = [multiline(f"{tag}: every run", [exact(tag)]) for tag in tags]
    return [
        category(f"ablation {name}: each variant over seeds", bands),
        category(f"ablation {name}: every run (variant/seed)", runs),
    ]


def curve_keys(metrics: Sequence[str]) -> list[str]:
    """The metric keys overlaid: each of the spec's metrics on val, then the loss."""
    return [*(f"val/{m}" for m in metrics), "loss"]


def write_ablation_tensorboard(
    output: str | Path, spec: Any, plan: Sequence[Any], results: Sequence[dict[str, Any]]
) -> Path:
    """The root event file of `OUTPUT/runs` (replaces the previous one)."""
    output = Path(output)
    variants = [v.name for v in spec.variants]
    keys = curve_keys(spec.metrics)
    labels = list(dict.fromkeys(name for run in plan for name in run_labels(run)))
    cols = columns(session_rows(plan), first=labels)
    metric_tags = [tag_for(f"{split}/{m}") for m in spec.metrics for split in ("val", "test")] + ["train/loss"]
    summaries: list = [
        experiment_summary(cols, [t for t in metric_tags if t], DESCRIPTIONS),
        layout_summary(ablation_layout(spec.name, keys)),
        *report_images(output / "report"),
    ]
    for variant in variants:
        replace_events(output / "runs" / BANDS_DIR / safe_name(variant), band_summaries(results, variant, keys))
    return replace_events(output / "runs", summaries)


__all__ = ["band", "band_tags", "label_runs", "run_labels", "write_ablation_tensorboard"]
