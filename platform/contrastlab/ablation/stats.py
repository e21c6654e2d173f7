"""Statistics for ablation studies: paired comparisons over seeds, Holm correction, verdicts.

Variants of an ablation share seeds (same data order, same initialisation stream), so a
variant and the reference are compared *paired by seed*: the unit of evidence is the
per-seed difference, which removes the seed-to-seed variation the two runs have in common.
Callers pass only values that exist; deciding what is missing is the report's job, so these
functions reject NaN instead of guessing what it meant. `analyse_results` applies them to a
whole results table, recording for every variant which seeds are missing and why.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from contrastlab.config import ConfigError

TESTS = ("t", "wilcoxon")
KINDS = ("leave_one_out", "add_one_in", "full_factorial", "explicit")
# Names that mark a metric where lower is better; everything else is read as higher-is-better.
LOWER_IS_BETTER_HINTS = ("loss", "error", "alignment", "uniformity")

# Differences this close (relative to their size) count as identical: two variants that
# compute the same thing can still differ in the last bits through summation order.
_IDENTICAL_RTOL = 1e-12


@dataclass(frozen=True)
class PairedComparison:
    """A variant against the reference over paired seeds; differences are variant - reference."""

    n_pairs: int
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    confidence: float
    note: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite numbers, got {list(values)!r}; drop missing runs first")
    return array


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is 0 for one value, both NaN for none."""
    array = _as_finite_array(values, "summarize")
    if array.size == 0:
        return (math.nan, math.nan)
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return (float(np.mean(array)), std)


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling the values with replacement.

    With fewer than two values there is nothing to resample, so the interval is NaN rather
    than a degenerate point that would look like certainty.
    """
    array = _as_finite_array(values, "bootstrap_mean_ci")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot!r}")
    if array.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, array.size, size=(n_boot, array.size))
    means = array[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return (float(low), float(high))


def _degenerate_p(diffs: np.ndarray, test: str) -> tuple[float, str] | None:
    """p-values for differences without spread, where the tests themselves break down."""
    scale = max(1.0, float(np.max(np.abs(diffs))))
    if np.all(np.abs(diffs) <= _IDENTICAL_RTOL * scale):
        return (1.0, "all paired differences are zero")
    if test == "t" and float(np.ptp(diffs)) <= _IDENTICAL_RTOL * scale:
        # The t statistic is d / 0: every seed moved by exactly the same amount, which is
        # as consistent as evidence gets; p=0 says so instead of scipy's NaN.
        return (0.0, f"all {diffs.size} paired differences are identical ({diffs[0]:.6g}); "
                     "zero variance, p set to 0")
    return None


def _test_p(diffs: np.ndarray, test: str, alpha: float) -> tuple[float, str]:
    degenerate = _degenerate_p(diffs, test)
    if degenerate is not None:
        return degenerate
    if test == "t":
        # ttest_rel on (diffs, 0) is the paired t-test on the original pairs.
        return (float(scipy_stats.ttest_rel(diffs, np.zeros_like(diffs)).pvalue), "")
    p_value = float(scipy_stats.wilcoxon(diffs).pvalue)
    smallest = 2.0 ** (1 - diffs.size)  # exact two-sided minimum: all signs agree
    note = ""
    if smallest > alpha:
        note = f"with {diffs.size} pairs the smallest possible Wilcoxon p is {smallest:.3g}"
    return (p_value, note)


def paired_difference(
    variant_values: Sequence[float],
    reference_values: Sequence[float],
    n_boot: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    test: str = "t",
) -> PairedComparison:
    """Compare a variant with the reference over seeds paired by index.

    Returns the mean and sample std of the per-seed differences (variant - reference), a
    percentile bootstrap CI of the mean difference (seeds resampled with replacement from a
    seeded generator, so the report is reproducible) and a two-sided p-value from the
    paired t-test (`test="t"`) or the Wilcoxon signed-rank test (`test="wilcoxon"`).
    """
    if test not in TESTS:
        raise ValueError(f"test: expected one of {TESTS}, got {test!r}")
    variant = _as_finite_array(variant_values, "variant_values")
    reference = _as_finite_array(reference_values, "reference_values")
    if variant.size != reference.size:
        raise ValueError(
            f"paired_difference: {variant.size} variant values but {reference.size} reference values; "
            "pass only seeds present for both"
        )
    diffs = variant - reference
    mean_diff, std_diff = summarize(diffs)
    ci_low, ci_high = bootstrap_mean_ci(diffs, n_boot=n_boot, seed=seed, confidence=confidence)
    if diffs.size < 2:
        note = f"{diffs.size} paired seed{'s' if diffs.size != 1 else ''}: at least 2 are needed for a test"
        p_value = math.nan
    else:
        p_value, note = _test_p(diffs, test, alpha=1.0 - confidence)
    return PairedComparison(
        n_pairs=int(diffs.size), mean_diff=mean_diff, std_diff=std_diff, ci_low=ci_low,
        ci_high=ci_high, p_value=p_value, test=test, confidence=confidence, note=note,
    )


def holm_correction(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by (m - i + 1); a running maximum keeps
    the adjusted values in the same order as the raw ones, and they are capped at 1. NaN
    entries (comparisons that could not be tested) stay NaN and do not count towards m.
    """
    raw = np.asarray(p_values, dtype=float).reshape(-1)
    adjusted = np.full(raw.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(raw))
    if np.any((raw[tested] < 0) | (raw[tested] > 1)):
        raise ValueError(f"holm_correction: p-values must lie in [0, 1], got {list(p_values)!r}")
    order = tested[np.argsort(raw[tested], kind="stable")]
    m = order.size
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * raw[index]))
        adjusted[index] = running
    return [float(p) for p in adjusted]


def _decimals(*magnitudes: float) -> int:
    """Decimals that give the largest magnitude two significant digits (at least one decimal)."""
    finite = [abs(m) for m in magnitudes if math.isfinite(m) and m != 0]
    if not finite:
        return 1
    return min(6, max(1, 1 - math.floor(math.log10(max(finite)))))


def format_p(p_value: float) -> str:
    if math.isnan(p_value):
        return "n/a"
    if p_value < 0.001:
        return "<0.001"
    # Two decimals from 0.095 up, so 0.0998 prints as 0.10 and not as 0.1.
    return f"{p_value:.2f}" if p_value >= 0.095 else f"{p_value:.2g}"


def _subject(name: str, kind: str) -> str:
    return {"leave_one_out": f"removing {name}", "add_one_in": f"adding {name}"}.get(kind, name)


def verdict(
    component_or_variant: str,
    diff: float,
    ci: tuple[float, float],
    p_adj: float,
    metric: str,
    kind: str,
    *,
    spread: float | None = None,
    scale: float = 1.0,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    confidence: float = 0.95,
    correction: str | None = "Holm",
) -> str:
    """One line that states the effect of a component on a metric.

    `diff` is variant - reference in the metric's own units; `scale` converts for display
    (100 turns a [0, 1] accuracy into points). `spread` is the std of the per-seed
    differences, shown as "±". `kind` says how the variant relates to the reference:
    `leave_one_out` (component removed), `add_one_in` (component added) or `explicit`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    shown_diff = diff * scale
    shown_spread = None if spread is None else spread * scale
    low, high = ci[0] * scale, ci[1] * scale
    digits = _decimals(shown_diff, shown_spread or 0.0, low, high)
    points = scale == 100
    plus_minus = "" if shown_spread is None else f" ± {shown_spread:.{digits}f}"
    p_text = f"p={format_p(p_adj)}" + (f", {correction}" if correction else "")
    subject = _subject(component_or_variant, kind)
    significant = not math.isnan(p_adj) and p_adj < alpha and shown_diff != 0
    if significant and diff < 0:
        # The line states a magnitude ("costs 2.1"), so its interval is shown the same way round.
        low, high = -high, -low
    ci_text = f"{confidence:.0%} CI [{low:.{digits}f}, {high:.{digits}f}], " if math.isfinite(low) else ""
    details = f"{ci_text}{p_text}"
    signed = f"{shown_diff:+.{digits}f}{plus_minus}{' points' if points else ''}"
    if math.isnan(diff):
        return f"{subject}: not tested on {metric}, no seed has a value for both"
    if math.isnan(p_adj):
        return f"{subject}: not tested on {metric}, too few paired seeds ({signed})"
    if not significant:
        return f"{subject}: no significant difference in {metric} ({signed}, {details})"
    verb = "gains" if (diff > 0) == higher_is_better else "costs"
    unit = "points of" if points else "in"
    return f"{subject} {verb} {abs(shown_diff):.{digits}f}{plus_minus} {unit} {metric} ({details})"


# From a results table to per-metric statistics. The table's shape is described in
# `contrastlab.ablation.report`; here a missing value becomes a listed absence, not a NaN.
Result = Mapping[str, Any]


@dataclass
class VariantStats:
    """One variant on one metric: its values per seed, what is missing and the comparison."""

    variant: str
    component: str
    values: dict[int, float]
    missing: dict[int, str]
    mean: float
    std: float
    comparison: PairedComparison | None = None
    p_holm: float = math.nan
    verdict: str = ""


@dataclass
class MetricAnalysis:
    metric: str
    scale: float
    higher_is_better: bool
    variants: list[VariantStats]


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
    """The metric's value in a run, or None and the reason it has none."""
    if result is None:
        return None, "no run"
    value = (result.get("metrics") or {}).get(metric)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value), ""
    if result.get("error"):
        return None, f"failed: {result['error']}"
    return None, "no value" if value is None else f"not finite ({value})"


def _lower_is_better(metric: str) -> bool:
    return any(hint in metric.lower() for hint in LOWER_IS_BETTER_HINTS)


def auto_scale(metric: str, values: Sequence[float]) -> float:
    """Accuracy-like metrics (all values in [0, 1], higher is better) are shown as points."""
    inside = bool(values) and all(0.0 <= v <= 1.0 for v in values)
    return 100.0 if inside and not _lower_is_better(metric) else 1.0


def analyse_results(
    results: Sequence[Result], reference: str, metrics: Sequence[str], *, design: str = "leave_one_out",
    component_of: Mapping[str, str] | None = None, seeds: Sequence[int] | None = None,
    n_boot: int = 10000, seed: int = 0, confidence: float = 0.95, test: str = "t",
    scales: Mapping[str, float] | None = None, higher_is_better: Mapping[str, bool] | None = None,
) -> list[MetricAnalysis]:
    """Per metric: every variant's mean ± std, its paired comparison with the reference, the
    Holm-adjusted p-value (one family per metric: the variants' comparisons) and a verdict."""
    if not metrics:
        raise ConfigError("report", "metrics", "at least one metric name")
    if design not in KINDS:
        raise ConfigError("report", "design", f"one of {', '.join(KINDS)}; got {design!r}")
    if test not in TESTS:
        raise ConfigError("report", "test", f"one of {', '.join(TESTS)}; got {test!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError("report", "confidence", f"a number in (0, 1); got {confidence!r}")
    index = index_results(results)
    variants = list(dict.fromkeys([reference] + [variant for variant, _ in index]))
    if not any(variant == reference for variant, _ in index):
        raise ConfigError("report", "reference", f"a variant present in the results; got {reference!r}")
    all_seeds = sorted(set(seeds or ()) | {s for _, s in index})
    analyses = []
    for metric in metrics:
        rows = []
        for variant in variants:
            values, missing = {}, {}
            for s in all_seeds:
                value, why = metric_value(index.get((variant, s)), metric)
                if value is None:
                    missing[s] = why
                else:
                    values[s] = value
            mean, std = summarize(list(values.values()))
            component = (component_of or {}).get(variant, variant)
            rows.append(VariantStats(variant, component, values, missing, mean, std))
        reference_row, compared = rows[0], rows[1:]
        for row in compared:
            paired = sorted(set(row.values) & set(reference_row.values))
            row.comparison = paired_difference(
                [row.values[s] for s in paired], [reference_row.values[s] for s in paired],
                n_boot=n_boot, seed=seed, confidence=confidence, test=test)
        adjusted = holm_correction([row.comparison.p_value for row in compared])
        for row, p_holm in zip(compared, adjusted, strict=True):
            row.p_holm = p_holm
        all_values = [v for row in rows for v in row.values.values()]
        scale = (scales or {}).get(metric, auto_scale(metric, all_values))
        higher = (higher_is_better or {}).get(metric, not _lower_is_better(metric))
        for row in compared:
            c = row.comparison
            row.verdict = verdict(row.component, c.mean_diff, c.ci, row.p_holm, metric, design,
                                  spread=c.std_diff, scale=scale, higher_is_better=higher,
                                  alpha=1.0 - confidence, confidence=confidence)
        analyses.append(MetricAnalysis(metric, scale, higher, rows))
    return analyses
