"""NT-Xent and the positive/negative split against independent NumPy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastlab.losses import (
    info_nce_from_similarities,
    negative_candidate_index,
    nt_xent,
    positive_negative_similarities,
)
from tests.helpers import unit
from tests.reference import np_nt_xent, np_two_view

TAUS = (0.1, 0.5, 1.0)
BATCHES = (2, 4, 7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("b, B, offset", [(1, 1, 0), (2, 2, 0), (2, 5, 3), (3, 7, 2), (7, 7, 0)])
def test_negative_candidate_index_is_candidate_order_without_self_and_positive(b, B, offset):
    index = negative_candidate_index(b, B, offset, "cpu")
    assert index.shape == (2 * b, 2 * B - 2) and index.dtype == torch.long
    for view in range(2):
        for i in range(b):
            own, partner = offset + i + view * B, offset + i + (1 - view) * B
            expected = [j for j in range(2 * B) if j not in (own, partner)]
            assert index[view * b + i].tolist() == expected


def test_negative_candidate_index_rejects_a_block_outside_the_batch():
    with pytest.raises(ValueError, match="does not fit"):
        negative_candidate_index(3, 4, 2, "cpu")


@pytest.mark.parametrize("b", BATCHES)
def test_positive_negative_similarities_match_numpy_with_global_tensors(b):
    B, offset = b + 3, 2
    z1_all, z2_all = unit(B, seed=b), unit(B, seed=b + 50)
    z1, z2 = z1_all[offset : offset + b], z2_all[offset : offset + b]
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    rows = np_two_view(z1_all.numpy(), z2_all.numpy(), offset, b)
    np.testing.assert_allclose(pos.numpy(), [p for p, _ in rows], rtol=1e-12)
    np.testing.assert_allclose(neg.numpy(), np.stack([n for _, n in rows]), rtol=1e-12)
    # The gathered columns are exactly the candidates named by negative_candidate_index.
    candidates = torch.cat([z1_all, z2_all])
    index = negative_candidate_index(b, B, offset, "cpu")
    torch.testing.assert_close(neg, torch.einsum("nd,nkd->nk", torch.cat([z1, z2]), candidates[index]))


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("b", BATCHES)
def test_nt_xent_matches_numpy(tau, b):
    z1, z2 = unit(b, seed=b), unit(b, seed=b + 100)
    expected = np_nt_xent(np_two_view(z1.numpy(), z2.numpy(), 0, b), tau)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, rel=1e-10)
    # float32 inputs give the same loss to float32 precision
    assert nt_xent(z1.float(), z2.float(), tau).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau", TAUS)
def test_negative_mask_drops_negatives(tau):
    b = 4
    z1, z2 = unit(b, seed=1), unit(b, seed=2)
    keep = torch.rand(2 * b, 2 * b - 2, generator=torch.Generator().manual_seed(3)) > 0.4
    keep[0] = False  # an anchor without negatives: its loss is -log(pos/pos) = 0
    expected = np_nt_xent(np_two_view(z1.numpy(), z2.numpy(), 0, b), tau, keep.numpy())
    assert nt_xent(z1, z2, tau, negative_mask=keep).item() == pytest.approx(expected, rel=1e-10)
    assert nt_xent(z1, z2, tau, negative_mask=torch.ones_like(keep)).item() == pytest.approx(
        nt_xent(z1, z2, tau).item(), rel=1e-12
    )


@pytest.mark.parametrize("sizes", [(4, 4), (3, 1, 3), (2, 2, 2, 1)])
def test_local_slices_with_global_tensors_sum_to_the_full_batch_loss(sizes):
    B = sum(sizes)
    z1_all = unit(B, seed=7).requires_grad_(True)
    z2_all = unit(B, seed=8).requires_grad_(True)
    full = nt_xent(z1_all, z2_all, 0.2)
    full_grads = torch.autograd.grad(full, (z1_all, z2_all))
    total, offset = 0.0, 0
    for b in sizes:
        local = nt_xent(z1_all[offset : offset + b], z2_all[offset : offset + b], 0.2, z1_all, z2_all, offset)
        total = total + (b / B) * local  # each worker's mean, weighted by its share of the anchors
        offset += b
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    for got, want in zip(torch.autograd.grad(total, (z1_all, z2_all)), full_grads):
        torch.testing.assert_close(got, want)


def test_info_nce_from_similarities_is_stable_at_small_temperature():
    pos = torch.tensor([0.9, -0.5], dtype=torch.float32)
    neg = torch.tensor([[0.95, -1.0], [0.99, 0.2]], dtype=torch.float32)
    loss = info_nce_from_similarities(pos, neg, 0.001)
    assert torch.isfinite(loss)
    expected = np.mean(
        [
            np.logaddexp.reduce(np.r_[p, n] / 0.001) - p / 0.001
            for p, n in zip(pos.double().numpy(), neg.double().numpy())
        ]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_bf16_autocast_computes_in_float32():
    z1, z2 = unit(8, d=32, seed=4, dtype=torch.float32), unit(8, d=32, seed=5, dtype=torch.float32)
    reference = nt_xent(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = nt_xent(z1, z2, 0.1)
        pos, _ = positive_negative_similarities(z1, z2)
    assert under_autocast.dtype == torch.float32 and pos.dtype == torch.float32
    # A bf16 matmul would be off by ~1e-2 here.
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-6)
    # bf16 inputs (what an autocast projector emits) are upcast before any arithmetic.
    bf16 = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    expected = nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.1)
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_flows_into_both_views():
    z1, z2 = unit(3, seed=1).requires_grad_(True), unit(3, seed=2).requires_grad_(True)
    nt_xent(z1, z2, 0.5).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
