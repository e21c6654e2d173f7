"""Paired tests, intervals and power for studies of 2 to 10 seeds.

Every function here works on per-seed differences (variant - reference, or a factorial
contrast evaluated per seed). The test functions take a 2-D array, one study per row, so the
same code answers one comparison in a report and thousands of simulated studies in the tests.

- `sign_flip`: under the null that the component has no effect, the two runs of a seed are
  exchangeable, so each difference is as likely to have either sign. The p-value counts the
  sign patterns whose |mean| is at least the observed one: exact over all 2^n patterns up to
  16 seeds, Monte Carlo (seeded, +1 corrected) beyond. It never returns 0; its floor is
  2 / 2^n, the two patterns with every sign alike.
- `t`: the paired t-test. It assumes normal differences, which a handful of seeds cannot
  check, and it is undefined when every difference is the same; then the sign-flip p is used.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

TESTS = ("sign_flip", "t")
INTERVALS = ("t", "bca")
EXACT_MAX_N = 16
MC_DRAWS = 100_000
BCA_MIN_N = 10
TARGET_POWER = 0.8
# Differences this close (relative to their size) count as equal: variants that compute the
# same thing can still differ in the last bits through summation order.
_TIE_RTOL = 1e-9
_CELLS_PER_CHUNK = 1 << 22  # bounds the (studies x sign patterns) block held in memory


def sign_patterns(n: int) -> np.ndarray:
    """All 2^n vectors of +1/-1, one per row."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    return 1.0 - 2.0 * bits


def _at_least_as_extreme(sums: np.ndarray, observed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.abs(sums) >= (observed - _TIE_RTOL * scale)[:, None]


def sign_flip_p(diffs: np.ndarray, draws: int = MC_DRAWS, seed: int = 0) -> np.ndarray:
    """Two-sided sign-flip p-value of the mean difference for every row of `diffs`."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    studies, n = diffs.shape
    observed, scale = np.abs(diffs.sum(axis=1)), np.abs(diffs).sum(axis=1)
    if n <= EXACT_MAX_N:
        patterns = sign_patterns(n)
        rows = max(1, _CELLS_PER_CHUNK // patterns.shape[0])
        counts = np.concatenate(
            [
                _at_least_as_extreme(diffs[i : i + rows] @ patterns.T, observed[i : i + rows], scale[i : i + rows]).sum(
                    axis=1
                )
                for i in range(0, studies, rows)
            ]
        )
        return counts / patterns.shape[0]
    rng = np.random.default_rng(seed)
    counts = np.zeros(studies)
    chunk = max(1, _CELLS_PER_CHUNK // (n * studies))
    for start in range(0, draws, chunk):
        signs = rng.choice([-1.0, 1.0], size=(min(chunk, draws - start), n))
        counts += _at_least_as_extreme(diffs @ signs.T, observed, scale).sum(axis=1)
    # The observed pattern is one of the possible draws: counting it keeps p above 0.
    return (counts + 1.0) / (draws + 1.0)


def paired_t_p(diffs: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p for every row; NaN where the differences have no spread."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    n = diffs.shape[1]
    sd = diffs.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diffs.mean(axis=1) / (sd / math.sqrt(n))
    p = 2.0 * scipy_stats.t.sf(np.abs(t), df=n - 1)
    return np.where(_no_spread(diffs), math.nan, p)


def _no_spread(diffs: np.ndarray) -> np.ndarray:
    scale = np.maximum(np.abs(diffs).max(axis=1), 1e-300)
    return np.ptp(diffs, axis=1) <= _TIE_RTOL * scale


def min_attainable_p(test: str, n: int, draws: int = MC_DRAWS) -> float:
    """The smallest two-sided p the test can give with n seeds (0 for t: it has no floor)."""
    if n < 2:
        return math.nan
    if test == "t":
        return 0.0
    exact_floor = 2.0 ** (1 - n)
    return exact_floor if n <= EXACT_MAX_N else max(exact_floor, 1.0 / (draws + 1.0))


def paired_p(diffs: np.ndarray, test: str, draws: int = MC_DRAWS, seed: int = 0) -> tuple[float, str]:
    """(p, note) for one vector of paired differences."""
    if test not in TESTS:
        raise ValueError(f"test: expected one of {TESTS}, got {test!r}")
    n = diffs.size
    if n < 2:
        return math.nan, f"{n} paired seed{'s' if n != 1 else ''}: at least 2 are needed for a test"
    if np.all(np.abs(diffs) <= _TIE_RTOL * max(1.0, float(np.abs(diffs).max()))):
        return 1.0, "all paired differences are zero"
    monte_carlo = f"Monte Carlo sign-flip p from {draws} draws (generator seed {seed})" if n > EXACT_MAX_N else ""
    if test == "t":
        p = float(paired_t_p(diffs)[0])
        if not math.isnan(p):
            return p, ""
        # Every seed moved by the same amount: t = d / 0 is undefined, and claiming p = 0 would
        # be certainty that n seeds cannot give. The sign-flip p is exact here and says 2 / 2^n.
        p = float(sign_flip_p(diffs, draws, seed)[0])
        return p, "; ".join(
            filter(
                None,
                [
                    f"all {n} differences are equal: the t-test is undefined without spread, sign-flip p used",
                    monte_carlo,
                ],
            )
        )
    return float(sign_flip_p(diffs, draws, seed)[0]), monte_carlo


# -- intervals --------------------------------------------------------------------------------
def t_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean difference; NaN with fewer than two values."""
    n = diffs.size
    if n < 2:
        return (math.nan, math.nan)
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def bca_interval(diffs: np.ndarray, confidence: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval of the mean (NaN where it breaks down)."""
    with warnings.catch_warnings():
        # Degenerate resamples make scipy warn and return NaN; the caller falls back to t.
        warnings.simplefilter("ignore")
        result = scipy_stats.bootstrap(
            (diffs,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_boot,
            method="BCa",
            random_state=np.random.default_rng(seed),
        )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def interval(
    diffs: np.ndarray, confidence: float, kind: str = "t", n_boot: int = 10000, seed: int = 0
) -> tuple[float, float, str, str]:
    """(low, high, the interval actually used, note). BCa only from BCA_MIN_N seeds on: with
    fewer, a bootstrap has too few distinct resamples and its intervals are too narrow."""
    if kind not in INTERVALS:
        raise ValueError(f"interval: expected one of {INTERVALS}, got {kind!r}")
    if kind == "bca":
        if diffs.size < BCA_MIN_N:
            return (*t_interval(diffs, confidence), "t", f"BCa needs {BCA_MIN_N} seeds, t-interval used")
        if not bool(_no_spread(diffs[None, :])[0]):
            low, high = bca_interval(diffs, confidence, n_boot, seed)
            if math.isfinite(low) and math.isfinite(high):
                return (low, high, "bca", "")
        return (*t_interval(diffs, confidence), "t", "BCa undefined here, t-interval used")
    no_spread = diffs.size >= 2 and bool(_no_spread(diffs[None, :])[0])
    return (*t_interval(diffs, confidence), "t", "no spread: the t-interval is a single point" if no_spread else "")


# -- power ------------------------------------------------------------------------------------
def t_power(effect: float | np.ndarray, sd: float, n: int | np.ndarray, alpha: float) -> np.ndarray:
    """Power of the two-sided paired t-test at level alpha (noncentral t)."""
    n = np.asarray(n, dtype=float)
    df = n - 1.0
    noncentrality = np.asarray(effect, dtype=float) / sd * np.sqrt(n)
    critical = scipy_stats.t.ppf(1.0 - alpha / 2.0, df)
    # The tail opposite the effect is negligible for large effects, where scipy returns NaN.
    wrong_side = np.nan_to_num(scipy_stats.nct.cdf(-critical, df, noncentrality), nan=0.0)
    return scipy_stats.nct.sf(critical, df, noncentrality) + wrong_side


def can_reach(test: str, n: int, alpha: float, draws: int = MC_DRAWS) -> bool:
    """Whether any result with n seeds can give p < alpha."""
    return n >= 2 and min_attainable_p(test, n, draws) < alpha


def minimum_detectable_effect(sd: float, n: int, alpha: float, test: str = "t", power: float = TARGET_POWER) -> float:
    """The true mean difference detected with probability `power` (NaN: no spread to go on;
    inf: the test cannot reach alpha with n seeds, whatever the effect)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    if not can_reach(test, n, alpha):
        return math.inf
    high = sd
    while float(t_power(high, sd, n, alpha)) < power:
        high *= 2.0
    return float(optimize.brentq(lambda e: float(t_power(e, sd, n, alpha)) - power, 0.0, high, xtol=1e-12 * sd))


def seeds_needed(
    effect: float, sd: float, alpha: float, test: str = "t", power: float = TARGET_POWER, max_n: int = 1000
) -> int | None:
    """The fewest seeds that detect `effect` with probability `power` (None: more than max_n)."""
    if not (math.isfinite(sd) and sd > 0 and effect > 0):
        return None
    ns = np.arange(2, max_n + 1)
    reachable = np.array([can_reach(test, int(k), alpha) for k in ns])
    enough = (t_power(effect, sd, ns, alpha) >= power) & reachable
    return int(ns[np.argmax(enough)]) if enough.any() else None


# -- one comparison -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedComparison:
    """Differences over paired seeds (variant - reference, or a contrast) against zero.

    `confidence` is the interval's level, already adjusted for the family it belongs to;
    `min_p` is the smallest p the test could have given with `n_pairs` seeds.
    """

    n_pairs: int
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    confidence: float
    interval: str = "t"
    min_p: float = math.nan
    note: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


def as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite numbers, got {list(values)!r}; drop missing runs first")
    return array


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); std is 0 for one value, both NaN for none."""
    array = as_finite_array(values, "summarize")
    if array.size == 0:
        return (math.nan, math.nan)
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return (float(np.mean(array)), std)


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean; NaN with fewer than two values or without spread."""
    array = as_finite_array(values, "bootstrap_mean_ci")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive integer, got {n_boot!r}")
    if array.size < 2 or bool(_no_spread(array[None, :])[0]):
        return (math.nan, math.nan)
    return bca_interval(array, confidence, n_boot, seed)


def compare_differences(
    diffs: Sequence[float],
    *,
    test: str = "sign_flip",
    confidence: float = 0.95,
    interval_kind: str = "t",
    n_boot: int = 10000,
    seed: int = 0,
    draws: int = MC_DRAWS,
) -> PairedComparison:
    """Test the mean of per-seed differences against 0 and give its interval at `confidence`."""
    array = as_finite_array(diffs, "diffs")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    mean, std = summarize(array)
    p_value, test_note = paired_p(array, test, draws, seed)
    low, high, used, interval_note = interval(array, confidence, interval_kind, n_boot, seed)
    return PairedComparison(
        n_pairs=int(array.size),
        mean_diff=mean,
        std_diff=std,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        test=test,
        confidence=confidence,
        interval=used,
        min_p=min_attainable_p(test, int(array.size), draws),
        note="; ".join(filter(None, [test_note, interval_note])),
    )


def paired_difference(
    variant_values: Sequence[float],
    reference_values: Sequence[float],
    n_boot: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    test: str = "sign_flip",
    interval_kind: str = "t",
) -> PairedComparison:
    """Compare a variant with the reference over seeds paired by position (variant - reference)."""
    if test not in TESTS:
        raise ValueError(f"test: expected one of {TESTS}, got {test!r}")
    variant = as_finite_array(variant_values, "variant_values")
    reference = as_finite_array(reference_values, "reference_values")
    if variant.size != reference.size:
        raise ValueError(
            f"paired_difference: {variant.size} variant values but {reference.size} reference "
            "values; pass only seeds present for both"
        )
    return compare_differences(
        variant - reference, test=test, confidence=confidence, interval_kind=interval_kind, n_boot=n_boot, seed=seed
    )


def holm_correction(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by (m - i + 1); a running maximum keeps the
    adjusted values in the order of the raw ones, capped at 1. NaN entries (comparisons that
    could not be tested) stay NaN and do not count towards m.
    """
    raw = np.asarray(p_values, dtype=float).reshape(-1)
    adjusted = np.full(raw.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(raw))
    if np.any((raw[tested] < 0) | (raw[tested] > 1)):
        raise ValueError(f"holm_correction: p-values must lie in [0, 1], got {list(p_values)!r}")
    order = tested[np.argsort(raw[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (order.size - rank) * raw[index]))
        adjusted[index] = running
    return [float(p) for p in adjusted]
