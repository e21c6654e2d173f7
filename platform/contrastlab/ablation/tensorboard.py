"""An ablation's TensorBoard folder (`OUTPUT/runs`, opened with `tensorboard --logdir`).

Each run `<variant>/seed<k>/tensorboard` holds the engine's grouped scalars and one HParams
session: the labels written here before it starts (`variant`, `seed`, `component/<name>`,
`tuned/<path>`), then its config. The root holds one event file, rewritten after every
invocation: the table's declaration (the labels and the config fields that differ between runs
listed first, then the constant ones; the val and test metrics and the loss as metric
columns), per variant and epoch the mean over seeds with a band of one standard deviation
(`variants/<variant>/<tag>/mean|lower|upper`), a custom-scalars layout that overlays them
(and, in a second category, every run's curve), and the report's figures as images.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

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

BAND_PREFIX = "variants"
DESCRIPTIONS = {
    "variant": "the ablation's variant",
    "seed": "the seed (data order and initialisation; paired across variants)",
}


def session_rows(plan: Sequence[Any]) -> list[dict[str, Any]]:
    """Each planned run's session values, as the engine writes them."""
    return [run_session_values(run.config.to_dict(), run.hparams()) for run in plan]


def label_runs(runs: Sequence[Any], plan: Sequence[Any]) -> None:
    """Write the labels of `runs` into their folders (after the folders are prepared): their
    sessions then lead with them, and a column mixing text and numbers across the whole
    plan is held as text in every run."""
    rows = session_rows(plan)
    categories = [name for name, kind, *_ in columns(rows) if kind == "category"]
    for run in runs:
        write_run_labels(run.run_dir, run.hparams(), categories)


def band_tags(variant: str, tag: str) -> tuple[str, str, str]:
    base = f"{BAND_PREFIX}/{variant}/{tag}"
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


def band_summaries(results: Sequence[dict[str, Any]], variants: Sequence[str], keys: Sequence[str]) -> list:
    """Per variant, metric key and epoch: the mean and band over the seeds that reached that epoch."""
    summaries = []
    for variant in variants:
        runs = [r for r in results if r.get("variant") == variant and not r.get("error")]
        for key in keys:
            per_run = [run_points(r, key) for r in runs]
            for epoch in sorted({e for points in per_run for e in points}):
                values = [points[epoch] for points in per_run if epoch in points]
                for tag, value in zip(band_tags(variant, tag_for(key) or key), band(values)):
                    summaries.append((scalar_summary(tag, value), epoch))
    return summaries


def ablation_layout(name: str, variants: Sequence[str], keys: Sequence[str]) -> list:
    tags = [tag_for(key) or key for key in keys]
    bands = [margin(f"{tag}: mean ± 1 sd over seeds", [band_tags(v, tag) for v in variants]) for tag in tags]
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
    labels = list(dict.fromkeys(name for run in plan for name in run.hparams()))
    cols = columns(session_rows(plan), first=labels)
    metric_tags = [tag_for(f"{split}/{m}") for m in spec.metrics for split in ("val", "test")] + ["train/loss"]
    summaries: list = [
        experiment_summary(cols, [t for t in metric_tags if t], DESCRIPTIONS),
        layout_summary(ablation_layout(spec.name, variants, keys)),
        *report_images(output / "report"),
        *band_summaries(results, variants, keys),
    ]
    return replace_events(output / "runs", summaries)


__all__ = ["band", "band_tags", "label_runs", "write_ablation_tensorboard"]
