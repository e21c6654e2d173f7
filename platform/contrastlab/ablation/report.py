"""The ablation report: from a table of per-(variant, seed) results to markdown, HTML, CSV
and plots, plus the `results.json` that lets `contrastlab report RUN_DIR` remake it later.

A result is a dict `{"variant", "seed", "metrics": {name: float}, "curves": {name: [(epoch,
value), ...]}, "overrides": {field: value}, "reused": bool}` with an optional `"error"`
string for a run that failed. A missing or failed run is listed as such in every output;
comparisons use only the seeds where both the variant and the reference have a value.
"""

from __future__ import annotations

import base64
import csv
import html
import inspect
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastlab.ablation.stats import (
    MetricAnalysis,
    Result,
    analyse_results,
    auto_scale,
    format_p,
    index_results,
    metric_value,
)
from contrastlab.config import ConfigError

RESULTS_FILE = "results.json"
DESIGN_TEXT = {
    "leave_one_out": "leave-one-out: each variant removes one component from the reference",
    "add_one_in": "add-one-in: each variant adds one component to the reference",
    "full_factorial": "full factorial: every combination of the components' settings, each compared with the "
                      "reference",
    "explicit": "explicit variants, each compared with the reference",
}
TEST_TEXT = {"t": "paired t-test (two-sided)", "wilcoxon": "Wilcoxon signed-rank test (two-sided)"}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _csv_number(value: float | int | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _summary_rows(analyses: list[MetricAnalysis]) -> list[list[Any]]:
    rows = []
    for analysis in analyses:
        for row in analysis.variants:
            c = row.comparison
            figures = [c.n_pairs, c.mean_diff, c.std_diff, c.ci_low, c.ci_high, c.p_value, row.p_holm] if c \
                else [None] * 7
            rows.append([analysis.metric, row.variant, row.component, len(row.values), len(row.missing),
                         *map(_csv_number, [row.mean, row.std, *figures]), c.test if c else "",
                         c.note if c else ""])
    return rows


SUMMARY_HEADER = ["metric", "variant", "component", "n", "n_missing", "mean", "std", "n_pairs", "diff",
                  "std_diff", "ci_low", "ci_high", "p", "p_holm", "test", "note"]


def _run_rows(index: dict[tuple[str, int], Result], variants: list[str], seeds: list[int],
              metrics: Sequence[str]) -> list[list[Any]]:
    rows = []
    for variant in variants:
        for s in seeds:
            result = index.get((variant, s))
            values = [metric_value(result, m)[0] for m in metrics]
            status = ("missing" if result is None else "failed" if result.get("error")
                      else "incomplete" if None in values else "ok")
            overrides = json.dumps(result.get("overrides") or {}, sort_keys=True) if result else ""
            rows.append([variant, s, status, bool(result and result.get("reused")),
                         (result or {}).get("error") or "", *map(_csv_number, values), overrides])
    return rows


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    """A figure on its own Agg canvas: no pyplot, so a user's interactive backend and
    pyplot's global figure list are left alone (reports are also made inside Ray workers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, panels, i + 1) for i in range(panels)]


def _plot_bars(analysis: MetricAnalysis, path: Path) -> None:
    rows, scale = analysis.variants, analysis.scale
    names = [f"{row.variant}\n(reference)" if i == 0 else row.variant for i, row in enumerate(rows)]
    positions = np.arange(len(rows))
    unit = " (points)" if scale == 100 else ""
    figure, (left, right) = _figure(max(9.0, 1.8 * len(rows)), 4.4, panels=2)
    # Means as markers, not bars: accuracies of 70 ± 1 drawn as bars from 0 all look alike.
    for i, row in enumerate(rows):
        color = "tab:orange" if i == 0 else "tab:blue"
        left.errorbar([i], [row.mean * scale], yerr=[row.std * scale], fmt="o", color=color, capsize=5,
                      markersize=8)
        seed_values = [v * scale for v in row.values.values()]
        left.scatter([i + 0.12] * len(seed_values), seed_values, color="black", s=10, zorder=3)
        if row.missing:
            left.annotate(f"{len(row.missing)} missing", (i, 0.02), xycoords=("data", "axes fraction"),
                          ha="center", color="red")
    left.set_xticks(positions, names, rotation=25, ha="right")
    left.set_xlim(-0.5, len(rows) - 0.5)
    left.set_title("mean ± std over seeds (dots: seeds)", fontsize="medium")
    left.set_ylabel(f"{analysis.metric}{unit}")
    compared = rows[1:]
    diffs = np.array([row.comparison.mean_diff * scale for row in compared])
    lows = np.array([row.comparison.ci_low * scale for row in compared])
    highs = np.array([row.comparison.ci_high * scale for row in compared])
    right.bar(positions[1:], diffs, yerr=np.nan_to_num([diffs - lows, highs - diffs]), color="tab:blue",
              alpha=0.75, capsize=5)
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_xticks(positions[1:], names[1:], rotation=25, ha="right")
    right.set_xlim(-0.5, len(rows) - 0.5)
    right.set_title(f"variant − reference, paired ({compared[0].comparison.confidence:.0%} bootstrap CI)"
                    if compared else "no variants to compare", fontsize="medium")
    right.set_ylabel(f"Δ {analysis.metric}{unit}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _plot_curves(index: dict[tuple[str, int], Result], variants: list[str], name: str, scale: float,
                 path: Path) -> bool:
    figure, (axis,) = _figure(7.0, 4.2)
    drawn = False
    for i, variant in enumerate(variants):
        by_epoch: dict[float, list[float]] = {}
        runs = [result for (v, _), result in index.items() if v == variant]
        for result in runs:
            for epoch, value in (result.get("curves") or {}).get(name) or []:
                if value is not None and math.isfinite(value):
                    by_epoch.setdefault(epoch, []).append(value * scale)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        mean = np.array([np.mean(by_epoch[e]) for e in epochs])
        std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
        line, = axis.plot(epochs, mean, label=variant, linewidth=2.2 if i == 0 else 1.4)
        axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        drawn = True
    if drawn:
        axis.set(xlabel="epoch", ylabel=name + (" (points)" if scale == 100 else ""),
                 title=f"{name}: mean over the seeds at each epoch, band ± std")
        axis.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    return drawn


def _fmt(value: float | None, scale: float, sign: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value * scale:{sign}.{2 if scale == 100 else 4}f}"


def _missing_text(missing: Mapping[int, str]) -> str:
    return "; ".join(f"seed {s}: {why}" for s, why in missing.items()) or "none"


def _blocks(analyses: list[MetricAnalysis], run_rows: list[list[Any]], header: list[str],
            images: dict[str, str], overrides: dict[str, str]) -> list[tuple]:
    """The report as neutral blocks, rendered to markdown and HTML alike so they never disagree."""
    blocks: list[tuple] = [("h2", "Verdicts")]
    for analysis in analyses:
        blocks.append(("list", [f"**{analysis.metric}**: {row.verdict}" for row in analysis.variants[1:]]))
    for analysis in analyses:
        m, scale = analysis.metric, analysis.scale
        unit = ", points (×100)" if scale == 100 else ""
        better = "higher" if analysis.higher_is_better else "lower"
        blocks += [("h2", f"{m}{unit}, {better} is better"), ("table", [
            "variant", "component", "n", "mean ± std", "missing"], [
            [r.variant, r.component, len(r.values), f"{_fmt(r.mean, scale)} ± {_fmt(r.std, scale)}",
             _missing_text(r.missing)] for r in analysis.variants])]
        diff_rows = []
        for r in analysis.variants[1:]:
            c = r.comparison
            diff = f"{_fmt(c.mean_diff, scale, '+')} ± {_fmt(c.std_diff, scale)}"
            ci = f"[{_fmt(c.ci_low, scale)}, {_fmt(c.ci_high, scale)}]"
            diff_rows.append([r.variant, c.n_pairs, diff, ci, format_p(c.p_value), format_p(r.p_holm),
                              c.note])
        blocks.append(("table", ["variant", "paired seeds", "diff ± std", "CI", "p", "p (Holm)", "note"],
                       diff_rows))
        if f"bar_{m}" in images:
            blocks.append(("image", images[f"bar_{m}"]))
    curve_images = [path for key, path in images.items() if key.startswith("curves_")]
    if curve_images:
        blocks += [("h2", "Learning curves"), *[("image", path) for path in curve_images]]
    blocks += [("h2", "Variants"), ("table", ["variant", "overrides"], list(overrides.items()))]
    # Same rows as runs.csv, with the values in the units of the tables above.
    scales = [analysis.scale for analysis in analyses]
    shown = [[*row[:5], *(_fmt(float(v) if v else None, k) for v, k in zip(row[5:-1], scales, strict=True))]
             for row in run_rows]
    blocks += [("h2", "Runs"), ("table", header[:-1], shown)]
    return blocks


def _markdown(title: str, facts: list[str], blocks: list[tuple]) -> str:
    lines = [f"# {title}", "", *[f"- {fact}" for fact in facts], ""]
    for kind, *content in blocks:
        if kind == "h2":
            lines += [f"## {content[0]}", ""]
        elif kind == "list":
            lines += [f"- {item}" for item in content[0]] + [""]
        elif kind == "table":
            head, rows = content
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
            lines.append("")
        elif kind == "image":
            lines += [f"![{content[0]}]({content[0]})", ""]
    return "\n".join(lines)


def _html(title: str, facts: list[str], blocks: list[tuple], out_dir: Path) -> str:
    def text(value: Any) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(str(value)))

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px}img{max-width:100%}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><ul>{''.join(f'<li>{text(f)}</li>' for f in facts)}</ul>"]
    for kind, *content in blocks:
        if kind == "h2":
            parts.append(f"<h2>{text(content[0])}</h2>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{text(item)}</li>" for item in content[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{text(cell)}</th>" for cell in content[0])
            body = "".join("<tr>" + "".join(f"<td>{text(c)}</td>" for c in row) + "</tr>"
                           for row in content[1])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "image":
            # Embedded, so the HTML file can be mailed or attached on its own.
            data = base64.b64encode((out_dir / content[0]).read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{html.escape(content[0])}' src='data:image/png;base64,{data}'></p>")
    return "".join(parts) + "</body></html>\n"


def write_report(
    results: Sequence[Result], out_dir: str | Path, reference: str, metrics: Sequence[str], title: str,
    mode_note: str, design: str, component_of: Mapping[str, str] | None = None, *,
    seeds: Sequence[int] | None = None, n_boot: int = 10000, seed: int = 0, confidence: float = 0.95,
    test: str = "t", scales: Mapping[str, float] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
) -> dict[str, Path]:
    """Write report.md, report.html, summary.csv, runs.csv, bar_<metric>.png and
    curves_<name>.png into `out_dir`; returns {file name: path} for what was written.

    `seeds` lists the seeds every variant was meant to run, so that a run that never
    reported is listed as missing; without it, the seeds seen in `results` are used.
    """
    analyses = analyse_results(results, reference, metrics, design=design, component_of=component_of,
                               seeds=seeds, n_boot=n_boot, seed=seed, confidence=confidence, test=test,
                               scales=scales, higher_is_better=higher_is_better)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = index_results(results)
    variants = [row.variant for row in analyses[0].variants] if analyses else [reference]
    all_seeds = sorted(set(seeds or ()) | {s for _, s in index})
    written: dict[str, Path] = {}

    _write_csv(out / "summary.csv", SUMMARY_HEADER, _summary_rows(analyses))
    header = ["variant", "seed", "status", "reused", "error", *metrics, "overrides"]
    run_rows = _run_rows(index, variants, all_seeds, metrics)
    _write_csv(out / "runs.csv", header, run_rows)
    written.update({"summary.csv": out / "summary.csv", "runs.csv": out / "runs.csv"})

    images: dict[str, str] = {}
    for analysis in analyses:
        name = f"bar_{_safe_name(analysis.metric)}.png"
        _plot_bars(analysis, out / name)
        images[f"bar_{analysis.metric}"] = name
    scale_of = {a.metric: a.scale for a in analyses}
    curve_names = list(dict.fromkeys(n for r in results for n in (r.get("curves") or {})))
    for curve in curve_names:
        values = [v for r in results for _, v in (r.get("curves") or {}).get(curve) or []
                  if v is not None and math.isfinite(v)]
        name = f"curves_{_safe_name(curve)}.png"
        if _plot_curves(index, variants, curve, scale_of.get(curve, auto_scale(curve, values)), out / name):
            images[f"curves_{curve}"] = name
    written.update({name: out / name for name in images.values()})

    status_counts = {status: sum(row[2] == status for row in run_rows)
                     for status in ("ok", "failed", "incomplete", "missing")}
    reused = sum(bool(row[3]) for row in run_rows)
    incomplete = [f"{row[0]} seed {row[1]} ({row[2]}{': ' + row[4] if row[4] else ''})"
                  for row in run_rows if row[2] != "ok"]
    n_compared = max(len(variants) - 1, 0)
    facts = [
        f"Design: {DESIGN_TEXT[design]}", f"Reference variant: `{reference}`",
        f"Seeds: {', '.join(map(str, all_seeds))} (variants are paired by seed)", f"Mode: {mode_note}",
        f"Test: {TEST_TEXT.get(test, test)} on the per-seed differences, using only seeds present for "
        "both the variant and the reference",
        f"Correction: Holm–Bonferroni within each metric, over its {n_compared} variant comparisons "
        "(untestable ones excluded)",
        f"Interval: {confidence:.0%} percentile bootstrap CI of the mean difference "
        f"({n_boot} resamples of seeds, generator seed {seed})"
        # With a handful of seeds the percentile bootstrap has few distinct resamples and is
        # too narrow; the test, not the interval, decides.
        + ("; with fewer than 10 seeds read it as descriptive" if len(all_seeds) < 10 else ""),
        f"Decision: a difference is significant when its Holm-adjusted p < {1 - confidence:.2g}",
        f"Runs: {status_counts['ok']} of {len(run_rows)} complete ({status_counts['failed']} failed, "
        f"{status_counts['incomplete']} without every metric, {status_counts['missing']} never reported); "
        f"{reused} reused from earlier runs",
        f"Missing or failed runs: {'; '.join(incomplete) if incomplete else 'none'}",
    ]
    # Retuned variants may carry different overrides per seed; show every distinct set.
    overrides = {v: " / ".join(dict.fromkeys(json.dumps(r.get("overrides") or {}, sort_keys=True)
                                             for (name, _), r in sorted(index.items()) if name == v))
                 for v in variants}
    blocks = _blocks(analyses, run_rows, header, images, overrides)
    (out / "report.md").write_text(_markdown(title, facts, blocks))
    (out / "report.html").write_text(_html(title, facts, blocks, out))
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


def save_results(
    results: Sequence[Result], run_dir: str | Path, meta: Mapping[str, Any] | None = None
) -> Path:
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
