"""What an ablation's analysis holds: per variant, per effect, per metric and for the study.

`contrastlab.ablation.stats` fills these from a results table; the report modules read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contrastlab.ablation.inference import PairedComparison, min_attainable_p

# From a results table to per-metric statistics. The table's shape is described in
# `contrastlab.ablation.report`; here a missing value becomes a listed absence, not a NaN.
Result = Mapping[str, Any]


@dataclass
class VariantStats:
    """One variant on one metric: test values per seed, what is missing, val for reference."""

    variant: str
    component: str
    values: dict[int, float]
    missing: dict[int, str]
    mean: float
    std: float
    val_values: dict[int, float] = field(default_factory=dict)
    val_mean: float = math.nan
    val_std: float = math.nan
    comparison: PairedComparison | None = None
    p_adj: float = math.nan
    family: bool = True
    verdict: str = ""


@dataclass
class EffectStats:
    """A factorial main effect or interaction, estimated per seed and tested over seeds."""

    name: str
    kind: str
    values: dict[int, float]
    comparison: PairedComparison | None = None
    p_adj: float = math.nan
    family: bool = True


@dataclass(frozen=True)
class PowerLine:
    """What the seeds used could detect, from the pooled sd of the per-seed differences."""

    sd: float
    pooled_over: int
    n: int
    alpha: float
    mde: float
    effect: float
    seeds_needed: int | None


@dataclass
class MetricAnalysis:
    metric: str
    scale: float
    higher_is_better: bool
    variants: list[VariantStats]
    family: bool = True
    power: PowerLine | None = None
    effects: list[EffectStats] = field(default_factory=list)
    factorial_note: str = ""


@dataclass
class StudyAnalysis:
    """Every metric's analysis and the settings that apply to all of them."""

    metrics: list[MetricAnalysis]
    reference: str
    design: str
    test: str
    interval: str
    alpha: float
    seeds: list[int]
    family_metrics: list[str]
    family_size: int
    family_confidence: float
    effect: float

    def n_seeds(self) -> int:
        """The most paired seeds any comparison had: the best case the floor refers to."""
        counts = [r.comparison.n_pairs for a in self.metrics for r in a.variants[1:] if r.comparison]
        return max(counts, default=len(self.seeds))

    def min_p(self) -> float:
        return min_attainable_p(self.test, self.n_seeds())
