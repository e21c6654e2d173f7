"""MetAug's OUCL and margin-injected loss against NumPy loops over every (positive, negative) pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.losses import margin_injected_loss, margins, oucl_loss, two_view_scores
from tests.reference import np_oucl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scores(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Random rescaled scores in [0, 1], as (cos + 1)/2 would give."""
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("gamma", (1.0, 4.0, 16.0, 64.0))
@pytest.mark.parametrize("n_pos", (1, 3))
def test_oucl_matches_the_double_sum(gamma, n_pos):
    pos, neg = scores(6, n_pos, 0), scores(6, 5, 1)
    expected = np_oucl(pos.numpy(), neg.numpy(), gamma)
    assert oucl_loss(pos, neg, gamma).item() == pytest.approx(expected, rel=1e-10)
    assert oucl_loss(pos, neg, gamma, scaled=True).item() == pytest.approx(16.0 / gamma * expected, rel=1e-10)


def test_oucl_masks_drop_pairs_and_empty_rows_give_zero_with_finite_gradient():
    pos = scores(5, 3, 2).requires_grad_(True)
    neg = scores(5, 6, 3).requires_grad_(True)
    pos_keep = torch.rand(5, 3, generator=torch.Generator().manual_seed(4)) > 0.3
    neg_keep = torch.rand(5, 6, generator=torch.Generator().manual_seed(5)) > 0.3
    pos_keep[0] = False  # no positive left: that row contributes log(1 + 0) = 0
    neg_keep[1] = False
    loss = oucl_loss(pos, neg, 16.0, pos_keep, neg_keep)
    expected = np_oucl(pos.detach().numpy(), neg.detach().numpy(), 16.0, pos_keep.numpy(), neg_keep.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert (pos.grad[~pos_keep] == 0).all() and (neg.grad[~neg_keep] == 0).all()
    assert (pos.grad[:2] == 0).all() and (neg.grad[:2] == 0).all()


@pytest.mark.parametrize("margin", (0.25, 0.4))
def test_oucl_circle_weights_and_margins(margin):
    pos, neg, gamma = scores(4, 2, 6), scores(4, 7, 7), 8.0
    expected = []
    for i in range(4):
        total = 0.0
        for p in pos[i].tolist():
            for n in neg[i].tolist():
                alpha_p, alpha_n = max(0.0, 1 + margin - p), max(0.0, n + margin)
                total += math.exp(gamma * (alpha_n * (n - margin) - alpha_p * (p - (1 - margin))))
        expected.append(math.log(1 + total))
    got = oucl_loss(pos, neg, gamma, circle=True, margin=margin)
    assert got.item() == pytest.approx(float(np.mean(expected)), rel=1e-10)


def test_oucl_is_stable_at_large_gamma():
    pos, neg = scores(4, 2, 8).float(), scores(4, 9, 9).float()
    loss = oucl_loss(pos, neg, 2000.0)
    assert torch.isfinite(loss)
    # log(1 + Σ e^{γ(n−p)}) → γ·max(0, max n − min p) as γ grows
    hinge = (neg.max(1).values - pos.min(1).values).clamp_min(0) * 2000.0
    assert loss.item() == pytest.approx(hinge.mean().item(), rel=1e-3, abs=2.0)


@pytest.mark.parametrize("b", (2, 4, 7))
def test_two_view_scores_are_the_cosines_in_the_shared_layout(b):
    gen = torch.Generator().manual_seed(b)
    z1 = F.normalize(torch.randn(b, 5, generator=gen, dtype=torch.float64), dim=1)
    z2 = F.normalize(torch.randn(b, 5, generator=gen, dtype=torch.float64), dim=1)
    pos, neg = two_view_scores(z1, z2)
    assert pos.shape == (2 * b, 1) and neg.shape == (2 * b, 2 * b - 2)
    z = torch.cat([z1, z2]).numpy()
    for i in range(2 * b):
        partner = (i + b) % (2 * b)
        assert pos[i, 0].item() == pytest.approx(float(z[i] @ z[partner]), rel=1e-12)
        others = [float(z[i] @ z[j]) for j in range(2 * b) if j not in (i, partner)]
        np.testing.assert_allclose(neg[i].numpy(), others, rtol=1e-12)


@pytest.mark.parametrize("kind", ("large", "small", "mean"))
@pytest.mark.parametrize("c", (1.0, 0.5))
def test_margin_injected_loss_matches_numpy(kind, c):
    gen = torch.Generator().manual_seed(1)
    op, on, ap, an = (torch.rand(4, s, generator=gen, dtype=torch.float64) for s in (1, 6, 2, 12))
    positive_terms, negative_terms = [], []
    for i in range(4):
        p_min, n_max = op[i].min().item(), on[i].max().item()
        if kind == "large":
            m_plus, m_minus = min(p_min, n_max), max(p_min, n_max)
        elif kind == "small":
            m_plus, m_minus = max(p_min, n_max), min(p_min, n_max)
        else:
            m_plus = m_minus = (p_min + n_max) / 2
        positive_terms += [max(0.0, p - m_plus) for p in ap[i].tolist()]
        negative_terms += [max(0.0, m_minus - n) for n in an[i].tolist()]
    expected = c * np.mean(positive_terms) + np.mean(negative_terms)
    assert margin_injected_loss(op, on, ap, an, kind, c).item() == pytest.approx(expected, rel=1e-12)


def test_kept_margins_pass_gradient_to_the_original_scores():
    op, on = scores(3, 1, 10).requires_grad_(True), scores(3, 4, 11).requires_grad_(True)
    ap, an = scores(3, 1, 12), scores(3, 4, 13)
    kept = margin_injected_loss(op, on, ap + 0.5, an - 0.5, "large", 1.0, margin_grad="keep")
    detached = margin_injected_loss(op, on, ap + 0.5, an - 0.5, "large", 1.0, margin_grad="detach")
    assert kept.item() == detached.item()
    kept.backward()
    assert op.grad.abs().sum() + on.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="margin_grad"):
        margins(op, on, "large", "sometimes")


def test_margins_are_detached_and_gradient_reaches_the_augmented_scores():
    op, on = scores(3, 1, 10).requires_grad_(True), scores(3, 4, 11).requires_grad_(True)
    ap, an = scores(3, 1, 12).requires_grad_(True), scores(3, 4, 13).requires_grad_(True)
    m_plus, m_minus = margins(op, on, "large")
    assert not m_plus.requires_grad and not m_minus.requires_grad and (m_plus <= m_minus).all()
    loss = margin_injected_loss(op, on, ap + 0.5, an - 0.5, "large")
    loss.backward()
    assert op.grad is None and on.grad is None
    assert ap.grad.abs().sum() > 0 and an.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="margin type"):
        margins(op, on, "huge")


def test_bf16_autocast_computes_in_float32():
    gen = torch.Generator().manual_seed(3)
    z1 = F.normalize(torch.randn(6, 32, generator=gen), dim=1)
    z2 = F.normalize(torch.randn(6, 32, generator=gen), dim=1)
    pos, neg = two_view_scores(z1, z2)
    reference = oucl_loss((pos + 1) / 2, (neg + 1) / 2, 16.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pos, neg = two_view_scores(z1, z2)
        loss = oucl_loss((pos + 1) / 2, (neg + 1) / 2, 16.0)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(reference.item(), rel=1e-6)
