"""The ablation report: from a table of per-(variant, seed) results to markdown, HTML, CSV
and plots, plus the `results.json` that lets `contrastlab report RUN_DIR` remake it later.

A result is a dict `{"variant", "seed", "metrics": {name: float}, "curves": {name: [(epoch,
value), ...]}, "overrides": {field: value}, "reused": bool}` with an optional `"error"`
string for a run that failed. Metric names carry their split: `val/knn_top1` (what selection
saw), `test/knn_top1` (evaluated once at the end), plus training scalars such as `loss`. The
report's statistics read `test/<metric>`; `val/<metric>` is shown beside it. A missing or
failed run is listed as such in every output; comparisons use only the seeds where both the
variant and the reference have a value. The words and tables are in `report_text`, the
plots in `report_render`, the markdown/HTML renderings in `contrastlab.study.render`.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrastlab.ablation.analysis import Result, StudyAnalysis
from contrastlab.ablation.report_render import plot_bars, plot_overlay, plot_small_multiples
from contrastlab.ablation.report_text import RAW, anchor_flags, fmt
from contrastlab.ablation.report_text import blocks as text_blocks
from contrastlab.ablation.report_text import facts as text_facts
from contrastlab.ablation.stats import (
    analyse_results,
    auto_scale,
    index_results,
    metric_value,
    split_key,
)
from contrastlab.config import ConfigError
from contrastlab.progress import Progress, track
from contrastlab.study.render import html_page, markdown
from contrastlab.study.values import safe_name

RESULTS_FILE = "results.json"
SPLITS = ("val", "test")
SUMMARY_HEADER = [
    "metric",
    "variant",
    "component",
    "n",
    "n_missing",
    "val_mean",
    "val_std",
    "test_mean",
    "test_std",
    "n_pairs",
    "diff",
    "std_diff",
    "ci_low",
    "ci_high",
    "ci_level",
    "interval",
    "p",
    "p_adjusted",
    "family",
    "test",
    "note",
]


def _csv_number(value: float | int | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _summary_rows(study: StudyAnalysis) -> list[list[Any]]:
    """One row per (metric, variant); the comparison columns are on the test split."""
    rows = []
    for analysis in study.metrics:
        for row in analysis.variants:
            c = row.comparison
            figures = [c.n_pairs, c.mean_diff, c.std_diff, c.ci_low, c.ci_high, c.confidence] if c else [None] * 6
            role = ("confirmatory" if row.family else "exploratory") if c else ""
            rows.append(
                [
                    analysis.metric,
                    row.variant,
                    row.component,
                    len(row.values),
                    len(row.missing),
                    *map(_csv_number, [row.val_mean, row.val_std, row.mean, row.std, *figures]),
                    c.interval if c else "",
                    _csv_number(c.p_value if c else None),
                    _csv_number(row.p_adj if c else None),
                    role,
                    c.test if c else "",
                    c.note if c else "",
                ]
            )
    return rows


def _run_rows(
    index: dict[tuple[str, int], Result], variants: list[str], seeds: list[int], metrics: Sequence[str]
) -> list[list[Any]]:
    """variant, seed, status, reused, error, then val and test of every metric, overrides."""
    rows = []
    for variant in variants:
        for s in seeds:
            result = index.get((variant, s))
            values = [metric_value(result, split_key(split, m))[0] for m in metrics for split in SPLITS]
            tested = values[1::2]
            status = (
                "missing"
                if result is None
                else "failed"
                if result.get("error")
                else "incomplete"
                if None in tested
                else "ok"
            )
            overrides = json.dumps(result.get("overrides") or {}, sort_keys=True) if result else ""
            rows.append(
                [
                    variant,
                    s,
                    status,
                    bool(result and result.get("reused")),
                    (result or {}).get("error") or "",
                    *values,
                    overrides,
                ]
            )
    return rows


def _shown_runs(run_rows: list[list[Any]], study: StudyAnalysis) -> list[list[Any]]:
    """runs.csv's rows in the units of the report's tables, without the overrides."""
    scales = [a.scale for a in study.metrics for _ in SPLITS]
    return [[*row[:5], *(fmt(v, k) for v, k in zip(row[5:-1], scales, strict=True))] for row in run_rows]


def _is_eval_curve(name: str, metrics: Sequence[str]) -> bool:
    """Curves of a split (val/..., test/...) or of a spec metric share one axis; the rest are
    training quantities, drawn one panel per variant."""
    last = name.rsplit("/", 1)[-1]
    # Bare accuracy names are the eval curves of results saved before the split prefixes.
    return name.split("/", 1)[0] in SPLITS or name in metrics or last.endswith("_top1") or last.startswith("probe_")


def _curves(
    results: Sequence[Result], variants: list[str], metrics: Sequence[str], study: StudyAnalysis, out: Path
) -> tuple[dict[str, str], list[str]]:
    scale_of = {split_key(split, a.metric): a.scale for a in study.metrics for split in SPLITS}
    names = list(dict.fromkeys(n for r in results for n in (r.get("curves") or {})))
    overlays, multiples = {}, []
    for name in names:
        per_variant = {
            v: [(r.get("curves") or {}).get(name) or [] for r in results if r["variant"] == v] for v in variants
        }
        file = f"curves_{safe_name(name)}.png"
        if _is_eval_curve(name, metrics):
            values = [
                v
                for runs in per_variant.values()
                for points in runs
                for _, v in points
                if v is not None and math.isfinite(v)
            ]
            if plot_overlay(per_variant, name, scale_of.get(name, auto_scale(name, values)), out / file):
                overlays[f"curves_{name}"] = file
        elif plot_small_multiples(per_variant, name, out / file):
            multiples.append(file)
    return overlays, multiples


def write_report(
    results: Sequence[Result],
    out_dir: str | Path,
    reference: str,
    metrics: Sequence[str],
    title: str,
    mode_note: str,
    design: str,
    component_of: Mapping[str, str] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    test: str = "sign_flip",
    interval: str = "t",
    scales: Mapping[str, float] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    anchors: Mapping[str, Mapping[str, float]] | None = None,
    levels: Mapping[str, Mapping[str, Any]] | None = None,
    primary_metric: str | None = None,
    effect: float | None = None,
) -> dict[str, Path]:
    """Write report.md, report.html, summary.csv, runs.csv, bar_<metric>.png and
    curves_<name>.png into `out_dir`; returns {file name: path} for what was written.

    `seeds` lists the seeds every variant was meant to run, so that a run that never
    reported is listed as missing; without it, the seeds seen in `results` are used.
    `anchors` ({"raw_pixels": {"val/<m>": x, "test/<m>": y}, "untrained": {...}}) adds the
    anchors table and flags variants below raw pixels; `levels` (variant -> component
    settings) gives a full factorial its effects; `primary_metric` narrows the Holm family to
    that metric; `effect` (metric units, default 0.01) is what the power lines aim at.
    """
    with Progress("building report: statistics"):  # a timed step: bootstrap intervals take a while
        study = analyse_results(
            results,
            reference,
            metrics,
            design=design,
            component_of=component_of,
            seeds=seeds,
            n_boot=n_boot,
            seed=seed,
            confidence=confidence,
            test=test,
            interval=interval,
            scales=scales,
            higher_is_better=higher_is_better,
            primary_metric=primary_metric,
            levels=levels,
            effect=effect,
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = index_results(results)
    variants = [row.variant for row in study.metrics[0].variants]

    _write_csv(out / "summary.csv", SUMMARY_HEADER, _summary_rows(study))
    run_header = [
        "variant",
        "seed",
        "status",
        "reused",
        "error",
        *[split_key(split, m) for m in metrics for split in SPLITS],
        "overrides",
    ]
    run_rows = _run_rows(index, variants, study.seeds, metrics)
    _write_csv(out / "runs.csv", run_header, run_rows)
    written = {"summary.csv": out / "summary.csv", "runs.csv": out / "runs.csv"}

    images: dict[str, str] = {}
    for analysis in track(study.metrics, "building report: figures", unit="metrics"):
        name = f"bar_{safe_name(analysis.metric)}.png"
        raw_pixels = ((anchors or {}).get(RAW) or {}).get(split_key("test", analysis.metric))
        plot_bars(analysis, out / name, raw_pixels)
        images[f"bar_{analysis.metric}"] = name
    overlays, multiples = _curves(results, variants, metrics, study, out)
    images.update(overlays)
    written.update({name: out / name for name in [*images.values(), *multiples]})

    flags = anchor_flags(study, anchors)
    # Retuned variants may carry different overrides per seed; show every distinct set.
    overrides = {
        v: " / ".join(
            dict.fromkeys(
                json.dumps(r.get("overrides") or {}, sort_keys=True)
                for (name, _), r in sorted(index.items())
                if name == v
            )
        )
        for v in variants
    }
    facts = text_facts(study, mode_note, n_boot, seed, flags, bool(anchors), run_rows)
    blocks = text_blocks(
        study, anchors, flags, images, multiples, overrides, run_header[:-1], _shown_runs(run_rows, study)
    )
    (out / "report.md").write_text(markdown(title, facts, blocks))
    (out / "report.html").write_text(html_page(title, facts, blocks, out))
    written.update({"report.md": out / "report.md", "report.html": out / "report.html"})
    return written


def _to_json(value: Any) -> Any:
    """JSON has no NaN: a missing number is stored as null and read back as missing."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def save_results(results: Sequence[Result], run_dir: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write `run_dir/results.json` atomically; `meta` holds write_report's arguments for later."""
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": 1, "meta": _to_json(dict(meta or {})), "results": _to_json(list(results))}
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    # A crash while writing must not leave a half file where the finished results were.
    os.replace(temporary, path)
    return path


def _read_payload(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablation results here")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(str(path), "", f"valid JSON ({err})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ConfigError(str(path), "results", "a list of run results")
    return path, payload


def load_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """The results saved by `save_results`, with curves as lists of (epoch, value) tuples."""
    _, payload = _read_payload(run_dir)
    results = payload["results"]
    for result in results:
        result["curves"] = {k: [tuple(point) for point in v] for k, v in (result.get("curves") or {}).items()}
    return results


def load_results_meta(run_dir: str | Path) -> dict[str, Any]:
    return dict(_read_payload(run_dir)[1].get("meta") or {})


def report_from_run_dir(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Remake the report from `run_dir/results.json` (into `run_dir/report` by default)."""
    path, payload = _read_payload(run_dir)
    meta = dict(payload.get("meta") or {})
    for required in ("reference", "metrics", "design"):
        if required not in meta:
            raise ConfigError(str(path), f"meta.{required}", "the report settings saved with the results")
    unknown = set(meta) - set(inspect.signature(write_report).parameters) - {"results", "out_dir"}
    if unknown:
        raise ConfigError(str(path), "meta", f"only write_report's arguments; unknown: {sorted(unknown)}")
    meta.setdefault("title", f"Ablation: {Path(run_dir).name}")
    meta.setdefault("mode_note", "not recorded")
    return write_report(load_results(run_dir), out_dir or Path(run_dir) / "report", **meta)
