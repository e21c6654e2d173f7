"""Statistics for ablation studies: paired comparisons over seeds, Holm correction, verdicts.

Variants of an ablation share seeds (same data order, same initialisation stream), so a
variant and the reference are compared *paired by seed*: the unit of evidence is the
per-seed difference, which removes the seed-to-seed variation the two runs have in common.
The numbers behind it (sign-flip and t tests, intervals, power) are in
`contrastlab.ablation.inference`, the factorial contrasts in `contrastlab.ablation.factorial`,
the verdict sentences in `contrastlab.ablation.verdicts`.

`analyse_results` applies them to a whole results table. Verdicts and statistics use the
test split (`test/<metric>`), which no selection step has seen; the val split
(`val/<metric>`) is carried along as a descriptive column. A run without `test/<metric>` is
missing for that metric, with its reason: nothing is read from other keys in its place.

One Holm family covers every test the report shows (each variant against the reference and,
for a full factorial, every effect) over all metrics, or over `primary_metric` alone when it
is given; the other metrics are then exploratory and their p-values unadjusted. Intervals of
the family are Bonferroni-simultaneous (level 1 - alpha/m): with the t-test, an interval that
excludes 0 implies that Holm rejects, so the intervals never claim more than the test.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from contrastlab.ablation.analysis import (
    EffectStats,
    MetricAnalysis,
    PowerLine,
    Result,
    StudyAnalysis,
    VariantStats,
)
from contrastlab.ablation.factorial import IncompleteDesign, factorial_contrasts, per_seed
from contrastlab.ablation.inference import (
    INTERVALS,
    MC_DRAWS,
    TESTS,
    PairedComparison,
    bootstrap_mean_ci,
    can_reach,
    compare_differences,
    holm_correction,
    minimum_detectable_effect,
    paired_difference,
    seeds_needed,
    summarize,
)
from contrastlab.ablation.verdicts import KINDS, format_p, verdict
from contrastlab.config import ConfigError

# Names that mark a metric where lower is better; everything else is read as higher-is-better.
LOWER_IS_BETTER_HINTS = ("loss", "error", "alignment", "uniformity")
TEST_SPLIT, VAL_SPLIT = "test", "val"
DEFAULT_EFFECT = 0.01  # one point of an accuracy in [0, 1]


def index_results(results: Sequence[Result]) -> dict[tuple[str, int], Result]:
    index: dict[tuple[str, int], Result] = {}
    for position, result in enumerate(results):
        seed = result.get("seed")
        if not isinstance(result.get("variant"), str) or not isinstance(seed, numbers.Integral):
            raise ConfigError("results", f"[{position}]", "a dict with a str 'variant' and an int 'seed'")
        key = (result["variant"], int(seed))
        if key in index:
            raise ConfigError("results", f"[{position}]", f"one result per variant and seed; {key} repeats")
        index[key] = result
    return index


def metric_value(result: Result | None, metric: str) -> tuple[float | None, str]:
    """The value of `metric` (a full key such as `test/knn_top1`) in a run, or None and why."""
    if result is None:
        return None, "no run"
    value = (result.get("metrics") or {}).get(metric)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value), ""
    if result.get("error"):
        return None, f"failed: {result['error']}"
    if value is None:
        return None, f"no {metric}"
    return None, f"{metric} not finite ({value})"


def split_key(split: str, metric: str) -> str:
    return f"{split}/{metric}"


def _lower_is_better(metric: str) -> bool:
    return any(hint in metric.lower() for hint in LOWER_IS_BETTER_HINTS)


def auto_scale(metric: str, values: Sequence[float]) -> float:
    """Accuracy-like metrics (all values in [0, 1], higher is better) are shown as points."""
    inside = bool(values) and all(0.0 <= v <= 1.0 for v in values)
    return 100.0 if inside and not _lower_is_better(metric) else 1.0


def _check(
    design: str,
    test: str,
    interval: str,
    confidence: float,
    metrics: Sequence[str],
    primary_metric: str | None,
    effect: float,
) -> None:
    if not metrics:
        raise ConfigError("report", "metrics", "at least one metric name")
    checks = [
        (design in KINDS, "design", f"one of {', '.join(KINDS)}; got {design!r}"),
        (test in TESTS, "test", f"one of {', '.join(TESTS)}; got {test!r}"),
        (interval in INTERVALS, "interval", f"one of {', '.join(INTERVALS)}; got {interval!r}"),
        (0.0 < confidence < 1.0, "confidence", f"a number in (0, 1); got {confidence!r}"),
        (
            primary_metric is None or primary_metric in metrics,
            "primary_metric",
            f"one of the metrics ({', '.join(metrics)}); got {primary_metric!r}",
        ),
        (math.isfinite(effect) and effect > 0, "effect", f"a positive number in metric units; got {effect!r}"),
    ]
    for ok, name, expected in checks:
        if not ok:
            raise ConfigError("report", name, expected)


def _variant_rows(
    index: dict[tuple[str, int], Result],
    variants: list[str],
    seeds: list[int],
    metric: str,
    component_of: Mapping[str, str] | None,
) -> list[VariantStats]:
    rows = []
    for variant in variants:
        values, missing, val_values = {}, {}, {}
        for s in seeds:
            result = index.get((variant, s))
            value, why = metric_value(result, split_key(TEST_SPLIT, metric))
            if value is None:
                missing[s] = why
            else:
                values[s] = value
            val, _ = metric_value(result, split_key(VAL_SPLIT, metric))
            if val is not None:
                val_values[s] = val
        mean, std = summarize(list(values.values()))
        val_mean, val_std = summarize(list(val_values.values()))
        component = (component_of or {}).get(variant, variant)
        rows.append(VariantStats(variant, component, values, missing, mean, std, val_values, val_mean, val_std))
    return rows


def _effects(
    rows: list[VariantStats], levels: Mapping[str, Mapping[str, Any]] | None, reference: str
) -> tuple[list[EffectStats], str]:
    if levels is None:
        return [], "no component levels were given, so no factorial effects"
    present = {r.variant for r in rows}
    try:
        contrasts = factorial_contrasts({v: s for v, s in levels.items() if v in present}, reference)
    except IncompleteDesign as err:
        return [], f"no factorial effects: {err}"
    values = {r.variant: r.values for r in rows}
    return [EffectStats(c.name, c.kind, per_seed(c, values)) for c in contrasts], ""


def _power(analysis: MetricAnalysis, alpha: float, test: str, effect: float) -> PowerLine | None:
    """Pooled sd of the per-seed differences over the metric's variant comparisons."""
    compared = [r.comparison for r in analysis.variants[1:] if r.comparison and r.comparison.n_pairs >= 2]
    if not compared:
        return None
    dof = sum(c.n_pairs - 1 for c in compared)
    sd = math.sqrt(sum((c.n_pairs - 1) * c.std_diff**2 for c in compared) / dof)
    n = max(c.n_pairs for c in compared)  # the seeds the study ran; failed runs only lower it
    return PowerLine(
        sd,
        len(compared),
        n,
        alpha,
        minimum_detectable_effect(sd, n, alpha, test),
        effect,
        seeds_needed(effect, sd, alpha, test),
    )


Tested = tuple[MetricAnalysis, VariantStats | EffectStats, list[float]]


def _tested_items(analyses: list[MetricAnalysis]) -> list[Tested]:
    """Every test the report shows, with its per-seed differences (test split)."""
    items: list[Tested] = []
    for analysis in analyses:
        reference = analysis.variants[0]
        for row in analysis.variants[1:]:
            paired = sorted(set(row.values) & set(reference.values))
            items.append((analysis, row, [row.values[s] - reference.values[s] for s in paired]))
        items += [(analysis, effect, list(effect.values.values())) for effect in analysis.effects]
    return items


def analyse_results(
    results: Sequence[Result],
    reference: str,
    metrics: Sequence[str],
    *,
    design: str = "leave_one_out",
    component_of: Mapping[str, str] | None = None,
    seeds: Sequence[int] | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    test: str = "sign_flip",
    interval: str = "t",
    scales: Mapping[str, float] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    primary_metric: str | None = None,
    levels: Mapping[str, Mapping[str, Any]] | None = None,
    effect: float | None = None,
) -> StudyAnalysis:
    """Per metric: every variant's mean ± std on test (and val), its paired comparison with the
    reference on test, Holm-adjusted p over the family, a verdict, a power line and, for a full
    factorial, the main effects and two-way interactions."""
    effect = DEFAULT_EFFECT if effect is None else float(effect)
    _check(design, test, interval, confidence, metrics, primary_metric, effect)
    index = index_results(results)
    if not any(variant == reference for variant, _ in index):
        raise ConfigError("report", "reference", f"a variant present in the results; got {reference!r}")
    variants = list(dict.fromkeys([reference] + [variant for variant, _ in index]))
    all_seeds = sorted(set(seeds or ()) | {s for _, s in index})
    family_metrics = [primary_metric] if primary_metric else list(metrics)
    analyses = []
    for metric in metrics:
        rows = _variant_rows(index, variants, all_seeds, metric, component_of)
        shown = [v for r in rows for v in (*r.values.values(), *r.val_values.values())]
        analysis = MetricAnalysis(
            metric,
            (scales or {}).get(metric, auto_scale(metric, shown)),
            (higher_is_better or {}).get(metric, not _lower_is_better(metric)),
            rows,
            family=metric in family_metrics,
        )
        if design == "full_factorial":
            analysis.effects, analysis.factorial_note = _effects(rows, levels, reference)
        analyses.append(analysis)

    alpha = 1.0 - confidence
    items = _tested_items(analyses)
    family_size = sum(a.family and len(d) >= 2 for a, _, d in items)
    family_confidence = 1.0 - alpha / family_size if family_size else confidence
    for analysis, target, diffs in items:
        level = family_confidence if analysis.family else confidence
        target.family = analysis.family
        target.comparison = compare_differences(
            diffs, test=test, confidence=level, interval_kind=interval, n_boot=n_boot, seed=seed, draws=MC_DRAWS
        )
        target.p_adj = target.comparison.p_value  # exploratory: unadjusted
    family = [target for analysis, target, _ in items if analysis.family]
    for target, p_holm in zip(family, holm_correction([t.comparison.p_value for t in family]), strict=True):
        target.p_adj = p_holm

    power_alpha = alpha / family_size if family_size else alpha
    for analysis in analyses:
        analysis.power = _power(analysis, power_alpha if analysis.family else alpha, test, effect)
        for row in analysis.variants[1:]:
            row.verdict = _verdict_of(row, analysis, design, alpha, power_alpha, family_size)
    return StudyAnalysis(
        analyses,
        reference,
        design,
        test,
        interval,
        alpha,
        all_seeds,
        family_metrics,
        family_size,
        family_confidence,
        effect,
    )


def _verdict_of(
    row: VariantStats, analysis: MetricAnalysis, design: str, alpha: float, first_step: float, family_size: int
) -> str:
    c = row.comparison
    assert c is not None
    # Under Holm nothing is rejected unless the smallest p is below alpha / m.
    needed = first_step if row.family else alpha
    floor = ""
    if c.n_pairs >= 2 and not can_reach(c.test, c.n_pairs, needed):
        floor = (
            f"with {c.n_pairs} seeds the smallest possible p is {format_p(c.min_p)}, so no difference can "
            f"be significant" + (f" (Holm's first step needs p < {needed:.2g})" if row.family else "")
        )
    correction = f"Holm over {family_size}" if row.family else "unadjusted, exploratory"
    return verdict(
        row.component,
        c.mean_diff,
        c.ci,
        row.p_adj,
        analysis.metric,
        design,
        spread=c.std_diff,
        scale=analysis.scale,
        higher_is_better=analysis.higher_is_better,
        alpha=alpha,
        confidence=c.confidence,
        correction=correction,
        floor_note=floor,
    )


__all__ = [
    "DEFAULT_EFFECT",
    "KINDS",
    "TESTS",
    "EffectStats",
    "MetricAnalysis",
    "PairedComparison",
    "PowerLine",
    "StudyAnalysis",
    "VariantStats",
    "analyse_results",
    "auto_scale",
    "bootstrap_mean_ci",
    "format_p",
    "holm_correction",
    "index_results",
    "metric_value",
    "paired_difference",
    "split_key",
    "summarize",
    "verdict",
]
