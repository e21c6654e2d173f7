"""The words and tables of the ablation report: its facts, anchors, verdicts, power lines,
per-metric tables, factorial effects, curves and runs, as blocks for `report_render`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from contrastlab.ablation.analysis import EffectStats, MetricAnalysis, PowerLine, StudyAnalysis, VariantStats
from contrastlab.ablation.stats import (
    format_p,
    split_key,
)

DESIGN_TEXT = {
    "leave_one_out": "leave-one-out: each variant removes one component from the reference",
    "add_one_in": "add-one-in: each variant adds one component to the reference",
    "full_factorial": "full factorial: every combination of the components' settings, each compared with the "
    "reference, plus main effects and two-way interactions",
    "explicit": "explicit variants, each compared with the reference",
}
TEST_TEXT = {
    "sign_flip": "exact paired sign-flip permutation test of the mean difference (two-sided)",
    "t": "paired t-test (two-sided)",
}
ANCHOR_TEXT = {"raw_pixels": "raw pixels (normalised pixels as features)", "untrained": "untrained encoder"}
RAW = "raw_pixels"
SPLIT_TEXT = (
    "verdicts and statistics on the test split, evaluated once at the end of each run; val shown for "
    "reference; selection (tuning, early stopping, retuning, best_config) used only val"
)
LOSS_NOTE = (
    "Training objectives are drawn one panel per variant, with a shared epoch axis and each panel on its "
    "own y axis: the variants optimise different objectives (extra or reweighted negatives, added terms), "
    "so their loss values are not comparable on one axis. Read each panel for its shape: still falling, "
    "flat, or diverging."
)
Block = tuple


def fmt(value: float | None, scale: float, sign: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "∞" if value == math.inf else "—"
    return f"{value * scale:{sign}.{2 if scale == 100 else 4}f}"


def _unit(scale: float) -> str:
    return " points" if scale == 100 else ""


def _level(confidence: float) -> str:
    return f"{confidence * 100:.4g}%"


# -- anchors ------------------------------------------------------------------------------------------
def anchor_flags(study: StudyAnalysis, anchors: Mapping[str, Mapping[str, float]] | None) -> dict[tuple[str, str], str]:
    """(metric, variant) -> why the variant sits below the raw-pixel anchor on that metric."""
    raw = (anchors or {}).get(RAW) or {}
    flags = {}
    for analysis in study.metrics:
        if not analysis.higher_is_better:
            continue
        for row in analysis.variants:
            below = [
                f"{split} {fmt(anchor, analysis.scale)}"
                for split, mean in (("test", row.mean), ("val", row.val_mean))
                if (anchor := raw.get(split_key(split, analysis.metric))) is not None
                and math.isfinite(mean)
                and mean < anchor
            ]
            if below:
                flags[(analysis.metric, row.variant)] = (
                    f"below the raw-pixel anchor ({', '.join(below)}): at this budget the comparison of components "
                    "says little"
                )
    return flags


def anchor_table(study: StudyAnalysis, anchors: Mapping[str, Mapping[str, float]]) -> list[Block]:
    head = ["anchor"] + [f"{split}/{a.metric}" for a in study.metrics for split in ("val", "test")]
    rows = [
        [ANCHOR_TEXT.get(name, name)]
        + [fmt(values.get(f"{split}/{a.metric}"), a.scale) for a in study.metrics for split in ("val", "test")]
        for name, values in anchors.items()
    ]
    return [
        ("h2", "Anchors"),
        (
            "text",
            "What the encoder must beat: a linear probe and kNN on normalised raw "
            "pixels, and on the encoder at its random initialisation (accuracies in "
            "points).",
        ),
        ("table", head, rows),
    ]


# -- facts -------------------------------------------------------------------------------------------
def _family_text(study: StudyAnalysis) -> str:
    tests = "every comparison with the reference" + (
        " and every factorial effect" if study.design == "full_factorial" else ""
    )
    if len(study.family_metrics) == len(study.metrics):
        return (
            f"Family: Holm–Bonferroni over all {study.family_size} tests of the report ({tests} on "
            f"{', '.join(study.family_metrics)}; untestable ones excluded)"
        )
    exploratory = [a.metric for a in study.metrics if not a.family]
    return (
        f"Family: Holm–Bonferroni over the {study.family_size} tests of the primary metric "
        f"{study.family_metrics[0]} ({tests}); {', '.join(exploratory)} exploratory, with unadjusted p"
    )


def _interval_text(study: StudyAnalysis, n_boot: int, seed: int) -> str:
    kind = (
        "t-interval of the mean paired difference"
        if study.interval == "t"
        else f"BCa bootstrap interval of the mean paired difference from 10 seeds ({n_boot} resamples, generator "
        f"seed {seed}), t-interval below 10"
    )
    nominal = 1.0 - study.alpha
    adjusted = (
        (
            f"at {_level(study.family_confidence)} = 1 − {study.alpha:.2g}/{study.family_size}, "
            "Bonferroni-simultaneous over the family (with the t-test, an interval that excludes 0 implies a "
            "Holm rejection, not the reverse; the test decides)"
        )
        if study.family_size
        else f"at {_level(nominal)}"
    )
    exploratory = (
        f"; exploratory metrics at {_level(nominal)}" if len(study.family_metrics) < len(study.metrics) else ""
    )
    return f"Interval: {kind}, {adjusted}{exploratory}"


def _floor_text(study: StudyAnalysis) -> str:
    n, alpha, floor = study.n_seeds(), study.alpha, study.min_p()
    if n < 2:
        return "Smallest attainable p: no comparison has two paired seeds, so nothing could be tested"
    if study.test == "t":
        return (
            f"Smallest attainable p: the t-test has no floor, which rests on normal differences that {n} "
            "seeds cannot check"
        )
    text = f"Smallest attainable p with {n} seeds: {format_p(floor)} (2^(1−n))"
    if floor >= alpha:
        return f"{text}. **No difference can be significant at α = {alpha:.2g} with {n} seeds**"
    first = alpha / max(study.family_size, 1)
    if study.family_size > 1 and floor >= first:
        return (
            f"{text}. **Holm's first step needs p < {first:.2g} over {study.family_size} tests: no difference "
            f"can be significant with {n} seeds**"
        )
    return text


def facts(
    study: StudyAnalysis,
    mode_note: str,
    n_boot: int,
    seed: int,
    flags: Mapping[tuple[str, str], str],
    has_anchors: bool,
    run_rows: list[list[Any]],
) -> list[str]:
    seeds = study.seeds
    tuning = [s for s in seeds if s >= 1000]
    lines = [
        f"Design: {DESIGN_TEXT[study.design]}",
        f"Reference variant: `{study.reference}`",
        f"Seeds used: {', '.join(map(str, seeds))} ({len(seeds)}; variants are paired by seed)"
        + (f"; **{tuning} are ≥ 1000, the range kept for tuning**" if tuning else ""),
        f"Splits: {SPLIT_TEXT}",
        f"Mode: {mode_note}",
        f"Test: {TEST_TEXT[study.test]} on the per-seed test differences, using only seeds present for both the "
        "variant and the reference",
        _floor_text(study),
        _family_text(study),
        _interval_text(study, n_boot, seed),
        f"Decision: significant when the Holm-adjusted p < {study.alpha:.2g}; an exploratory metric's unadjusted "
        "p < α is a lead to follow, not a conclusion",
    ]
    if has_anchors:
        below = sorted({variant for _, variant in flags})
        lines.append(
            f"Below the raw-pixel anchor: {len(below)} of {len(study.metrics[0].variants)} variants"
            + (f" ({', '.join(below)})" if below else "")
        )
    counts = {status: sum(row[2] == status for row in run_rows) for status in ("ok", "failed", "incomplete", "missing")}
    incomplete = [
        f"{row[0]} seed {row[1]} ({row[2]}{': ' + row[4] if row[4] else ''})" for row in run_rows if row[2] != "ok"
    ]
    lines += [
        f"Runs: {counts['ok']} of {len(run_rows)} complete ({counts['failed']} failed, {counts['incomplete']} "
        f"without every test metric, {counts['missing']} never reported); "
        f"{sum(bool(row[3]) for row in run_rows)} reused from earlier runs",
        f"Missing or failed runs: {'; '.join(incomplete) if incomplete else 'none'}",
    ]
    return lines


# -- sections --------------------------------------------------------------------------------------------
def _verdicts(study: StudyAnalysis, flags: Mapping[tuple[str, str], str]) -> list[Block]:
    items = []
    for analysis in study.metrics:
        label = "" if analysis.family else " (exploratory)"
        reference_flag = flags.get((analysis.metric, study.reference))
        if reference_flag:
            items.append(f"**{analysis.metric}**{label}: reference `{study.reference}` is {reference_flag}")
        for row in analysis.variants[1:]:
            flag = flags.get((analysis.metric, row.variant))
            items.append(f"**{analysis.metric}**{label}: {row.verdict}" + (f" — **{flag}**" if flag else ""))
    return [("h2", "Verdicts (test split)"), ("list", items)]


def power_line(analysis: MetricAnalysis, power: PowerLine | None, test: str) -> str:
    if power is None:
        return f"**{analysis.metric}**: no comparison with two paired seeds, nothing to estimate power from"
    s, unit = analysis.scale, _unit(analysis.scale)
    head = (
        f"**{analysis.metric}**: sd of the per-seed test differences {fmt(power.sd, s)}{unit} (pooled over "
        f"{power.pooled_over} comparisons); at α = {power.alpha:.2g} with {power.n} seeds"
    )
    if power.mde == math.inf:
        detect = f"no effect is detectable: the {test} test cannot reach p < {power.alpha:.2g}"
    elif math.isnan(power.mde):
        detect = "the minimum detectable effect cannot be estimated (no spread)"
    else:
        detect = f"the minimum detectable effect at 80% power is {fmt(power.mde, s)}{unit}"
    needed = (
        f"{power.seeds_needed} seeds" if power.seeds_needed else "more than 1000 seeds or an estimate of the spread"
    )
    return f"{head} {detect}; detecting {fmt(power.effect, s)}{unit} needs {needed}"


def _metric_tables(analysis: MetricAnalysis) -> list[Block]:
    m, s = analysis.metric, analysis.scale
    better = "higher" if analysis.higher_is_better else "lower"
    role = "" if analysis.family else ", exploratory"
    variants = [
        [
            r.variant,
            r.component,
            len(r.values),
            f"{fmt(r.val_mean, s)} ± {fmt(r.val_std, s)}",
            f"{fmt(r.mean, s)} ± {fmt(r.std, s)}",
            "; ".join(f"seed {k}: {why}" for k, why in r.missing.items()) or "none",
        ]
        for r in analysis.variants
    ]
    return [
        ("h2", f"{m}{', points (×100)' if s == 100 else ''}, {better} is better{role}"),
        (
            "table",
            ["variant", "component", "n (test)", f"val/{m} mean ± std", f"test/{m} mean ± std", "missing (test)"],
            variants,
        ),
        (
            "table",
            ["variant", "paired seeds", f"test/{m} diff ± std", "interval (test)", "p", "p adjusted", "note"],
            [_comparison_row(r, s) for r in analysis.variants[1:]],
        ),
    ]


def _comparison_row(row: VariantStats | EffectStats, scale: float) -> list[Any]:
    c = row.comparison
    name = row.variant if isinstance(row, VariantStats) else row.name
    if c is None:
        return [name, 0, "—", "—", "n/a", "n/a", ""]
    interval = f"[{fmt(c.ci_low, scale)}, {fmt(c.ci_high, scale)}] ({_level(c.confidence)} {c.interval})"
    adjusted = f"{format_p(row.p_adj)} ({'Holm' if row.family else 'unadjusted'})"
    return [
        name,
        c.n_pairs,
        f"{fmt(c.mean_diff, scale, '+')} ± {fmt(c.std_diff, scale)}",
        interval,
        format_p(c.p_value),
        adjusted,
        c.note,
    ]


def _factorial(study: StudyAnalysis) -> list[Block]:
    blocks: list[Block] = [
        ("h2", "Factorial effects (test split)"),
        (
            "text",
            "A main effect is the mean over the cells at a component's level minus the mean over the cells at "
            "its full-experiment level, averaged over every setting of the other components. An interaction is "
            "the difference of differences y(both switched) − y(first) − y(second) + y(neither): how far "
            "switching both departs from the sum of switching each. Both are computed per seed and tested over "
            "seeds like the comparisons, inside the same Holm family.",
        ),
    ]
    for analysis in study.metrics:
        if analysis.factorial_note:
            blocks.append(("text", f"**{analysis.metric}**: {analysis.factorial_note}"))
            continue
        rows = [[e.kind, *_comparison_row(e, analysis.scale)] for e in analysis.effects]
        blocks += [
            ("text", f"**{analysis.metric}**" + ("" if analysis.family else " (exploratory)")),
            (
                "table",
                ["kind", "effect", "seeds", "estimate on test ± std", "interval (test)", "p", "p adjusted", "note"],
                rows,
            ),
        ]
    return blocks


def blocks(
    study: StudyAnalysis,
    anchors: Mapping[str, Mapping[str, float]] | None,
    flags: Mapping[tuple[str, str], str],
    images: Mapping[str, str],
    loss_images: Sequence[str],
    overrides: Mapping[str, str],
    run_header: list[str],
    run_rows: list[list[Any]],
) -> list[Block]:
    out: list[Block] = anchor_table(study, anchors) if anchors else []
    out += _verdicts(study, flags)
    out += [("h2", "Power (test split)"), ("list", [power_line(a, a.power, study.test) for a in study.metrics])]
    for analysis in study.metrics:
        out += _metric_tables(analysis)
        if f"bar_{analysis.metric}" in images:
            out.append(("image", images[f"bar_{analysis.metric}"]))
    if study.design == "full_factorial":
        out += _factorial(study)
    eval_images = [path for key, path in images.items() if key.startswith("curves_")]
    if eval_images or loss_images:
        out += [("h2", "Curves"), *[("image", path) for path in eval_images]]
        if loss_images:
            out += [("text", LOSS_NOTE), *[("image", path) for path in loss_images]]
    out += [("h2", "Variants"), ("table", ["variant", "overrides"], list(overrides.items()))]
    return out + [("h2", "Runs (val and test per metric)"), ("table", run_header, run_rows)]
