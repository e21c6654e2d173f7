"""Plots of the ablation report.

The report is built once as neutral blocks; `contrastlab.study.render` turns them into
markdown and HTML (the tuning report uses the same renderings). Plots use their own Agg
canvas, never pyplot: reports are also made inside Ray workers, and a user's interactive
backend and pyplot's global figures are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from contrastlab.ablation.analysis import MetricAnalysis
from contrastlab.study.render import figure as _figure

Points = Iterable[tuple[float, float]]


def plot_bars(analysis: MetricAnalysis, path: Path, raw_pixels: float | None = None) -> None:
    """Left: test mean ± std per variant with its seeds (and the raw-pixel anchor on test);
    right: paired differences and their intervals."""
    rows, scale = analysis.variants, analysis.scale
    names = [f"{row.variant}\n(reference)" if i == 0 else row.variant for i, row in enumerate(rows)]
    positions = np.arange(len(rows))
    unit = " (points)" if scale == 100 else ""
    figure, (left, right) = _figure(max(9.0, 1.8 * len(rows)), 4.4, cols=2)
    # Means as markers, not bars: accuracies of 70 ± 1 drawn as bars from 0 all look alike.
    for i, row in enumerate(rows):
        color = "tab:orange" if i == 0 else "tab:blue"
        left.errorbar([i], [row.mean * scale], yerr=[row.std * scale], fmt="o", color=color, capsize=5, markersize=8)
        seed_values = [v * scale for v in row.values.values()]
        left.scatter([i + 0.12] * len(seed_values), seed_values, color="black", s=10, zorder=3)
        if row.missing:
            left.annotate(
                f"{len(row.missing)} missing", (i, 0.02), xycoords=("data", "axes fraction"), ha="center", color="red"
            )
    if raw_pixels is not None:
        left.axhline(raw_pixels * scale, color="grey", linestyle="--", linewidth=1.0, label="raw pixels (test)")
        left.legend(fontsize="small", loc="lower right")
    left.set_xticks(positions, names, rotation=25, ha="right")
    left.set_xlim(-0.5, len(rows) - 0.5)
    left.set_title("test split: mean ± std over seeds (dots: seeds)", fontsize="medium")
    left.set_ylabel(f"test/{analysis.metric}{unit}")
    compared = [row.comparison for row in rows[1:] if row.comparison]
    diffs = np.array([c.mean_diff * scale for c in compared])
    lows = np.array([c.ci_low * scale for c in compared])
    highs = np.array([c.ci_high * scale for c in compared])
    right.bar(
        positions[1 : len(compared) + 1],
        diffs,
        yerr=np.nan_to_num([diffs - lows, highs - diffs]),
        color="tab:blue",
        alpha=0.75,
        capsize=5,
    )
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_xticks(positions[1:], names[1:], rotation=25, ha="right")
    right.set_xlim(-0.5, len(rows) - 0.5)
    title = (
        f"variant − reference on test, paired ({compared[0].confidence * 100:.4g}% {compared[0].interval} interval)"
        if compared
        else "no variants to compare"
    )
    right.set_title(title, fontsize="medium")
    right.set_ylabel(f"Δ test/{analysis.metric}{unit}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _mean_band(runs: list[Points], scale: float) -> tuple[list[float], np.ndarray, np.ndarray] | None:
    by_epoch: dict[float, list[float]] = {}
    for points in runs:
        for epoch, value in points:
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(epoch, []).append(value * scale)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    mean = np.array([np.mean(by_epoch[e]) for e in epochs])
    std = np.array([np.std(by_epoch[e], ddof=1) if len(by_epoch[e]) > 1 else 0.0 for e in epochs])
    return epochs, mean, std


def plot_overlay(curves: Mapping[str, list[Points]], name: str, scale: float, path: Path) -> bool:
    """One eval curve, every variant on one axis (mean over seeds, band ± std)."""
    figure, (axis,) = _figure(7.0, 4.2)
    drawn = False
    for i, (variant, runs) in enumerate(curves.items()):
        band = _mean_band(runs, scale)
        if band is None:
            continue
        epochs, mean, std = band
        (line,) = axis.plot(epochs, mean, label=variant, linewidth=2.2 if i == 0 else 1.4)
        axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        drawn = True
    if drawn:
        axis.set(
            xlabel="epoch",
            ylabel=name + (" (points)" if scale == 100 else ""),
            title=f"{name}: mean over the seeds at each epoch, band ± std",
        )
        axis.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    return drawn


def plot_small_multiples(curves: Mapping[str, list[Points]], name: str, path: Path) -> bool:
    """A training objective, one panel per variant: shared epochs, each panel its own y axis."""
    bands = {variant: band for variant, runs in curves.items() if (band := _mean_band(runs, 1.0))}
    if not bands:
        return False
    cols = min(3, len(bands))
    rows = math.ceil(len(bands) / cols)
    figure, axes = _figure(3.6 * cols, 2.6 * rows + 0.5, rows, cols, sharex=True)
    for axis, (variant, (epochs, mean, std)) in zip(axes, bands.items(), strict=False):
        axis.plot(epochs, mean, color="tab:blue")
        axis.fill_between(epochs, mean - std, mean + std, color="tab:blue", alpha=0.2)
        axis.set_title(variant, fontsize="small")
    for axis in axes[len(bands) :]:
        axis.set_visible(False)
    figure.suptitle(f"{name} per variant (own y axes: the objectives differ)", fontsize="medium")
    figure.supxlabel("epoch", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True
