"""DCL and HCL against independent NumPy loops of Chuang et al. 2020 / Robinson et al. 2021."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from contrastlab.losses import (
    dcl_loss,
    debiased_loss_from_similarities,
    debiased_negative_term,
    hardness_weights,
    hcl_loss,
    nt_xent,
    positive_negative_similarities,
)
from tests.helpers import unit
from tests.reference import np_debiased, np_ng, np_two_view

GRID = list(itertools.product((0.1, 0.5, 1.0), (0.0, 0.05, 0.1), (0.0, 0.5, 1.0, 2.0)))
BATCHES = (2, 4, 7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("tau, tau_plus, beta", GRID)
def test_hcl_and_dcl_match_numpy(tau, tau_plus, beta):
    for b in BATCHES:
        z1, z2 = unit(b, seed=b), unit(b, seed=b + 100)
        expected = np_debiased(np_two_view(z1.numpy(), z2.numpy()), tau, tau_plus, beta)
        assert hcl_loss(z1, z2, tau, tau_plus, beta).item() == pytest.approx(expected, rel=1e-9)
        if beta == 0:
            assert dcl_loss(z1, z2, tau, tau_plus).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("tau", (0.1, 0.5, 1.0))
@pytest.mark.parametrize("b", BATCHES)
def test_tau_plus_zero_is_nt_xent_and_beta_zero_is_dcl(tau, b):
    z1, z2 = unit(b, seed=b), unit(b, seed=b + 1)
    base = nt_xent(z1, z2, tau)
    assert dcl_loss(z1, z2, tau, 0.0).item() == pytest.approx(base.item(), rel=1e-12)
    assert hcl_loss(z1, z2, tau, 0.0, 0.0).item() == pytest.approx(base.item(), rel=1e-12)
    for tau_plus in (0.05, 0.1):
        assert torch.equal(hcl_loss(z1, z2, tau, tau_plus, 0.0), dcl_loss(z1, z2, tau, tau_plus))


@pytest.mark.parametrize("tau", (0.1, 0.5, 1.0))
def test_clamp_cannot_bind_at_tau_plus_zero(tau):
    # Σ_j e^{s_ij/τ} ≥ N·e^{−1/τ} because every cosine is ≥ −1; equality at s = −1 exactly.
    z1, z2 = unit(7, seed=3), unit(7, seed=4)
    _, neg = positive_negative_similarities(z1, z2)
    assert (torch.exp(neg / tau).sum(1) >= neg.shape[1] * math.exp(-1 / tau)).all()
    worst = torch.full((3, 5), -1.0, dtype=torch.float64)
    pos = torch.tensor([0.5, -1.0, 1.0], dtype=torch.float64)
    ng = debiased_negative_term(torch.exp(pos / tau), torch.exp(worst / tau), 0.0, tau)
    torch.testing.assert_close(ng, torch.exp(worst / tau).sum(1))
    # and the loss is still InfoNCE there
    expected = (torch.logsumexp(torch.cat([pos[:, None], worst], 1) / tau, 1) - pos / tau).mean()
    assert debiased_loss_from_similarities(pos, worst, tau, 0.0).item() == pytest.approx(expected.item(), rel=1e-12)


def test_clamp_binds_when_the_debiased_estimate_goes_below_it():
    pos = torch.tensor([0.99, 0.2], dtype=torch.float64)
    neg = torch.tensor([[-0.9, -0.95, -0.8], [0.1, 0.3, -0.2]], dtype=torch.float64)
    tau, tau_plus = 0.5, 0.2
    ng = debiased_negative_term(torch.exp(pos / tau), torch.exp(neg / tau), tau_plus, tau)
    assert ng[0].item() == pytest.approx(3 * math.exp(-1 / tau), rel=1e-12)  # the floor
    expected = [np_ng(p, n, tau, tau_plus, 0.0) for p, n in zip(pos.tolist(), neg.numpy())]
    np.testing.assert_allclose(ng.numpy(), expected, rtol=1e-12)


def test_debiased_negative_term_count_and_log_shift():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(4, generator=gen, dtype=torch.float64) * 2 - 1
    neg = torch.rand(4, 6, generator=gen, dtype=torch.float64) * 2 - 1
    tau, tau_plus = 0.3, 0.1
    with_count = debiased_negative_term(torch.exp(pos / tau), torch.exp(neg / tau), tau_plus, tau, count=4.0)
    expected = [
        max((np.exp(n / tau).sum() - tau_plus * 4 * math.exp(p / tau)) / (1 - tau_plus), 6 * math.exp(-1 / tau))
        for p, n in zip(pos.tolist(), neg.numpy())
    ]
    np.testing.assert_allclose(with_count.numpy(), expected, rtol=1e-12)
    # Inputs scaled by e^{-shift} give the result scaled by e^{-shift}, clamp included.
    shift = torch.tensor([0.0, 3.0, -2.0, 10.0], dtype=torch.float64)
    shifted = debiased_negative_term(
        torch.exp(pos / tau - shift), torch.exp(neg / tau - shift[:, None]), tau_plus, tau, count=4.0, log_shift=shift
    )
    torch.testing.assert_close(shifted * torch.exp(shift), with_count)
    with pytest.raises(ValueError, match="tau_plus"):
        debiased_negative_term(pos, neg, 1.0, tau)


@pytest.mark.parametrize("tau, beta", [(0.1, 0.5), (0.5, 2.0), (1.0, 1.0), (0.5, 0.0)])
def test_hardness_weights_match_numpy_and_average_one(tau, beta):
    gen = torch.Generator().manual_seed(1)
    sims = torch.rand(5, 7, generator=gen, dtype=torch.float64) * 2 - 1
    mask = torch.rand(5, 7, generator=gen) > 0.3
    mask[:, 0] = True
    for m in (None, mask):
        weights = hardness_weights(sims, tau, beta, m)
        for i in range(5):
            kept = np.ones(7, bool) if m is None else m[i].numpy()
            e = np.exp(beta * sims[i].numpy() / tau)
            expected = np.where(kept, e / e[kept].mean(), 0.0)
            np.testing.assert_allclose(weights[i].numpy(), expected, rtol=1e-10, atol=1e-15)
    assert torch.equal(hardness_weights(sims, tau, 0.0), torch.ones_like(sims))


@pytest.mark.parametrize("tau, tau_plus, beta", [(0.1, 0.1, 1.0), (0.5, 0.05, 2.0), (1.0, 0.0, 0.0)])
def test_masked_negatives_are_dropped_from_sum_weights_and_count(tau, tau_plus, beta):
    b = 4
    z1, z2 = unit(b, seed=11), unit(b, seed=12)
    keep = torch.rand(2 * b, 2 * b - 2, generator=torch.Generator().manual_seed(2)) > 0.3
    keep[:, 0] = True
    rows = [(p, n[keep[i].numpy()]) for i, (p, n) in enumerate(np_two_view(z1.numpy(), z2.numpy()))]
    expected = np_debiased(rows, tau, tau_plus, beta)
    assert hcl_loss(z1, z2, tau, tau_plus, beta, negative_mask=keep).item() == pytest.approx(expected, rel=1e-9)


def test_local_slices_with_global_tensors_sum_to_the_full_batch_loss():
    z1_all, z2_all = unit(7, seed=21), unit(7, seed=22)
    for tau_plus, beta in ((0.1, 0.0), (0.1, 1.0), (0.05, 2.0)):
        full = hcl_loss(z1_all, z2_all, 0.3, tau_plus, beta)
        total, offset = 0.0, 0
        for b in (3, 1, 3):
            part = hcl_loss(
                z1_all[offset : offset + b], z2_all[offset : offset + b], 0.3, tau_plus, beta, z1_all, z2_all, offset
            )
            total += b / 7 * part.item()
            offset += b
        assert total == pytest.approx(full.item(), rel=1e-12)


def test_extreme_temperature_and_concentration_stay_finite_and_exact():
    z1, z2 = unit(5, seed=31), unit(5, seed=32)
    tau, tau_plus, beta = 0.01, 0.1, 4.0
    expected = np_debiased(np_two_view(z1.numpy(), z2.numpy()), tau, tau_plus, beta)  # float64: e^{400} fits
    loss = hcl_loss(z1.float().requires_grad_(True), z2.float(), tau, tau_plus, beta)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected, rel=1e-4)


def test_gradient_and_bf16_autocast():
    z1 = unit(6, d=32, seed=41, dtype=torch.float32).requires_grad_(True)
    z2 = unit(6, d=32, seed=42, dtype=torch.float32).requires_grad_(True)
    reference = hcl_loss(z1, z2, 0.1, 0.1, 1.0)
    reference.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = hcl_loss(z1, z2, 0.1, 0.1, 1.0)
        dcl = dcl_loss(z1, z2, 0.1, 0.1)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-6)
    assert dcl.item() == pytest.approx(dcl_loss(z1, z2, 0.1, 0.1).item(), rel=1e-6)
