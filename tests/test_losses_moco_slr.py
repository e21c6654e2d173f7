"""MoCo v2 loss and queue, SLR soft labels, soft cross-entropy and mixup labels vs NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.losses import (
    fifo_enqueue,
    label_entropy,
    mixup_labels,
    moco_logits,
    moco_loss,
    slr_soft_labels,
    soft_cross_entropy,
)
from tests.helpers import unit
from tests.reference import np_softmax

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("tau", (0.1, 0.5, 1.0))
@pytest.mark.parametrize("b", (2, 4, 7))
@pytest.mark.parametrize("masked", (False, True))
def test_moco_loss_matches_numpy(tau, b, masked):
    q, k, queue = unit(b, seed=b), unit(b, seed=b + 1), unit(11, seed=b + 2)
    keep = torch.rand(b, 11, generator=torch.Generator().manual_seed(b)) < 0.5 if masked else None
    logits = moco_logits(q, k, queue, tau)
    losses = []
    for i in range(b):
        row = np.array([q[i] @ k[i]] + [q[i] @ queue[j] for j in range(11)]) / tau
        np.testing.assert_allclose(logits[i].numpy(), row, rtol=1e-12)
        kept = [0] + [1 + j for j in range(11) if keep is None or bool(keep[i, j])]
        losses.append(-math.log(math.exp(row[0]) / np.exp(row[kept]).sum()))
    assert moco_loss(q, k, queue, tau, negative_mask=keep).item() == pytest.approx(np.mean(losses), rel=1e-10)


def test_moco_gradient_reaches_only_the_queries_and_autocast_is_float32():
    q = unit(4, d=32, seed=1, dtype=torch.float32).requires_grad_(True)
    k = unit(4, d=32, seed=2, dtype=torch.float32).requires_grad_(True)
    queue = unit(16, d=32, seed=3, dtype=torch.float32).requires_grad_(True)
    loss = moco_loss(q, k, queue, 0.2)
    loss.backward()
    assert q.grad.abs().sum() > 0 and k.grad is None and queue.grad is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = moco_loss(q, k, queue, 0.2)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(loss.item(), rel=1e-6)


def test_fifo_enqueue_wraps_around_and_is_pure():
    queue = torch.zeros(5, 2)
    keys = torch.arange(8.0).view(4, 2)
    new, ptr = fifo_enqueue(queue, torch.tensor(3), keys)
    assert new[:, 0].tolist() == [4.0, 6.0, 0.0, 0.0, 2.0] and ptr.item() == 2
    assert queue.abs().sum() == 0  # the input is untouched
    new_int, ptr_int = fifo_enqueue(queue, 3, keys)
    assert torch.equal(new_int, new) and ptr_int == 2 and isinstance(ptr_int, int)


@pytest.mark.parametrize("ptr, n", [(0, 5), (3, 7), (4, 12), (2, 1), (1, 0)])
def test_fifo_enqueue_equals_one_key_at_a_time(ptr, n):
    size = 5
    start = torch.arange(size * 3, dtype=torch.float64).view(size, 3) * -1
    keys = torch.arange(n * 3, dtype=torch.float64).view(n, 3) + 100
    batched, batched_ptr = fifo_enqueue(start, torch.tensor(ptr), keys)
    one, one_ptr = start, torch.tensor(ptr)
    for j in range(n):
        one, one_ptr = fifo_enqueue(one, one_ptr, keys[j : j + 1])
    assert torch.equal(batched, one) and batched_ptr.item() == one_ptr.item() == (ptr + n) % size


@pytest.mark.parametrize("top_k", (None, 1, 3, 9))
@pytest.mark.parametrize("alpha, tau_prime", [(0.3, 0.1), (0.9, 0.02), (0.5, 0.2)])
def test_slr_soft_labels_match_numpy(top_k, alpha, tau_prime):
    keys, candidates = unit(4, seed=1), unit(9, seed=2)
    positive = torch.tensor([0, 3, 2, 8])
    labels = slr_soft_labels(keys, candidates, positive, alpha, tau_prime, top_k)
    for i in range(4):
        p = np_softmax(np.array([keys[i] @ c for c in candidates]) / tau_prime)
        if top_k is not None:
            keep = np.argsort(-p)[:top_k]
            truncated = np.zeros_like(p)
            truncated[keep] = p[keep]
            p = truncated / truncated.sum()
        expected = (1 - alpha) * np.eye(9)[positive[i].item()] + alpha * p
        np.testing.assert_allclose(labels[i].numpy(), expected, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(labels.sum(1), torch.ones(4, dtype=labels.dtype))


def test_slr_alpha_zero_is_one_hot_and_labels_carry_no_gradient():
    keys = unit(3, seed=4).requires_grad_(True)
    candidates = unit(7, seed=5).requires_grad_(True)
    positive = torch.tensor([1, 0, 6])
    onehot = slr_soft_labels(keys, candidates, positive, 0.0, 0.1)
    assert torch.equal(onehot, F.one_hot(positive, 7).to(onehot.dtype))
    assert not slr_soft_labels(keys, candidates, positive, 0.5, 0.1, 2).requires_grad
    with pytest.raises(ValueError, match="alpha"):
        slr_soft_labels(keys, candidates, positive, 1.5, 0.1)


def test_soft_cross_entropy_matches_numpy_and_one_hot_is_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=gen, dtype=torch.float64).requires_grad_(True)
    target = torch.softmax(torch.randn(5, 7, generator=gen, dtype=torch.float64), 1).requires_grad_(True)
    expected = np.mean(
        [
            -sum(
                target[i, c].item() * (logits[i, c].item() - np.log(np.exp(logits[i].detach().numpy()).sum()))
                for c in range(7)
            )
            for i in range(5)
        ]
    )
    loss = soft_cross_entropy(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert target.grad is None and logits.grad.abs().sum() > 0
    hard = torch.tensor([1, 0, 6, 3, 3])
    assert soft_cross_entropy(logits, F.one_hot(hard, 7).double()).item() == pytest.approx(
        F.cross_entropy(logits, hard).item(), rel=1e-12
    )


def test_soft_cross_entropy_with_vanilla_label_is_moco():
    # α = 0 and the batch keys dropped from C leave exactly MoCo v2's loss.
    q, k, queue = unit(4, seed=7), unit(4, seed=8), unit(10, seed=9)
    logits = moco_logits(q, k, queue, 0.2)
    labels = F.one_hot(torch.zeros(4, dtype=torch.long), 11).double()
    assert soft_cross_entropy(logits, labels).item() == pytest.approx(moco_loss(q, k, queue, 0.2).item(), rel=1e-12)


def test_label_entropy_and_mixup_labels():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    expected = np.mean([-sum(p * math.log(p) for p in row if p > 0) for row in probs.tolist()])
    assert label_entropy(probs).item() == pytest.approx(expected, rel=1e-6)
    labels = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), 1)
    perm = torch.tensor([2, 0, 3, 1])
    mixed = mixup_labels(labels, perm, 0.75)
    np.testing.assert_allclose(mixed.numpy(), 0.75 * labels.numpy() + 0.25 * labels.numpy()[[2, 0, 3, 1]], rtol=1e-6)
    theta = torch.tensor([0.1, 0.5, 0.9, 1.0])
    per_row = mixup_labels(labels, perm, theta)
    for i in range(4):
        t = theta[i].item()
        np.testing.assert_allclose(
            per_row[i].numpy(), t * labels[i].numpy() + (1 - t) * labels[perm[i]].numpy(), rtol=1e-6
        )
    torch.testing.assert_close(per_row.sum(1), torch.ones(4))
