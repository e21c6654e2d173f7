"""SSCL's hard pools, synthetic negatives and loss; MoCHi mixing (NumPy references and identities)."""

from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pytest
import torch

from contrastlab.losses import (
    dcl_loss,
    hard_pool,
    hcl_loss,
    mochi_negatives,
    negative_candidate_index,
    nt_xent,
    positive_negative_similarities,
    sscl_loss,
    synthesize_negatives,
    synthetic_similarities,
)
from tests import helpers
from tests.reference import np_sscl

D = 8
unit = partial(helpers.unit, d=D)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reconstruct_mix(h: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Least-squares h ≈ x·a + y·c; returns (residual, x/(x+y)), the mixing weight on a."""
    coef, *_ = np.linalg.lstsq(np.stack([a, c], axis=1), h, rcond=None)
    residual = float(np.linalg.norm(np.stack([a, c], axis=1) @ coef - h))
    return residual, float(coef[0] / coef.sum())


def test_hard_pool_is_the_top_s_not_excluded():
    sims = torch.rand(6, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    exclude = torch.zeros(6, 10, dtype=torch.bool)
    exclude[:, 0] = True
    exclude[torch.arange(6), torch.arange(6) + 1] = True
    pool = hard_pool(sims, 4, exclude)
    assert pool.shape == (6, 4) and not pool.requires_grad
    for i in range(6):
        allowed = [j for j in range(10) if not exclude[i, j]]
        expected = sorted(allowed, key=lambda j: -sims[i, j].item())[:4]
        assert sorted(pool[i].tolist()) == sorted(expected)
    with pytest.raises(ValueError, match="pool_size"):
        hard_pool(sims, 11)


def _setup(n: int = 5, m: int = 12, pool_size: int = 4):
    anchors, candidates = unit(n, seed=1), unit(m, seed=2)
    pool = hard_pool(anchors @ candidates.T, pool_size)
    return anchors, candidates, pool


def test_pair_mix_lies_on_the_segment_between_two_pool_members():
    anchors, candidates, pool = _setup()
    h = synthesize_negatives(anchors, candidates, pool, 6, "pair_mix", torch.Generator().manual_seed(0))
    assert h.shape == (5, 6, D) and h.dtype == candidates.dtype
    torch.testing.assert_close(h.norm(dim=2), torch.ones(5, 6, dtype=h.dtype))
    for i, j in itertools.product(range(5), range(6)):
        members = candidates[pool[i]].numpy()
        vec = h[i, j].numpy()
        fits = []
        for u, w in itertools.product(range(len(members)), repeat=2):
            if u == w:
                fits.append((float(np.linalg.norm(members[u] - vec)), 1.0))
            else:
                fits.append(reconstruct_mix(vec, members[u], members[w]))
        residual, alpha = min(fits)
        assert residual < 1e-9 and -1e-9 <= alpha <= 1 + 1e-9


def test_anchor_mix_puts_at_most_half_the_weight_on_the_anchor():
    anchors, candidates, pool = _setup()
    h = synthesize_negatives(anchors, candidates, pool, 6, "anchor_mix", torch.Generator().manual_seed(1))
    torch.testing.assert_close(h.norm(dim=2), torch.ones(5, 6, dtype=h.dtype))
    for i, j in itertools.product(range(5), range(6)):
        fits = [reconstruct_mix(h[i, j].numpy(), anchors[i].numpy(), member.numpy()) for member in candidates[pool[i]]]
        residual, beta = min(fits)
        assert residual < 1e-9 and -1e-9 <= beta <= 0.5 + 1e-9


def test_duplicate_copies_a_pool_member_and_k_zero_is_empty():
    anchors, candidates, pool = _setup()
    h = synthesize_negatives(anchors, candidates, pool, 7, "duplicate", torch.Generator().manual_seed(2))
    for i in range(5):
        members = candidates[pool[i]]
        assert all((members - vec).norm(dim=1).min() < 1e-12 for vec in h[i])
    for mode in ("pair_mix", "duplicate", "anchor_mix"):
        assert synthesize_negatives(anchors, candidates, pool, 0, mode).shape == (5, 0, D)
    with pytest.raises(ValueError, match="mix mode"):
        synthesize_negatives(anchors, candidates, pool, 3, "mean")


def ks_distance_to_uniform(samples: np.ndarray, high: float) -> float:
    """Kolmogorov–Smirnov distance between the samples and U(0, high)."""
    x = np.sort(samples) / high
    n = len(x)
    return float(max((np.arange(1, n + 1) / n - x).max(), (x - np.arange(n) / n).max()))


def test_mixing_weights_follow_their_uniform_laws():
    """α ~ U(0, 1) (pair_mix) and β ~ U(0, 0.5) (anchor_mix), read back from the mixed points."""
    anchor, members = unit(1, seed=3), unit(2, seed=4)
    draws = 40000
    pool = torch.tensor([[0, 1]])
    gen = torch.Generator().manual_seed(5)
    h = synthesize_negatives(anchor, members, pool, draws, "pair_mix", gen)[0].numpy()
    coef, *_ = np.linalg.lstsq(members.numpy().T, h.T, rcond=None)
    mixed = np.abs(coef).min(0) > 1e-9  # u == w gives a copy of one member, no weight to read
    weight_on_first = coef[0, mixed] / coef[:, mixed].sum(0)
    # u, w are exchangeable, so the weight on member 0 is α or 1 − α: U(0, 1) either way.
    # 1.63/√n is the 1% critical value; the seed is fixed, so the test is deterministic.
    assert ks_distance_to_uniform(weight_on_first, 1.0) < 1.63 / math.sqrt(mixed.sum())
    assert abs(mixed.mean() - 0.5) < 0.02  # u == w half the time with a pool of two
    h = synthesize_negatives(anchor, members, pool[:, :1], draws, "anchor_mix", gen)[0].numpy()
    basis = np.stack([anchor[0].numpy(), members[0].numpy()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, h.T, rcond=None)
    assert ks_distance_to_uniform(coef[0] / coef.sum(0), 0.5) < 1.63 / math.sqrt(draws)
    # duplicate picks every pool member equally often
    pool4 = torch.arange(4)[None]
    h = synthesize_negatives(anchor, unit(4, seed=6), pool4, 8000, "duplicate", gen)[0]
    picks = (h @ unit(4, seed=6).T).argmax(1)
    counts = torch.bincount(picks, minlength=4).double()
    assert ((counts - 2000).abs() < 4 * math.sqrt(8000 * 0.25 * 0.75)).all()


def test_mix_max_caps_the_weight_of_the_second_point():
    """pair_mix: the lighter weight ~ U(0, mix_max); anchor_mix: β ~ U(0, mix_max); read back."""
    anchor, members = unit(1, seed=3), unit(2, seed=4)
    draws, pool = 40000, torch.tensor([[0, 1]])
    gen = torch.Generator().manual_seed(11)
    h = synthesize_negatives(anchor, members, pool, draws, "pair_mix", gen, mix_max=0.2).numpy()[0]
    coef, *_ = np.linalg.lstsq(members.numpy().T, h.T, rcond=None)
    mixed = np.abs(coef).min(0) > 1e-9
    lighter = np.abs(coef[:, mixed]).min(0) / coef[:, mixed].sum(0)
    assert lighter.max() <= 0.2 + 1e-6
    assert ks_distance_to_uniform(lighter, 0.2) < 1.63 / math.sqrt(mixed.sum())
    h = synthesize_negatives(anchor, members, pool[:, :1], draws, "anchor_mix", gen, mix_max=0.1).numpy()[0]
    basis = np.stack([anchor[0].numpy(), members[0].numpy()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, h.T, rcond=None)
    assert ks_distance_to_uniform(coef[0] / coef.sum(0), 0.1) < 1.63 / math.sqrt(draws)


def test_mix_max_at_the_published_bound_is_the_published_law():
    anchors, candidates, pool = (
        unit(5, seed=1),
        unit(9, seed=2),
        torch.randint(0, 9, (5, 4), generator=torch.Generator().manual_seed(0)),
    )
    for mode, bound in (("anchor_mix", 0.5), ("duplicate", 0.3)):  # the same draws, the same points
        default = synthesize_negatives(anchors, candidates, pool, 6, mode, torch.Generator().manual_seed(3))
        capped = synthesize_negatives(anchors, candidates, pool, 6, mode, torch.Generator().manual_seed(3), bound)
        assert torch.equal(default, capped)
    for bad in (0.0, 0.51, -1.0):
        with pytest.raises(ValueError, match="mix_max"):
            synthesize_negatives(anchors, candidates, pool, 2, "pair_mix", mix_max=bad)


def test_seeded_generator_reproduces_the_draws():
    anchors, candidates, pool = _setup()
    draw = [
        synthesize_negatives(anchors, candidates, pool, 5, "pair_mix", torch.Generator().manual_seed(9))
        for _ in range(2)
    ]
    assert torch.equal(draw[0], draw[1])
    other = synthesize_negatives(anchors, candidates, pool, 5, "pair_mix", torch.Generator().manual_seed(10))
    assert not torch.equal(draw[0], other)


@pytest.mark.parametrize(
    "tau, tau_plus, beta", list(itertools.product((0.1, 0.5, 1.0), (0.0, 0.05, 0.1), (0.0, 0.5, 1.0, 2.0)))
)
def test_sscl_loss_matches_numpy(tau, tau_plus, beta):
    for b, k in ((2, 3), (4, 1), (7, 5)):
        z1, z2 = unit(b, seed=b), unit(b, seed=b + 20)
        pos, neg = positive_negative_similarities(z1, z2)
        synth = torch.rand(2 * b, k, generator=torch.Generator().manual_seed(b), dtype=torch.float64) * 2 - 1
        for count in ("all", "real_only"):
            loss, stats = sscl_loss(pos, neg, synth, tau, beta, tau_plus, count)
            expected = np_sscl(pos.numpy(), neg.numpy(), synth.numpy(), tau, beta, tau_plus, count)
            assert loss.item() == pytest.approx(expected, rel=1e-9)
        assert stats["synthetic_similarity"].item() == pytest.approx(synth.mean().item(), rel=1e-12)


@pytest.mark.parametrize("tau", (0.1, 0.5, 1.0))
@pytest.mark.parametrize("b", (2, 4, 7))
def test_sscl_without_synthetic_negatives_reduces_to_its_baselines(tau, b):
    z1, z2 = unit(b, seed=b), unit(b, seed=b + 1)
    pos, neg = positive_negative_similarities(z1, z2)
    empty = neg[:, :0]

    def loss(beta: float, tau_plus: float, count: str = "all") -> float:
        return sscl_loss(pos, neg, empty, tau, beta, tau_plus, count)[0].item()

    assert loss(0.0, 0.0) == pytest.approx(nt_xent(z1, z2, tau).item(), rel=1e-12)
    for beta in (0.5, 1.0, 2.0):
        # HCL weighting alone (no debiasing)
        hcl_only = np_sscl(pos.numpy(), neg.numpy(), np.zeros((2 * b, 0)), tau, beta, 0.0, "all")
        assert loss(beta, 0.0) == pytest.approx(hcl_only, rel=1e-10)
        assert loss(beta, 0.0) == pytest.approx(hcl_loss(z1, z2, tau, 0.0, beta).item(), rel=1e-12)
        assert loss(beta, 0.1) == pytest.approx(hcl_loss(z1, z2, tau, 0.1, beta).item(), rel=1e-12)
    for count in ("all", "real_only"):
        assert loss(0.0, 0.1, count) == pytest.approx(dcl_loss(z1, z2, tau, 0.1).item(), rel=1e-12)
    with pytest.raises(ValueError, match="debias_count"):
        sscl_loss(pos, neg, empty, tau, 1.0, 0.1, "synthetic")


def test_sscl_stats():
    z1, z2 = unit(4, seed=1), unit(4, seed=2)
    pos, neg = positive_negative_similarities(z1, z2)
    synth = torch.full((8, 2), 0.3, dtype=torch.float64)
    _, flat = sscl_loss(pos, neg, synth, 0.5, 0.0, 0.1)
    assert flat["mean_hardness_weight"].item() == 1.0 and flat["hardness_weight_max"].item() == 1.0
    _, peaked = sscl_loss(pos, neg, synth, 0.5, 2.0, 0.1)
    # weights over the extended set of each anchor average exactly 1
    assert peaked["hardness_weight_max"].item() > 1.0
    assert all(not v.requires_grad for v in peaked.values())
    _, empty = sscl_loss(pos, neg, neg[:, :0], 0.5, 1.0, 0.1)
    assert empty["mean_hardness_weight"].item() == 0.0 and empty["synthetic_similarity"].item() == 0.0


def test_gradient_reaches_anchors_and_real_negatives_never_the_pool_through_synthetics():
    b, B, offset = 3, 5, 1
    z1_all = unit(B, seed=3).requires_grad_(True)
    z2_all = unit(B, seed=4).requires_grad_(True)
    z1, z2 = z1_all[offset : offset + b], z2_all[offset : offset + b]
    # Synthetics are made from a separate leaf copy of the candidates: any gradient path
    # through them would show up as a gradient on that leaf.
    pool_source = torch.cat([z1_all, z2_all]).detach().clone().requires_grad_(True)
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    index = negative_candidate_index(b, B, offset, "cpu")
    pool = index.gather(1, hard_pool(neg, 4))
    anchors = torch.cat([z1, z2])
    synth = synthesize_negatives(anchors, pool_source, pool, 6, "pair_mix", torch.Generator().manual_seed(0))
    assert not synth.requires_grad and synth.grad_fn is None
    loss, _ = sscl_loss(pos, neg, synthetic_similarities(anchors, synth), 0.5, 1.0, 0.1)
    loss.backward()
    assert pool_source.grad is None
    # real negatives outside the local block (rows 0 and 4) are reached only as negatives
    assert z1_all.grad[0].abs().sum() > 0 and z2_all.grad[4].abs().sum() > 0
    assert z1_all.grad[offset : offset + b].abs().sum() > 0
    # The anchors' gradient equals the one with the synthetics as plain constants.
    grads = [z1_all.grad.clone(), z2_all.grad.clone()]
    z1_all.grad = z2_all.grad = None
    pos, neg = positive_negative_similarities(z1, z2, z1_all, z2_all, offset)
    constant = torch.einsum("nd,nkd->nk", torch.cat([z1, z2]), synth.clone())
    sscl_loss(pos, neg, constant, 0.5, 1.0, 0.1)[0].backward()
    torch.testing.assert_close(z1_all.grad, grads[0])
    torch.testing.assert_close(z2_all.grad, grads[1])


def test_mochi_negatives_mix_the_hardest_queue_entries():
    q, queue = unit(3, seed=5), unit(20, seed=6)
    h = mochi_negatives(q, queue, n_hard=4, s_type1=5, s_type2=3, generator=torch.Generator().manual_seed(0))
    assert h.shape == (3, 8, D) and not h.requires_grad
    torch.testing.assert_close(h.norm(dim=2), torch.ones(3, 8, dtype=h.dtype))
    hardest = (q @ queue.T).topk(4, dim=1).indices
    for i in range(3):
        members = queue[hardest[i]].numpy()
        for vec in h[i, :5].numpy():
            fits = [
                reconstruct_mix(vec, members[u], members[w])
                if u != w
                else (float(np.linalg.norm(members[u] - vec)), 1.0)
                for u, w in itertools.product(range(4), repeat=2)
            ]
            assert min(fits)[0] < 1e-9
        for vec in h[i, 5:].numpy():
            residual, beta = min(reconstruct_mix(vec, q[i].numpy(), member) for member in members)
            assert residual < 1e-9 and beta <= 0.5 + 1e-9


def test_bf16_autocast_keeps_synthetic_similarities_in_float32():
    anchors = unit(4, d=32, seed=7, dtype=torch.float32)
    synth = unit(4 * 3, d=32, seed=8, dtype=torch.float32).view(4, 3, 32)
    reference = synthetic_similarities(anchors, synth)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sims = synthetic_similarities(anchors, synth)
        pos, neg = positive_negative_similarities(anchors[:2], anchors[2:])
        loss, _ = sscl_loss(pos, neg, sims[:4], 0.2, 1.0, 0.1)
    assert sims.dtype == torch.float32
    torch.testing.assert_close(sims, reference, rtol=1e-6, atol=1e-7)
    assert loss.dtype == torch.float32
