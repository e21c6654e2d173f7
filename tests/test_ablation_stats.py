"""Ablation statistics against values computed by hand from the textbook formulas."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from contrastlab.ablation.stats import (
    bootstrap_mean_ci,
    format_p,
    holm_correction,
    paired_difference,
    summarize,
    verdict,
)


def test_summarize_uses_sample_std():
    mean, std = summarize([1.0, 2.0, 3.0, 4.0])
    # Squared deviations from 2.5: 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))


def test_summarize_one_value_and_none():
    assert summarize([7.0]) == (7.0, 0.0)
    mean, std = summarize([])
    assert math.isnan(mean) and math.isnan(std)


def test_summarize_rejects_nan():
    with pytest.raises(ValueError, match="missing"):
        summarize([1.0, float("nan")])


def test_paired_t_test_matches_the_formula():
    variant = [71.0, 74.0, 69.0, 73.0]
    reference = [70.0, 72.0, 70.0, 70.0]
    # Differences 1, 2, -1, 3: mean 1.25; squared deviations sum to 8.75, so s = sqrt(8.75 / 3).
    n, mean, sd = 4, 1.25, math.sqrt(8.75 / 3.0)
    t_statistic = mean / (sd / math.sqrt(n))
    expected_p = 2.0 * scipy_stats.t.sf(abs(t_statistic), df=n - 1)

    result = paired_difference(variant, reference, n_boot=2000, seed=0)

    assert result.n_pairs == 4
    assert result.mean_diff == pytest.approx(mean)
    assert result.std_diff == pytest.approx(sd)
    assert result.p_value == pytest.approx(expected_p, rel=1e-10)
    assert result.test == "t"
    assert result.note == ""


def test_no_difference_gives_large_p_and_ci_covering_zero():
    reference = [70.0, 71.0, 72.0, 73.0, 74.0]
    variant = [r + d for r, d in zip(reference, [1.0, -1.0, 2.0, -2.0, 0.5], strict=True)]
    result = paired_difference(variant, reference, n_boot=2000, seed=3)
    assert result.mean_diff == pytest.approx(0.1)
    assert result.p_value > 0.5
    assert result.ci_low < 0.0 < result.ci_high


def test_clear_difference_gives_small_p_and_ci_excluding_zero():
    reference = [70.0, 71.0, 72.0, 73.0, 74.0]
    variant = [r + d for r, d in zip(reference, [2.0, 2.2, 1.9, 2.1, 2.05], strict=True)]
    result = paired_difference(variant, reference, n_boot=2000, seed=3)
    assert result.p_value < 1e-4
    assert result.ci_low > 0.0
    assert result.ci_low <= result.mean_diff <= result.ci_high


def test_bootstrap_is_deterministic_under_seed_and_contains_the_mean():
    # Irregular values, so that the resampled means do not sit on a coarse lattice where every
    # generator seed would hit the same percentiles.
    variant = [0.6113, 0.6437, 0.6021, 0.6652, 0.6318, 0.6579, 0.6204]
    reference = [0.6002, 0.6131, 0.6145, 0.6233, 0.6019, 0.6301, 0.6170]
    first = paired_difference(variant, reference, n_boot=3000, seed=11)
    second = paired_difference(variant, reference, n_boot=3000, seed=11)
    other = paired_difference(variant, reference, n_boot=3000, seed=12)
    assert first.ci == second.ci
    assert first.ci != other.ci
    assert first.ci_low <= first.mean_diff <= first.ci_high


def test_bootstrap_ci_of_two_values_by_enumeration():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles are the extremes.
    assert bootstrap_mean_ci([0.0, 1.0], n_boot=4000, seed=0) == (0.0, 1.0)
    # A 40% interval sits inside the middle mass, at 0.5 on both ends.
    assert bootstrap_mean_ci([0.0, 1.0], n_boot=4000, seed=0, confidence=0.4) == (0.5, 0.5)


def test_identical_zero_differences_give_p_one():
    result = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert result.p_value == 1.0
    assert "zero" in result.note
    assert result.ci == (0.0, 0.0)


def test_identical_nonzero_differences_give_p_zero_and_say_so():
    result = paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert result.p_value == 0.0
    assert result.mean_diff == 1.0 and result.std_diff == 0.0
    assert "identical" in result.note


def test_fewer_than_two_pairs_give_nan_p_with_a_note():
    result = paired_difference([0.7], [0.6])
    assert result.n_pairs == 1
    assert result.mean_diff == pytest.approx(0.1)
    assert math.isnan(result.p_value) and math.isnan(result.ci_low)
    assert "at least 2" in result.note
    assert paired_difference([], []).n_pairs == 0


def test_wilcoxon_exact_p_for_all_positive_differences():
    # With 6 pairs all positive, only "all +" and "all -" are as extreme: p = 2 / 2**6.
    result = paired_difference([2, 4, 6, 8, 10, 12], [1, 2, 3, 4, 5, 6], test="wilcoxon")
    assert result.p_value == pytest.approx(2.0 / 2**6)
    assert result.test == "wilcoxon"
    small = paired_difference([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0], test="wilcoxon")
    assert "smallest possible" in small.note


def test_paired_difference_rejects_bad_input():
    with pytest.raises(ValueError, match="pass only seeds present for both"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="test"):
        paired_difference([1.0, 2.0], [1.0, 2.0], test="z")


def test_holm_on_a_fixed_list():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    adjusted = holm_correction([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_passes_nan_through():
    assert holm_correction([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm_correction([0.02, float("nan"), 0.04])
    # NaN does not count: m = 2, so 0.02*2 = 0.04 and 0.04*1 = 0.04.
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm_correction([]) == []
    with pytest.raises(ValueError):
        holm_correction([1.5])


def test_verdict_for_a_removed_component_that_matters():
    line = verdict("synthesis", -0.021, (-0.030, -0.012), 0.01, "linear_top1", "leave_one_out",
                   spread=0.006, scale=100)
    assert line == ("removing synthesis costs 2.1 ± 0.6 points of linear_top1 "
                    "(95% CI [1.2, 3.0], p=0.01, Holm)")


def test_verdict_for_an_added_component_that_helps():
    line = verdict("hard_negatives", 0.015, (0.005, 0.025), 0.003, "knn_top1", "add_one_in",
                   spread=0.004, scale=100)
    assert line == ("adding hard_negatives gains 1.5 ± 0.4 points of knn_top1 "
                    "(95% CI [0.5, 2.5], p=0.003, Holm)")


def test_verdict_without_significance():
    line = verdict("queue", 0.003, (-0.004, 0.010), 0.43, "linear_top1", "leave_one_out",
                   spread=0.008, scale=100)
    assert line == ("removing queue: no significant difference in linear_top1 "
                    "(+0.3 ± 0.8 points, 95% CI [-0.4, 1.0], p=0.43, Holm)")


def test_verdict_lower_is_better_and_explicit_variant():
    line = verdict("big_batch", 0.03, (0.01, 0.05), 0.02, "final_loss", "explicit", spread=0.01,
                   higher_is_better=False, correction=None)
    assert line == "big_batch costs 0.030 ± 0.010 in final_loss (95% CI [0.010, 0.050], p=0.02)"


def test_verdict_untestable_and_bad_kind():
    line = verdict("queue", 0.01, (math.nan, math.nan), math.nan, "linear_top1", "leave_one_out", scale=100)
    assert line == "removing queue: not tested on linear_top1, too few paired seeds (+1.0 points)"
    line = verdict("queue", math.nan, (math.nan, math.nan), math.nan, "linear_top1", "leave_one_out")
    assert line == "removing queue: not tested on linear_top1, no seed has a value for both"
    with pytest.raises(ValueError, match="kind"):
        verdict("x", 0.0, (0.0, 0.0), 0.5, "m", "leave-one-out")


def test_format_p():
    shown = [format_p(p) for p in (0.43, 0.0998, 0.01, 0.0123, 0.0004)]
    assert shown == ["0.43", "0.10", "0.01", "0.012", "<0.001"]
    assert format_p(math.nan) == "n/a"
