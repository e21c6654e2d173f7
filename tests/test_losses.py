"""Every loss against an independent NumPy implementation of the published formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastlab.losses import (
    dcl_loss,
    fifo_enqueue,
    hard_pool,
    hcl_loss,
    label_entropy,
    margin_injected_loss,
    mixup_labels,
    moco_loss,
    negative_candidate_index,
    nt_xent,
    oucl_loss,
    positive_negative_similarities,
    slr_soft_labels,
    soft_cross_entropy,
    sscl_loss,
    synthesize_negatives,
)


def unit(n: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def views(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return unit(b, seed=seed), unit(b, seed=seed + 100)


def numpy_pos_neg(z1: np.ndarray, z2: np.ndarray):
    """For each of the 2B anchors: similarity to its positive and list of similarities to the others."""
    z = np.concatenate([z1, z2])
    b = z1.shape[0]
    out = []
    for i in range(2 * b):
        partner = (i + b) % (2 * b)
        negatives = [z[i] @ z[j] for j in range(2 * b) if j not in (i, partner)]
        out.append((z[i] @ z[partner], np.array(negatives)))
    return out


def np_debiased(z1, z2, tau, tau_plus, beta):
    losses = []
    for pos_s, neg_s in numpy_pos_neg(z1, z2):
        pos, neg = math.exp(pos_s / tau), np.exp(neg_s / tau)
        n = len(neg)
        imp = np.exp(beta * neg_s / tau)
        weighted = (imp * neg).sum() / imp.mean()
        ng = max((weighted - tau_plus * n * pos) / (1 - tau_plus), n * math.exp(-1 / tau))
        losses.append(-math.log(pos / (pos + ng)))
    return float(np.mean(losses))


GRID = list(itertools.product([0.1, 0.5, 1.0], [2, 4, 7]))


@pytest.mark.parametrize("tau, b", GRID)
def test_nt_xent_matches_numpy(tau, b):
    z1, z2 = views(b)
    expected = np.mean([
        -math.log(math.exp(p / tau) / (math.exp(p / tau) + np.exp(n / tau).sum()))
        for p, n in numpy_pos_neg(z1.numpy(), z2.numpy())
    ])
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


DEBIAS_GRID = list(itertools.product([0.1, 0.5, 1.0], [0.0, 0.05, 0.1], [0, 0.5, 1, 2]))


@pytest.mark.parametrize("tau, tau_plus, beta", DEBIAS_GRID)
def test_dcl_and_hcl_match_numpy(tau, tau_plus, beta):
    for b in (2, 4, 7):
        z1, z2 = views(b, seed=b)
        expected = np_debiased(z1.numpy(), z2.numpy(), tau, tau_plus, beta)
        assert hcl_loss(z1, z2, tau, tau_plus, beta).item() == pytest.approx(expected, rel=1e-6)
        if beta == 0:
            assert dcl_loss(z1, z2, tau, tau_plus).item() == pytest.approx(expected, rel=1e-6)


def test_identities_between_baselines():
    z1, z2 = views(5)
    base = nt_xent(z1, z2, 0.3)
    assert dcl_loss(z1, z2, 0.3, 0.0).item() == pytest.approx(base.item(), rel=1e-9)
    assert hcl_loss(z1, z2, 0.3, 0.1, 0.0).item() == pytest.approx(dcl_loss(z1, z2, 0.3, 0.1).item(), rel=1e-9)
    # The clamp N·e^{-1/τ} never binds at τ+ = 0 since every cosine is >= -1.
    pos, neg = positive_negative_similarities(z1, z2)
    assert (torch.exp(neg / 0.3).sum(1) >= neg.shape[1] * math.exp(-1 / 0.3)).all()


def test_sscl_identities_at_k_zero():
    z1, z2 = views(6)
    pos, neg = positive_negative_similarities(z1, z2)
    empty = neg[:, :0]
    tau = 0.5
    loss = lambda beta, tp: sscl_loss(pos, neg, empty, tau, beta, tp)[0].item()  # noqa: E731
    assert loss(0.0, 0.0) == pytest.approx(nt_xent(z1, z2, tau).item(), rel=1e-9)
    assert loss(1.0, 0.1) == pytest.approx(hcl_loss(z1, z2, tau, 0.1, 1.0).item(), rel=1e-9)
    assert loss(0.0, 0.1) == pytest.approx(dcl_loss(z1, z2, tau, 0.1).item(), rel=1e-9)
    assert loss(2.0, 0.0) == pytest.approx(hcl_loss(z1, z2, tau, 0.0, 2.0).item(), rel=1e-9)


def test_sscl_with_synthetic_negatives_matches_numpy():
    z1, z2 = views(4)
    pos, neg = positive_negative_similarities(z1, z2)
    synth = torch.rand(8, 3, dtype=torch.float64) * 2 - 1
    tau, beta, tau_plus = 0.5, 1.0, 0.1
    for count_mode in ("all", "real_only"):
        loss = sscl_loss(pos, neg, synth, tau, beta, tau_plus, count_mode)[0].item()
        expected = []
        for i in range(8):
            s = np.concatenate([neg[i].numpy(), synth[i].numpy()])
            p = math.exp(pos[i].item() / tau)
            imp = np.exp(beta * s / tau)
            weighted = (imp * np.exp(s / tau)).sum() / imp.mean()
            n_debias = len(s) if count_mode == "all" else neg.shape[1]
            ng = max((weighted - tau_plus * n_debias * p) / (1 - tau_plus), len(s) * math.exp(-1 / tau))
            expected.append(-math.log(p / (p + ng)))
        assert loss == pytest.approx(np.mean(expected), rel=1e-6)


def test_distributed_slices_sum_to_the_full_batch():
    z1, z2 = views(8)
    full = nt_xent(z1, z2, 0.2)
    world = 4
    b = 8 // world
    parts = [nt_xent(z1[r * b:(r + 1) * b], z2[r * b:(r + 1) * b], 0.2, z1, z2, r * b) for r in range(world)]
    assert (sum(parts) / world).item() == pytest.approx(full.item(), rel=1e-9)
    hcl_parts = [hcl_loss(z1[r * b:(r + 1) * b], z2[r * b:(r + 1) * b], 0.2, 0.1, 1.0, z1, z2, r * b)
                 for r in range(world)]
    assert (sum(hcl_parts) / world).item() == pytest.approx(hcl_loss(z1, z2, 0.2, 0.1, 1.0).item(), rel=1e-9)


def test_negative_index_and_mask():
    index = negative_candidate_index(2, 4, offset=2, device="cpu")
    # local anchors 0,1 are global 2,3 (view 1) and 6,7 (view 2)
    assert index[0].tolist() == [0, 1, 3, 4, 5, 7]
    assert index[2].tolist() == [0, 1, 3, 4, 5, 7]
    z1, z2 = views(4)
    keep = torch.ones(8, 6, dtype=torch.bool)
    keep[:, 0] = False
    pos, neg = positive_negative_similarities(z1, z2)
    masked = nt_xent(z1, z2, 0.5, negative_mask=keep)
    expected = np.mean([-math.log(math.exp(p / 0.5) / (math.exp(p / 0.5) + np.exp(n[1:] / 0.5).sum()))
                        for p, n in zip(pos.numpy(), neg.numpy())])
    assert masked.item() == pytest.approx(expected, rel=1e-9)


def test_synthetic_negatives_come_from_the_pool_detached_and_unit_norm():
    anchors = unit(5).requires_grad_(True)
    candidates = unit(20, seed=3).requires_grad_(True)
    sims = anchors @ candidates.T
    exclude = torch.zeros(5, 20, dtype=torch.bool)
    exclude[:, 0] = True
    pool = hard_pool(sims, 4, exclude)
    assert not (pool == 0).any()
    expected_pool = sims.detach().masked_fill(exclude, -2).topk(4, dim=1).indices
    assert torch.equal(pool.sort(1).values, expected_pool.sort(1).values)
    gen = torch.Generator().manual_seed(0)
    for mode in ("pair_mix", "duplicate", "anchor_mix"):
        h = synthesize_negatives(anchors, candidates, pool, 7, mode, gen)
        assert h.shape == (5, 7, 6) and not h.requires_grad
        torch.testing.assert_close(h.norm(dim=2), torch.ones(5, 7, dtype=h.dtype))
        for i in range(5):
            members = candidates.detach()[pool[i]]
            for vec in h[i]:
                if mode == "duplicate":
                    assert (members - vec).norm(dim=1).min() < 1e-9
                else:
                    # h lies in the span of two pool members (or the anchor and one member)
                    others = members if mode == "pair_mix" else torch.cat([anchors.detach()[i:i + 1], members])
                    best = min(
                        torch.linalg.lstsq(torch.stack([others[a], others[c]]).T, vec[:, None]).residuals.sum()
                        if a != c else (others[a] - vec).norm() ** 2
                        for a in range(len(others)) for c in range(len(others))
                    )
                    assert best < 1e-9
    assert synthesize_negatives(anchors, candidates, pool, 0, "pair_mix", gen).shape == (5, 0, 6)


def test_gradient_reaches_anchors_and_real_negatives_not_synthetics():
    z1 = unit(4).requires_grad_(True)
    z2 = unit(4, seed=9).requires_grad_(True)
    pos, neg = positive_negative_similarities(z1, z2)
    candidates = torch.cat([z1, z2])
    pool = hard_pool(torch.cat([z1, z2]) @ candidates.T, 3)
    synth = synthesize_negatives(torch.cat([z1, z2]), candidates, pool, 5, "pair_mix", torch.Generator())
    synth_sims = torch.einsum("nd,nkd->nk", torch.cat([z1, z2]), synth)
    loss, _ = sscl_loss(pos, neg, synth_sims, 0.5, 1.0, 0.1)
    loss.backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    assert synth.grad_fn is None


def test_moco_loss_matches_numpy():
    q, k, queue = unit(4), unit(4, seed=1), unit(10, seed=2)
    tau = 0.2
    expected = []
    for i in range(4):
        logits = np.concatenate([[q[i] @ k[i]], queue.numpy() @ q[i].numpy()]) / tau
        expected.append(-logits[0] + math.log(np.exp(logits).sum()))
    assert moco_loss(q, k, queue, tau).item() == pytest.approx(np.mean(expected), rel=1e-6)


def test_fifo_enqueue_wraps_around():
    queue = torch.zeros(5, 2)
    ptr = torch.tensor(3)
    keys = torch.arange(8.0).view(4, 2)
    new, new_ptr = fifo_enqueue(queue, ptr, keys)
    assert new[:, 0].tolist() == [4.0, 6.0, 0.0, 0.0, 2.0] and new_ptr.item() == 2
    big, big_ptr = fifo_enqueue(queue, ptr, torch.arange(14.0).view(7, 2))
    assert big[:, 0].tolist() == [4.0, 6.0, 8.0, 10.0, 12.0] and big_ptr.item() == 0


@pytest.mark.parametrize("top_k", [None, 3])
def test_slr_soft_labels_match_numpy(top_k):
    keys, candidates = unit(4), unit(9, seed=5)
    positive = torch.tensor([0, 1, 2, 3])
    labels = slr_soft_labels(keys, candidates, positive, 0.3, 0.1, top_k)
    for i in range(4):
        logits = candidates.numpy() @ keys[i].numpy() / 0.1
        p = np.exp(logits - logits.max())
        p /= p.sum()
        if top_k:
            cut = np.sort(p)[-top_k]
            p = np.where(p >= cut, p, 0)
            p /= p.sum()
        onehot = np.eye(9)[i]
        np.testing.assert_allclose(labels[i].numpy(), 0.7 * onehot + 0.3 * p, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(labels.sum(1), torch.ones(4, dtype=labels.dtype))
    onehot = slr_soft_labels(keys, candidates, positive, 0.0, 0.1)
    assert torch.equal(onehot, F.one_hot(positive, 9).to(onehot.dtype))


def test_soft_cross_entropy_and_helpers():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 0, 6, 3, 3])
    assert soft_cross_entropy(logits, F.one_hot(target, 7).float()).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)
    uniform = torch.full((2, 4), 0.25)
    assert label_entropy(uniform).item() == pytest.approx(math.log(4))
    labels = torch.eye(3)
    mixed = mixup_labels(labels, torch.tensor([2, 0, 1]), 0.75)
    assert mixed[0].tolist() == [0.75, 0.0, 0.25]


def test_oucl_matches_numpy_double_sum():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(6, 2, generator=gen, dtype=torch.float64)
    neg = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    for gamma in (1.0, 4.0, 16.0):
        expected = np.mean([
            math.log(1 + sum(math.exp(gamma * (n - p)) for p in pos[i].tolist() for n in neg[i].tolist()))
            for i in range(6)
        ])
        assert oucl_loss(pos, neg, gamma).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kind", ["large", "small", "mean"])
def test_margin_injected_loss_matches_numpy(kind):
    gen = torch.Generator().manual_seed(1)
    op, on, ap, an = (torch.rand(4, s, generator=gen, dtype=torch.float64) for s in (1, 6, 2, 12))
    total_p, total_n = [], []
    for i in range(4):
        p_min, n_max = op[i].min().item(), on[i].max().item()
        lo, hi = min(p_min, n_max), max(p_min, n_max)
        m_plus, m_minus = {"large": (lo, hi), "small": (hi, lo), "mean": ((lo + hi) / 2,) * 2}[kind]
        total_p += [max(0.0, p - m_plus) for p in ap[i].tolist()]
        total_n += [max(0.0, m_minus - n) for n in an[i].tolist()]
    expected = 0.5 * np.mean(total_p) + np.mean(total_n)
    assert margin_injected_loss(op, on, ap, an, kind, 0.5).item() == pytest.approx(expected, rel=1e-9)
