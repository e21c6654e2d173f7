"""The oracles in tests/reference.py agree with each other where their equations meet, and with
values worked out by hand: a check on the references the library tests rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers import unit
from tests.reference import (
    enumerated_p,
    hand_mask,
    holm_by_hand,
    lab_of_pixel,
    mochi_reference,
    moco_v2_mm_reference,
    np_debiased,
    np_nt_xent,
    np_oucl,
    np_softmax,
    np_sscl,
    np_two_view,
    refined_labels,
    score_rows,
    soft_ce,
    sscl_torch_reference,
)


@pytest.mark.parametrize("b, B, offset", [(2, 5, 3), (3, 7, 2), (4, 4, 0)])
def test_two_view_rows_of_a_block_are_those_rows_of_the_whole_batch(b, B, offset):
    z1_all, z2_all = unit(B, seed=1).numpy(), unit(B, seed=2).numpy()
    whole = np_two_view(z1_all, z2_all)
    block = np_two_view(z1_all, z2_all, offset, b)
    expected = whole[offset : offset + b] + whole[B + offset : B + offset + b]
    assert len(block) == 2 * b and len(whole) == 2 * B
    for (p, n), (q, m) in zip(block, expected):
        assert p == q and np.array_equal(n, m) and len(n) == 2 * B - 2


@pytest.mark.parametrize("tau", (0.1, 0.5, 1.0))
def test_dcl_and_hcl_at_zero_are_nt_xent(tau):
    rows = np_two_view(unit(5, seed=3).numpy(), unit(5, seed=4).numpy())
    assert np_debiased(rows, tau, 0.0, 0.0) == pytest.approx(np_nt_xent(rows, tau), rel=1e-12)
    assert np_debiased(rows, tau, 0.1, 0.0) != pytest.approx(np_nt_xent(rows, tau), rel=1e-6)


@pytest.mark.parametrize("tau, tau_plus, beta", [(0.5, 0.0, 0.0), (0.2, 0.1, 1.0), (1.0, 0.05, 2.0)])
def test_sscl_without_synthetic_negatives_is_hcl(tau, tau_plus, beta):
    rows = np_two_view(unit(4, seed=5).numpy(), unit(4, seed=6).numpy())
    pos, real = np.array([p for p, _ in rows]), np.stack([n for _, n in rows])
    none = np.zeros((len(rows), 0))
    expected = np_debiased(rows, tau, tau_plus, beta)
    for count in ("all", "real_only"):
        assert np_sscl(pos, real, none, tau, beta, tau_plus, count) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("count", ["all", "real_only"])
def test_sscl_torch_loop_equals_the_numpy_reference(count):
    b = 4
    z1, z2, synth = unit(b, seed=7), unit(b, seed=8), unit(2 * b, 3, 6, seed=9)
    rows = np_two_view(z1.numpy(), z2.numpy())
    pos, real = np.array([p for p, _ in rows]), np.stack([n for _, n in rows])
    fake = torch.einsum("nd,nkd->nk", torch.cat([z1, z2]), synth).numpy()
    expected = np_sscl(pos, real, fake, 0.3, 1.5, 0.1, count)
    got = sscl_torch_reference(z1, z2, synth, 0.3, 1.5, 0.1, count)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_mochi_without_synthetic_negatives_is_the_moco_part_of_momentum_mixup():
    q, k, queue = (unit(n, 8, seed=s).numpy() for n, s in ((5, 10), (5, 11), (12, 12)))
    moco, _ = moco_v2_mm_reference(q, q, k, queue, np.arange(5), 0.5, 0.2)
    assert mochi_reference(q, k, queue, np.zeros((5, 0, 8)), 0.2) == pytest.approx(moco, rel=1e-12)
    assert mochi_reference(q, k, queue, unit(5, 2, 8, seed=13).numpy(), 0.2) > moco


def test_momentum_mixup_with_theta_one_is_infonce_on_the_mixed_query():
    q, k, queue = (unit(n, 8, seed=s).numpy() for n, s in ((4, 14), (4, 15), (9, 16)))
    perm = np.array([1, 0, 3, 2])
    _, mm = moco_v2_mm_reference(q, q, k, queue, perm, 1.0, 0.2)
    # θ = 1 puts all the label on the own key, with the partner key an extra negative.
    synthetic = k[perm][:, None, :]
    assert mm == pytest.approx(mochi_reference(q, k, queue, synthetic, 0.2), rel=1e-12)


def test_softmax_of_a_row_and_of_a_matrix_agree_and_slr_labels_sum_to_one():
    x = np.random.default_rng(0).normal(size=(4, 9))
    np.testing.assert_allclose(np_softmax(x)[2], np_softmax(x[2]), rtol=1e-15)
    k, candidates = unit(3, seed=17).numpy(), unit(7, seed=18).numpy()
    for top_k in (None, 2):
        labels = refined_labels(k, candidates, 0.4, 0.1, top_k)
        np.testing.assert_allclose(labels.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(refined_labels(k, candidates, 0.0, 0.1, None), np.eye(7)[:3])
    logits = np.log(np.array([[0.2, 0.3, 0.5]]))
    assert soft_ce(logits, np.array([[0.0, 0.0, 1.0]])) == pytest.approx(-math.log(0.5), rel=1e-12)


def test_oucl_masks_and_forms():
    pos, neg = score_rows(unit(3, 8, seed=19).numpy(), unit(3, 8, seed=20).numpy(), "sample")
    base = np_oucl(pos, neg, 8.0)
    every = [np.ones(2, dtype=bool)] * 3
    assert np_oucl(np.stack(pos), np.stack(neg), 8.0, np.stack(every)) == pytest.approx(base, rel=1e-12)
    assert np_oucl(pos, neg, 8.0, scaled=True) == pytest.approx(2.0 * base, rel=1e-12)
    assert np_oucl(np.stack(pos), np.stack(neg), 8.0, np.zeros((3, 2), dtype=bool)) == 0.0
    # A single pair by hand: log(1 + e^{γ(n − p)}), and its circle forms at margin m.
    p, n, m, g = 0.8, 0.3, 0.25, 4.0
    assert np_oucl([[p]], [[n]], g) == pytest.approx(math.log1p(math.exp(g * (n - p))), rel=1e-12)
    full = g * ((n + m) * (n - m) - (1 + m - p) * (p - (1 - m)))
    assert np_oucl([[p]], [[n]], g, circle="full", margin=m) == pytest.approx(math.log1p(math.exp(full)), rel=1e-12)
    delta = g * ((n - m) - (p - (1 - m)))
    assert np_oucl([[p]], [[n]], g, circle="delta_only", margin=m) == pytest.approx(math.log1p(math.exp(delta)))
    with pytest.raises(ValueError, match="circle"):
        np_oucl([[p]], [[n]], g, circle="half")


def test_score_rows_per_sample_join_the_two_view_rows():
    a, b = unit(4, 8, seed=21).numpy(), unit(4, 8, seed=22).numpy()
    (view_pos, view_neg), (sample_pos, sample_neg) = score_rows(a, b, "view"), score_rows(a, b, "sample")
    assert len(view_pos) == 8 and len(sample_pos) == 4
    for i in range(4):
        np.testing.assert_array_equal(sample_pos[i], np.concatenate([view_pos[i], view_pos[i + 4]]))
        np.testing.assert_array_equal(sample_neg[i], np.concatenate([view_neg[i], view_neg[i + 4]]))
    assert sample_pos[0][0] == pytest.approx((a[0] @ b[0] + 1) / 2)


def test_hand_mask_marks_same_label_negatives():
    mask = hand_mask([0, 1, 0], 0, 3)
    assert mask.shape == (6, 4)
    # Anchor 0 (label 0), candidates 1, 2, 4, 5 carry labels 1, 0, 1, 0.
    assert mask[0].tolist() == [False, True, False, True]
    assert not hand_mask([0, 1, 2, 3], 1, 2).any()


def test_statistics_by_hand():
    assert enumerated_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert enumerated_p([1.0, -1.0]) == 1.0
    assert holm_by_hand([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_by_hand([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_lab_of_known_colours():
    assert lab_of_pixel(1.0, 1.0, 1.0) == pytest.approx((100.0, 0.0, 0.0), abs=0.01)
    assert lab_of_pixel(0.0, 0.0, 0.0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    assert lab_of_pixel(1.0, 0.0, 0.0) == pytest.approx((53.24, 80.09, 67.20), abs=0.02)
