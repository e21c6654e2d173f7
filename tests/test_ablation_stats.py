"""Ablation statistics against independent references: enumerations written here, textbook
formulas, Monte Carlo, and simulated studies under the null."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from contrastlab.ablation.factorial import IncompleteDesign, factorial_contrasts, per_seed
from contrastlab.ablation.inference import (
    compare_differences,
    interval,
    min_attainable_p,
    minimum_detectable_effect,
    paired_t_p,
    seeds_needed,
    sign_flip_p,
    t_interval,
)
from contrastlab.ablation.stats import (
    analyse_results,
    bootstrap_mean_ci,
    format_p,
    holm_correction,
    paired_difference,
    summarize,
    verdict,
)
from contrastlab.config import ConfigError
from tests.reference import enumerated_p, holm_by_hand

ALPHA = 0.05


# -- summaries --------------------------------------------------------------------------------------
def test_summarize_uses_sample_std():
    mean, std = summarize([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))  # squared deviations 5, over n - 1
    assert summarize([7.0]) == (7.0, 0.0)
    assert all(math.isnan(v) for v in summarize([]))
    with pytest.raises(ValueError, match="missing"):
        summarize([1.0, float("nan")])


# -- the sign-flip test -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(2, 9))
def test_sign_flip_p_matches_an_enumeration(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        diffs = list(rng.normal(0.3, 1.0, size=n))
        assert sign_flip_p(np.array(diffs))[0] == pytest.approx(enumerated_p(diffs), abs=1e-12)
    # Ties in |d| make several patterns equally extreme; they all count.
    tied = [1.0, -1.0, 1.0, 2.0, -2.0, 0.5, 0.5, 3.0][:n]
    assert paired_difference(tied, [0.0] * n).p_value == pytest.approx(enumerated_p(tied))


def test_identical_nonzero_differences_give_the_floor_never_zero():
    for n in range(2, 11):
        reference = list(np.linspace(0.6, 0.7, n))
        variant = [r + 0.01 for r in reference]
        for test in ("sign_flip", "t"):
            result = paired_difference(variant, reference, test=test)
            assert result.p_value == pytest.approx(2.0 / 2**n) and result.p_value > 0
        assert "undefined" in paired_difference(variant, reference, test="t").note


def test_identical_zero_differences_give_p_one():
    result = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert result.p_value == 1.0 and "zero" in result.note
    assert result.ci == (0.0, 0.0)


def test_minimum_attainable_p():
    for n in range(2, 17):
        assert min_attainable_p("sign_flip", n) == 2.0 ** (1 - n)
        diffs = np.arange(1.0, n + 1.0)  # every sign alike: the most extreme outcome
        assert sign_flip_p(diffs)[0] == pytest.approx(min_attainable_p("sign_flip", n))
    assert min_attainable_p("sign_flip", 3) == 0.25
    assert min_attainable_p("t", 5) == 0.0
    assert math.isnan(min_attainable_p("sign_flip", 1))


def test_monte_carlo_beyond_sixteen_seeds_is_seeded_and_never_zero():
    diffs = np.arange(1.0, 21.0)
    draws = 2000
    p = sign_flip_p(diffs, draws=draws, seed=3)[0]
    assert p == sign_flip_p(diffs, draws=draws, seed=3)[0]
    assert p == pytest.approx(1.0 / (draws + 1))  # no draw is as extreme; the +1 keeps p above 0
    noisy = np.random.default_rng(0).normal(0.0, 1.0, size=20)
    estimate = sign_flip_p(noisy, draws=20000, seed=1)[0]
    exact_by_normal = 2 * scipy_stats.norm.sf(abs(noisy.sum()) / math.sqrt((noisy**2).sum()))
    assert estimate == pytest.approx(exact_by_normal, abs=0.04)
    assert "Monte Carlo" in compare_differences(list(noisy)).note


def test_paired_t_test_matches_the_formula():
    variant, reference = [71.0, 74.0, 69.0, 73.0], [70.0, 72.0, 70.0, 70.0]
    n, mean, sd = 4, 1.25, math.sqrt(8.75 / 3.0)  # differences 1, 2, -1, 3
    expected = 2.0 * scipy_stats.t.sf(mean / (sd / math.sqrt(n)), df=n - 1)
    result = paired_difference(variant, reference, test="t")
    assert (result.n_pairs, result.test, result.note) == (4, "t", "")
    assert result.mean_diff == pytest.approx(mean) and result.std_diff == pytest.approx(sd)
    assert result.p_value == pytest.approx(expected, rel=1e-10)
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2.0
    assert result.ci == pytest.approx((mean - half, mean + half))


def test_fewer_than_two_pairs_and_bad_input():
    result = paired_difference([0.7], [0.6])
    assert result.n_pairs == 1 and math.isnan(result.p_value) and math.isnan(result.ci_low)
    assert "at least 2" in result.note
    assert paired_difference([], []).n_pairs == 0
    with pytest.raises(ValueError, match="pass only seeds present for both"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="test"):
        paired_difference([1.0, 2.0], [1.0, 2.0], test="wilcoxon")


# -- intervals -------------------------------------------------------------------------------------
def test_bca_only_from_ten_seeds_and_then_scipy_bca():
    rng = np.random.default_rng(4)
    few = rng.normal(1.0, 1.0, size=6)
    low, high, used, note = interval(few, 0.95, "bca")
    assert used == "t" and "10 seeds" in note and (low, high) == pytest.approx(t_interval(few, 0.95))
    many = rng.gamma(2.0, size=12)
    low, high, used, _ = interval(many, 0.95, "bca", n_boot=4000, seed=7)
    reference = scipy_stats.bootstrap(
        (many,), np.mean, n_resamples=4000, method="BCa", random_state=np.random.default_rng(7)
    ).confidence_interval
    assert used == "bca" and (low, high) == pytest.approx((reference.low, reference.high))
    assert math.isnan(bootstrap_mean_ci([1.0])[0])


# -- simulated studies --------------------------------------------------------------------------------
STUDIES = 2000
LIMIT = ALPHA + 3.0 * math.sqrt(ALPHA * (1.0 - ALPHA) / STUDIES)


def null_differences(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Differences of two runs that a component without effect makes exchangeable."""
    if kind == "normal":
        return rng.normal(0.0, 0.01, size=(STUDIES, n))
    # Skewed runs: a shared lognormal seed effect plus lognormal noise per run.
    shared = rng.lognormal(0.0, 1.0, size=(STUDIES, n))
    return (shared + rng.lognormal(0.0, 1.0, size=(STUDIES, n))) - (shared + rng.lognormal(0.0, 1.0, (STUDIES, n)))


@pytest.mark.parametrize("kind", ["normal", "skewed"])
def test_false_positive_rate_at_most_alpha(kind):
    rng = np.random.default_rng(11)
    for n in range(2, 11):
        diffs = null_differences(kind, n, rng)
        for name, p in (("sign_flip", sign_flip_p(diffs)), ("t", paired_t_p(diffs))):
            rate = float(np.mean(p < ALPHA))
            assert rate <= LIMIT, f"{name} at n={n}: {rate:.3f} false positives"


@pytest.mark.parametrize("kind", ["normal", "skewed"])
def test_intervals_cover_the_true_effect(kind):
    rng = np.random.default_rng(12)
    effect = 0.02
    for n in range(3, 11):
        diffs = null_differences(kind, n, rng)[:1000] + effect
        covered = [low <= effect <= high for low, high in (t_interval(row, 0.95) for row in diffs)]
        assert np.mean(covered) >= 0.93, f"n={n}: coverage {np.mean(covered):.3f}"


# -- power --------------------------------------------------------------------------------------
def test_minimum_detectable_effect_has_eighty_percent_power_by_simulation():
    rng = np.random.default_rng(5)
    sd, n, alpha = 0.012, 8, 0.05 / 3
    mde = minimum_detectable_effect(sd, n, alpha)
    diffs = rng.normal(mde, sd, size=(40000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > scipy_stats.t.ppf(1 - alpha / 2, n - 1))
    assert power == pytest.approx(0.8, abs=0.012)
    # Many seeds: the normal approximation (z_{1-a/2} + z_{0.8}) sd / sqrt(n).
    z = scipy_stats.norm.ppf(1 - 0.05 / 2) + scipy_stats.norm.ppf(0.8)
    assert minimum_detectable_effect(1.0, 400, 0.05) == pytest.approx(z / math.sqrt(400), rel=0.01)


def test_seeds_needed_is_the_first_count_with_enough_power():
    def power(effect: float, sd: float, n: int, alpha: float) -> float:
        nc, df = effect / sd * math.sqrt(n), n - 1
        crit = scipy_stats.t.ppf(1 - alpha / 2, df)
        return scipy_stats.nct.sf(crit, df, nc) + scipy_stats.nct.cdf(-crit, df, nc)

    n = seeds_needed(0.01, 0.015, 0.05)
    assert power(0.01, 0.015, n, 0.05) >= 0.8 > power(0.01, 0.015, n - 1, 0.05)
    # The sign-flip test cannot reach p < 0.05 below 6 seeds, whatever the effect.
    assert seeds_needed(1.0, 0.001, 0.05, test="sign_flip") == 6
    assert minimum_detectable_effect(0.01, 3, 0.05, test="sign_flip") == math.inf
    assert math.isnan(minimum_detectable_effect(0.0, 5, 0.05))


# -- Holm -------------------------------------------------------------------------------------------
def test_holm_on_a_fixed_list():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    assert holm_correction([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_correction([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm_correction([0.02, float("nan"), 0.04])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1])
    with pytest.raises(ValueError):
        holm_correction([1.5])


def table(values: dict[str, list[float]], metrics=("m1", "m2")) -> list[dict]:
    results = []
    for variant, per_seed_values in values.items():
        for seed, value in enumerate(per_seed_values):
            metric_values = {f"test/{m}": value + 0.003 * k * seed for k, m in enumerate(metrics)}
            metric_values.update({f"val/{m}": value + 0.01 for m in metrics})
            results.append({"variant": variant, "seed": seed, "metrics": metric_values})
    return results


VALUES = {
    "full": [0.70, 0.72, 0.71, 0.73, 0.69, 0.70, 0.74],
    "no_a": [0.66, 0.69, 0.66, 0.70, 0.66, 0.65, 0.70],
    "no_b": [0.71, 0.71, 0.72, 0.72, 0.69, 0.71, 0.73],
    "no_c": [0.69, 0.72, 0.70, 0.74, 0.68, 0.69, 0.73],
}


def test_holm_family_is_every_comparison_of_every_metric():
    study = analyse_results(table(VALUES), "full", ["m1", "m2"])
    rows = [r for a in study.metrics for r in a.variants[1:]]
    raw = []
    for a in study.metrics:
        ref = a.variants[0].values
        raw += [enumerated_p([r.values[s] - ref[s] for s in ref]) for r in a.variants[1:]]
    assert study.family_size == 6
    assert [r.p_adj for r in rows] == pytest.approx(holm_by_hand(raw))
    assert all(r.comparison.confidence == pytest.approx(1 - 0.05 / 6) for r in rows)
    assert "Holm over 6" in rows[0].verdict


def test_primary_metric_makes_the_others_exploratory():
    study = analyse_results(table(VALUES), "full", ["m1", "m2"], primary_metric="m2")
    primary, other = study.metrics[1], study.metrics[0]
    assert study.family_size == 3 and study.family_metrics == ["m2"]
    assert [r.p_adj for r in primary.variants[1:]] == pytest.approx(
        holm_by_hand([r.comparison.p_value for r in primary.variants[1:]])
    )
    assert all(r.p_adj == r.comparison.p_value and not r.family for r in other.variants[1:])
    assert all(r.comparison.confidence == pytest.approx(0.95) for r in other.variants[1:])
    assert "exploratory" in other.variants[1].verdict
    with pytest.raises(ConfigError, match="primary_metric"):
        analyse_results(table(VALUES), "full", ["m1"], primary_metric="m3")


def test_statistics_read_the_test_split_and_never_guess():
    study = analyse_results(table(VALUES), "full", ["m1"])
    full = study.metrics[0].variants[0]
    assert full.mean == pytest.approx(np.mean(VALUES["full"]))
    assert full.val_mean == pytest.approx(np.mean(VALUES["full"]) + 0.01)
    bare = [{"variant": v, "seed": s, "metrics": {"m1": 0.7}} for v in ("full", "no_a") for s in range(3)]
    old = analyse_results(bare, "full", ["m1"]).metrics[0]
    assert old.variants[1].values == {} and old.variants[1].missing[0] == "no test/m1"


def test_three_seeds_say_no_difference_can_be_significant():
    values = {"full": [0.70, 0.71, 0.72], "no_a": [0.60, 0.61, 0.62]}
    study = analyse_results(table(values, ("m1",)), "full", ["m1"])
    row = study.metrics[0].variants[1]
    assert row.comparison.p_value == 0.25 and study.min_p() == 0.25
    assert "no significant difference" in row.verdict and "smallest possible p is 0.25" in row.verdict


def test_power_line_pools_the_sd_of_the_differences():
    study = analyse_results(table(VALUES, ("m1",)), "full", ["m1"], effect=0.02)
    power = study.metrics[0].power
    ref = np.array(VALUES["full"])
    variances = [np.var(np.array(VALUES[v]) - ref, ddof=1) for v in ("no_a", "no_b", "no_c")]
    assert power.sd == pytest.approx(math.sqrt(np.mean(variances)))
    assert (power.n, power.pooled_over, power.alpha) == (7, 3, pytest.approx(0.05 / 3))
    assert power.mde == pytest.approx(minimum_detectable_effect(power.sd, 7, 0.05 / 3, "sign_flip"))


# -- factorial effects ------------------------------------------------------------------------------
def test_factorial_effects_by_hand():
    levels = {
        "full": {"a": True, "b": True},
        "no_a": {"a": False, "b": True},
        "no_b": {"a": True, "b": False},
        "no_a+no_b": {"a": False, "b": False},
    }
    cells = {
        "full": {0: 10.0, 1: 12.0},
        "no_a": {0: 7.0, 1: 9.0},
        "no_b": {0: 9.0, 1: 10.0},
        "no_a+no_b": {0: 4.0, 1: 8.0},
    }
    effects = {c.name: per_seed(c, cells) for c in factorial_contrasts(levels, "full")}
    # a off: mean(no_a, no_a+no_b) - mean(full, no_b); seed 0: 5.5 - 9.5, seed 1: 8.5 - 11.
    assert effects["a=false (vs true)"] == pytest.approx({0: -4.0, 1: -2.5})
    assert effects["b=false (vs true)"] == pytest.approx({0: -2.0, 1: -1.5})
    # Difference of differences: seed 0: 4 - 7 - 9 + 10, seed 1: 8 - 9 - 10 + 12.
    assert effects["a=false × b=false"] == pytest.approx({0: -2.0, 1: 1.0})


def test_factorial_with_three_levels_compares_each_with_the_full_level():
    settings = [(a, m) for a in (True, False) for m in ("x", "y", "z")]
    levels = {f"v{i}": {"a": a, "mode": m} for i, (a, m) in enumerate(settings)}
    value = {
        (True, "x"): 5.0,
        (True, "y"): 6.0,
        (True, "z"): 9.0,
        (False, "x"): 3.0,
        (False, "y"): 3.0,
        (False, "z"): 4.0,
    }
    cells = {f"v{i}": {0: value[key]} for i, key in enumerate(settings)}
    effects = {c.name: per_seed(c, cells)[0] for c in factorial_contrasts(levels, "v0")}
    assert effects["mode=y (vs x)"] == pytest.approx((6 + 3) / 2 - (5 + 3) / 2)
    assert effects["mode=z (vs x)"] == pytest.approx((9 + 4) / 2 - (5 + 3) / 2)
    assert effects["a=false × mode=z"] == pytest.approx(4 - 3 - 9 + 5)
    assert len(effects) == 1 + 2 + 2
    with pytest.raises(IncompleteDesign):
        factorial_contrasts({k: v for k, v in levels.items() if k != "v5"}, "v0")


def test_analyse_results_tests_factorial_effects_in_the_family():
    levels = {
        "full": {"a": True, "b": True},
        "no_a": {"a": False, "b": True},
        "no_b": {"a": True, "b": False},
        "no_a+no_b": {"a": False, "b": False},
    }
    values = {
        "full": VALUES["full"],
        "no_a": VALUES["no_a"],
        "no_b": VALUES["no_b"],
        "no_a+no_b": [v - 0.05 for v in VALUES["no_b"]],
    }
    study = analyse_results(table(values, ("m1",)), "full", ["m1"], design="full_factorial", levels=levels)
    effects = {e.name: e for e in study.metrics[0].effects}
    assert study.family_size == 3 + 3
    main_a = effects["a=false (vs true)"]
    expected = [
        (values["no_a"][s] + values["no_a+no_b"][s] - values["full"][s] - values["no_b"][s]) / 2 for s in range(7)
    ]
    assert main_a.comparison.mean_diff == pytest.approx(np.mean(expected))
    assert main_a.comparison.p_value == pytest.approx(enumerated_p(expected))
    missing = analyse_results(table(values, ("m1",)), "full", ["m1"], design="full_factorial")
    assert missing.metrics[0].effects == [] and "no component levels" in missing.metrics[0].factorial_note


# -- verdicts -------------------------------------------------------------------------------------
def test_verdict_lines():
    assert verdict(
        "synthesis", -0.021, (-0.030, -0.012), 0.01, "linear_top1", "leave_one_out", spread=0.006, scale=100
    ) == ("removing synthesis costs 2.1 ± 0.6 points of linear_top1 (95% CI [1.2, 3.0], p=0.01, Holm)")
    assert verdict(
        "queue",
        0.003,
        (-0.004, 0.010),
        0.43,
        "linear_top1",
        "leave_one_out",
        spread=0.008,
        scale=100,
        confidence=1 - 0.05 / 6,
        correction="Holm over 6",
    ) == (
        "removing queue: no significant difference in linear_top1 (+0.3 ± 0.8 points, 99.17% CI [-0.4, 1.0], "
        "p=0.43, Holm over 6)"
    )
    assert verdict(
        "big_batch",
        0.03,
        (0.01, 0.05),
        0.02,
        "final_loss",
        "explicit",
        spread=0.01,
        higher_is_better=False,
        correction=None,
    ) == ("big_batch costs 0.030 ± 0.010 in final_loss (95% CI [0.010, 0.050], p=0.02)")
    assert verdict("queue", math.nan, (math.nan, math.nan), math.nan, "m", "leave_one_out") == (
        "removing queue: not tested on m, no seed has a value for both"
    )
    with pytest.raises(ValueError, match="kind"):
        verdict("x", 0.0, (0.0, 0.0), 0.5, "m", "leave-one-out")


def test_format_p():
    assert [format_p(p) for p in (0.43, 0.0998, 0.01, 0.0123, 0.0004)] == ["0.43", "0.10", "0.01", "0.012", "<0.001"]
    assert format_p(math.nan) == "n/a"
