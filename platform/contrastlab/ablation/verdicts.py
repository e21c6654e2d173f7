"""Verdict lines: one sentence per comparison, in the metric's units, that says what was found."""

from __future__ import annotations

import math

KINDS = ("leave_one_out", "add_one_in", "full_factorial", "explicit")


def _level(confidence: float) -> str:
    """95%, 99.17%: enough digits to tell an adjusted level from the nominal one."""
    return f"{confidence * 100:.4g}%"


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
    floor_note: str = "",
) -> str:
    """One line that states the effect of a component on a metric.

    `diff` is variant - reference in the metric's own units; `scale` converts for display
    (100 turns a [0, 1] accuracy into points). `spread` is the std of the per-seed
    differences, shown as "±". `kind` says how the variant relates to the reference:
    `leave_one_out` (component removed), `add_one_in` (component added) or `explicit`.
    `confidence` is the interval's own level (already adjusted for the family); `floor_note`
    says when the seeds could not reach significance whatever the data.
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
    ci_text = f"{_level(confidence)} CI [{low:.{digits}f}, {high:.{digits}f}], " if math.isfinite(low) else ""
    details = f"{ci_text}{p_text}"
    signed = f"{shown_diff:+.{digits}f}{plus_minus}{' points' if points else ''}"
    if math.isnan(diff):
        return f"{subject}: not tested on {metric}, no seed has a value for both"
    if math.isnan(p_adj):
        return f"{subject}: not tested on {metric}, too few paired seeds ({signed})"
    if not significant:
        floor = f"; {floor_note}" if floor_note else ""
        return f"{subject}: no significant difference in {metric} ({signed}, {details}){floor}"
    verb = "gains" if (diff > 0) == higher_is_better else "costs"
    unit = "points of" if points else "in"
    return f"{subject} {verb} {abs(shown_diff):.{digits}f}{plus_minus} {unit} {metric} ({details})"
