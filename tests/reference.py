"""Reference implementations ("oracles") that the tests compare the library against.

Each one is written from its paper's equation with NumPy or plain Python loops, independent of
contrastlab's torch code. Two exceptions, both noted where they stand: the SSCL loop and the
hard-pool search are torch loops, because a test differentiates through the reference; the
colour-jitter reference uses torchvision's per-image ops and the library's draw layout.

The docstring of every oracle names the equation it computes. Notation: s_ij are cosine
similarities of unit vectors, τ a temperature, i an anchor, j⁺ its positive.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

# -- two-view rows: positives and negatives per anchor ------------------------------------------------------


def np_two_view(
    z1_all: np.ndarray, z2_all: np.ndarray, offset: int = 0, b: int | None = None
) -> list[tuple[float, np.ndarray]]:
    """(s_ij⁺, [s_ij for j ∉ {i, j⁺}] in candidate order) for each of the 2b local anchors.

    Candidates are [z1_all; z2_all] (2B rows); the local anchors are rows offset … offset + b − 1
    of each view, view 1's first. `b` defaults to B (a single-process batch).
    """
    B = z1_all.shape[0]
    b = B if b is None else b
    candidates = np.concatenate([z1_all, z2_all])
    rows = []
    for view in range(2):
        for i in range(b):
            own = offset + i + view * B
            partner = offset + i + (1 - view) * B
            anchor = candidates[own]
            negatives = [float(anchor @ candidates[j]) for j in range(2 * B) if j not in (own, partner)]
            rows.append((float(anchor @ candidates[partner]), np.array(negatives)))
    return rows


# -- InfoNCE / NT-Xent, DCL, HCL, SSCL --------------------------------------------------------------------


def np_nt_xent(rows: list[tuple[float, np.ndarray]], tau: float, keep: np.ndarray | None = None) -> float:
    """NT-Xent (SimCLR): mean_i −log(e^{s_ij⁺/τ} / (e^{s_ij⁺/τ} + Σ_j e^{s_ij/τ})) over the rows.

    `keep[i]` (boolean) selects which of row i's negatives enter the sum.
    """
    losses = []
    for r, (pos, negs) in enumerate(rows):
        if keep is not None:
            negs = negs[keep[r]]
        losses.append(-math.log(math.exp(pos / tau) / (math.exp(pos / tau) + np.exp(negs / tau).sum())))
    return float(np.mean(losses))


def np_ng(pos_s: float, neg_s: np.ndarray, tau: float, tau_plus: float, beta: float) -> float:
    """HCL's negative term (Robinson et al. 2021, eq. 5, with DCL's clamp):

    Ng = max((N·Σ_j w_j e^{s_j/τ} / Σ_j w_j − τ⁺·N·e^{s⁺/τ}) / (1 − τ⁺), N·e^{−1/τ}),
    w_j = e^{β s_j/τ}; written out as in the paper's code, with exponentials.
    """
    pos, neg = math.exp(pos_s / tau), np.exp(neg_s / tau)
    n = len(neg_s)
    importance = np.exp(beta * neg_s / tau)
    reweighted = (importance * neg).sum() / importance.mean()
    return max((reweighted - tau_plus * n * pos) / (1 - tau_plus), n * math.exp(-1 / tau))


def np_debiased(rows: list[tuple[float, np.ndarray]], tau: float, tau_plus: float, beta: float) -> float:
    """HCL (β > 0) and DCL (β = 0, Chuang et al. 2020, eq. 6): mean_i −log(e^{s⁺/τ} / (e^{s⁺/τ} + Ng))."""
    losses = []
    for pos_s, neg_s in rows:
        pos = math.exp(pos_s / tau)
        losses.append(-math.log(pos / (pos + np_ng(pos_s, neg_s, tau, tau_plus, beta))))
    return float(np.mean(losses))


def np_sscl(pos, real, synth, tau, beta, tau_plus, debias_count) -> float:
    """SSCL's loss from similarities: HCL's Ng over the real and synthetic negatives together.

    Per anchor, s = [real; synthetic] similarities, w = e^{βs/τ},
    Ng = max((Σ w e^{s/τ} / mean w − τ⁺·n·e^{s⁺/τ}) / (1 − τ⁺), |s|·e^{−1/τ}),
    with n = |s| (`debias_count="all"`) or the number of real negatives ("real_only").
    """
    losses = []
    for p_s, r_s, s_s in zip(pos, real, synth):
        s = np.concatenate([r_s, s_s])
        p = math.exp(p_s / tau)
        importance = np.exp(beta * s / tau)
        reweighted = (importance * np.exp(s / tau)).sum() / importance.mean()
        n = len(s) if debias_count == "all" else len(r_s)
        ng = max((reweighted - tau_plus * n * p) / (1 - tau_plus), len(s) * math.exp(-1 / tau))
        losses.append(-math.log(p / (p + ng)))
    return float(np.mean(losses))


def sscl_torch_reference(z1, z2, synth, tau, beta, tau_plus, count, z1_all=None, z2_all=None, offset=0):
    """SSCL's loss from embeddings, as a differentiable torch loop over anchors (float64).

    The same equation as `np_sscl` (HCL weights e^{βs/τ} = (e^{s/τ})^β over real + synthetic
    negatives, DCL debiasing, clamp at |s|·e^{−1/τ}), but it starts from the projections and the
    gathered batch (`z1_all`, `z2_all`, this worker's rows at `offset`), and autograd runs through
    it, so a test can compare gradients. The synthetic negatives enter as given.
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    anchors = torch.cat([z1, z2]).double()
    candidates = torch.cat([z1_all, z2_all]).double()
    b, B = z1.shape[0], z1_all.shape[0]
    losses = []
    for a in range(2 * b):
        own = offset + a % b + (0 if a < b else B)
        partner = offset + a % b + (B if a < b else 0)
        pos = torch.exp(anchors[a] @ candidates[partner] / tau)
        real = [torch.exp(anchors[a] @ candidates[j] / tau) for j in range(2 * B) if j not in (own, partner)]
        fake = [torch.exp(anchors[a] @ synth[a, t].double() / tau) for t in range(synth.shape[1])]
        neg = torch.stack(real + fake)
        importance = neg**beta
        weighted = (importance * neg).sum() / importance.mean()
        n = len(neg) if count == "all" else len(real)
        ng = torch.clamp((weighted - tau_plus * n * pos) / (1 - tau_plus), min=len(neg) * math.exp(-1 / tau))
        losses.append(-torch.log(pos / (pos + ng)))
    return torch.stack(losses).mean()


def hard_pool_reference(z1: torch.Tensor, z2: torch.Tensor, size: int) -> list[torch.Tensor]:
    """SSCL's hard pool: each anchor's `size` most similar other views, argmax_j s_ij over
    j ∉ {i, j⁺}, found by sorting one row at a time (torch, on the test's tensors)."""
    z = torch.cat([z1, z2])
    b = z1.shape[0]
    pools = []
    for a in range(2 * b):
        sims = z @ z[a]
        sims[[a, (a + b) % (2 * b)]] = -math.inf
        pools.append(z[sims.topk(size).indices])
    return pools


def hand_mask(labels_all: list[int], offset: int, b: int) -> torch.Tensor:
    """MCL's same-cluster mask: entry (i, j) is true when negative j of anchor i (candidate
    order, j ∉ {i, j⁺}) carries the anchor's cluster label, by a loop over the two views."""
    B = len(labels_all)
    rows = []
    for view in range(2):
        for i in range(b):
            own = offset + i + view * B
            positive = offset + i + (1 - view) * B
            anchor = labels_all[offset + i]
            rows.append([labels_all[c % B] == anchor for c in range(2 * B) if c not in (own, positive)])
    return torch.tensor(rows)


# -- MoCo v2, MoCHi, SLR and momentum mixup -----------------------------------------------------------------


def np_softmax(x: np.ndarray) -> np.ndarray:
    """softmax(x)_c = e^{x_c − max x} / Σ_c' e^{x_c' − max x}, along the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mochi_reference(q: np.ndarray, k: np.ndarray, queue: np.ndarray, synthetic: np.ndarray, tau: float) -> float:
    """MoCHi's loss (Kalantidis et al. 2020): MoCo v2's InfoNCE with each query's synthetic
    negatives added to the queue, mean_i −log(e^{q·k/τ} / Σ_{n ∈ {k} ∪ queue ∪ synth_i} e^{q·n/τ}).
    With no synthetic negatives it is MoCo v2's loss."""
    losses = []
    for i in range(q.shape[0]):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i], synthetic[i] @ q[i]]) / tau
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
    return float(np.mean(losses))


def refined_labels(k: np.ndarray, candidates: np.ndarray, alpha: float, tau_prime: float, top_k) -> np.ndarray:
    """SLR's soft labels: y = (1 − α)·onehot + α·softmax(k·Cᵀ/τ'), the softmax optionally
    truncated to its `top_k` largest entries and renormalised; row i's positive is candidate i."""
    p = np_softmax(k @ candidates.T / tau_prime)
    if top_k is not None:
        for row in p:
            row[np.argsort(row)[:-top_k]] = 0.0
        p = p / p.sum(axis=1, keepdims=True)
    onehot = np.eye(candidates.shape[0])[: k.shape[0]]
    return (1 - alpha) * onehot + alpha * p


def soft_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    """Soft cross-entropy: mean_i −Σ_c y_ic · log softmax(logits_i)_c."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-(labels * log_probs).sum(axis=1).mean())


def mixed_input(theta, x1: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Momentum mixup's input: θ·x₁ + (1 − θ)·partner, θ a scalar or one value per sample."""
    weight = np.asarray(theta, dtype=np.float64).reshape(-1, *[1] * (x1.ndim - 1)) if np.ndim(theta) else theta
    return weight * x1 + (1 - weight) * partner


def moco_v2_mm_reference(
    q: np.ndarray, q_mix: np.ndarray, k: np.ndarray, queue: np.ndarray, perm: np.ndarray, theta, tau: float
) -> tuple[float, float]:
    """MoCo v2's InfoNCE and the momentum-mixup loss over [own key, partner key, queue], per query:

    L_mm,i = log Σ_n e^{q̃_i·n/τ} − θ_i·q̃_i·k_i/τ − (1 − θ_i)·q̃_i·k_perm(i)/τ, with the key counted
    once when perm(i) = i.
    """
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), (q.shape[0],))
    moco, mm = [], []
    for i in range(q.shape[0]):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / tau
        moco.append(np.log(np.exp(logits).sum()) - logits[0])
        own, other = q_mix[i] @ k[i] / tau, q_mix[i] @ k[perm[i]] / tau
        rest = queue @ q_mix[i] / tau
        if perm[i] == i:
            mm.append(np.log(np.exp(np.concatenate([[own], rest])).sum()) - own)
        else:
            log_norm = np.log(np.exp(np.concatenate([[own, other], rest])).sum())
            mm.append(log_norm - theta[i] * own - (1 - theta[i]) * other)
    return float(np.mean(moco)), float(np.mean(mm))


# -- MetAug: OUCL and the margin-injected loss ---------------------------------------------------------------


def score_rows(a: np.ndarray, b: np.ndarray, rows: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rescaled scores (s + 1)/2 per OUCL row: one row per view of each sample (`rows="view"`:
    its positive and 2B − 2 negatives) or per sample (`"sample"`: both views' rows joined)."""
    n = a.shape[0]
    z = np.concatenate([a, b])
    s = (z @ z.T + 1) / 2
    pos, neg = [], []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        pos.append(np.array([s[i, partner]]))
        neg.append(np.array([s[i, j] for j in range(2 * n) if j not in (i, partner)]))
    if rows == "sample":
        pos = [np.concatenate([pos[i], pos[i + n]]) for i in range(n)]
        neg = [np.concatenate([neg[i], neg[i + n]]) for i in range(n)]
    return pos, neg


def np_oucl(
    pos,
    neg,
    gamma: float,
    pos_keep=None,
    neg_keep=None,
    *,
    circle: str = "off",
    margin: float = 0.25,
    scaled: bool = False,
) -> float:
    """OUCL (MetAug, Li et al. 2022): mean_i log(1 + Σ_p Σ_n e^{E(p, n)}) over rows of positive
    scores `pos[i]` and negative scores `neg[i]` (matrices or lists of rows), summing only the
    pairs whose `pos_keep` and `neg_keep` entries are true.

    E = γ(n − p) (`circle="off"`); Circle-loss weights and margins (`"full"`, m = `margin`):
    E = γ(α_n(n − m) − α_p(p − (1 − m))), α_p = [1 + m − p]₊, α_n = [n + m]₊; the released form
    (`"delta_only"`): E = γ((n − m) − (p − (1 − m))). `scaled` multiplies by 16/γ.
    """
    terms = []
    for i in range(len(pos)):
        total = 0.0
        for a, p in enumerate(pos[i]):
            for c, n in enumerate(neg[i]):
                if (pos_keep is not None and not pos_keep[i, a]) or (neg_keep is not None and not neg_keep[i, c]):
                    continue
                if circle == "off":
                    exponent = gamma * (n - p)
                elif circle == "full":
                    alpha_p, alpha_n = max(0.0, 1 + margin - p), max(0.0, n + margin)
                    exponent = gamma * (alpha_n * (n - margin) - alpha_p * (p - (1 - margin)))
                elif circle == "delta_only":
                    exponent = gamma * ((n - margin) - (p - (1 - margin)))
                else:
                    raise ValueError(f"unknown circle form {circle!r}")
                total += math.exp(exponent)
        terms.append(math.log1p(total))
    return (16.0 / gamma if scaled else 1.0) * float(np.mean(terms))


def oucl_reference(a: np.ndarray, b: np.ndarray, gamma: float, rows: str = "sample", circle: float | None = None):
    """The method's OUCL from two views' embeddings: (16/γ)·mean log(1 + Σ_p Σ_n e^{γ(n − p)})
    over `score_rows`; with `circle` = m, Circle-loss weights and margins (`np_oucl`, "full")."""
    form = "off" if circle is None else "full"
    return np_oucl(*score_rows(a, b, rows), gamma, circle=form, margin=circle or 0.0, scaled=True)


def delta_only_reference(a: np.ndarray, b: np.ndarray, gamma: float, margin: float) -> float:
    """The released circle switch from embeddings: α = 1, margins Δ_p = 1 − m, Δ_n = m, per-sample rows, scaled."""
    return np_oucl(*score_rows(a, b, "sample"), gamma, circle="delta_only", margin=margin, scaled=True)


def margin_reference(orig, aug_a, aug_b, margin_type: str, c: float) -> float:
    """MetAug's margin-injected loss: c·mean[p̃ − m⁺]₊ + mean[m⁻ − ñ]₊, the margins m⁺, m⁻ taken
    from each row's original scores (min positive, max negative; "large", "small" or their mean)."""
    (pos, neg), (pa, na), (pb, nb) = orig, aug_a, aug_b
    pos_hinge, neg_hinge = [], []
    for r in range(len(pos)):
        p_min, n_max = pos[r].min(), neg[r].max()
        low, high = min(p_min, n_max), max(p_min, n_max)
        m_pos, m_neg = {"large": (low, high), "small": (high, low)}.get(margin_type, ((low + high) / 2,) * 2)
        pos_hinge.append(np.maximum(np.concatenate([pa[r], pb[r]]) - m_pos, 0))
        neg_hinge.append(np.maximum(m_neg - np.concatenate([na[r], nb[r]]), 0))
    return c * float(np.mean(pos_hinge)) + float(np.mean(neg_hinge))


# -- images ----------------------------------------------------------------------------------------------


def lab_of_pixel(r: float, g: float, b: float) -> tuple[float, float, float]:
    """sRGB (D65) → CIE L*a*b* for one pixel, from the definitions: inverse sRGB gamma, the
    sRGB→XYZ matrix, then L* = 116 f(Y) − 16, a* = 500(f(X) − f(Y)), b* = 200(f(Y) − f(Z))."""

    def linear(c: float) -> float:
        return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92

    rl, gl, bl = linear(r), linear(g), linear(b)
    x = (0.412453 * rl + 0.357580 * gl + 0.180423 * bl) / 0.950456
    y = 0.212671 * rl + 0.715160 * gl + 0.072169 * bl
    z = (0.019334 * rl + 0.119193 * gl + 0.950227 * bl) / 1.088754

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    lightness = 116 * y ** (1 / 3) - 16 if y > 0.008856 else 903.3 * y
    return lightness, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def reference_jitter(batch: torch.Tensor, u: torch.Tensor, cfg) -> torch.Tensor:
    """Colour jitter one image at a time with torchvision's functional ops: with probability
    `jitter_prob`, brightness, contrast and saturation factors U(max(0, 1 − s), 1 + s) applied in
    the drawn order. The uniform draws `u` follow contrastlab.augment's column layout."""
    import torchvision.transforms.v2.functional as TF

    from contrastlab.data import augment as aug_module

    ops = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    columns = {
        "brightness": aug_module._BRIGHTNESS,
        "contrast": aug_module._CONTRAST,
        "saturation": aug_module._SATURATION,
    }
    names = list(ops)
    out = []
    for image, draws in zip(batch.float() / 255, u):
        if draws[aug_module._JITTER] < cfg.jitter_prob:
            keys = torch.stack([draws[aug_module._ORDER.start + aug_module.JITTER_OPS.index(n)] for n in names])
            order = keys.argsort()
            for index in order.tolist():
                name = names[index]
                strength = getattr(cfg, name)
                low, high = max(0.0, 1 - strength), 1 + strength
                image = ops[name](image, low + (high - low) * draws[columns[name]].item())
        out.append(image)
    return torch.stack(out)


# -- ablation statistics -----------------------------------------------------------------------------------


def enumerated_p(diffs: list[float]) -> float:
    """Two-sided sign-flip p: the share of the 2ⁿ sign patterns ε with |Σ ε_i d_i| ≥ |Σ d_i|,
    listed with itertools."""
    observed = abs(sum(diffs))
    patterns = list(itertools.product((1, -1), repeat=len(diffs)))
    hits = sum(abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - 1e-12 for signs in patterns)
    return hits / len(patterns)


def holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: p̃_(r) = max_{r' ≤ r} min(1, (m − r' + 1)·p_(r')), in sorted order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
