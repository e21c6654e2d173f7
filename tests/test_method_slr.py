"""SLR + MM (SANE): the MoCo v2 identity, NumPy references, gradients, the queue and runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrastlab.config import load_config
from contrastlab.distributed import LocalDistributed
from contrastlab.methods import DataInfo, StepTools, TrainBatch, get_method_class
from contrastlab.methods import slr as slr_module
from tests.helpers import ROOT, learns_beyond_random_init, needs_fashion, one_epoch_run, recording, tiny_config
from tests.reference import mixed_input, moco_v2_mm_reference, refined_labels, soft_ce

INFO = DataInfo(channels=3, image_size=16, num_train=64)
ROWS, QUEUE = 8, 64


def build(method: dict, **sections):
    cfg = tiny_config({"queue_size": QUEUE, **method}, **sections)
    torch.manual_seed(0)
    return get_method_class(method["name"])(cfg, INFO, LocalDistributed("cpu"))


def views_batch(seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(ROWS, 3, 16, 16, generator=gen) for _ in range(2))
    return TrainBatch(views, torch.arange(ROWS), epoch=0, step=0, generator=torch.Generator().manual_seed(seed + 1))


def paired_losses(first: dict, second: dict) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = build(first), build(second)
    b.load_state_dict(a.state_dict())
    # A fresh batch each: the step generator also draws Shuffle-BN's permutation.
    return a(views_batch()).loss, b(views_batch()).loss


class Recorder:
    """Records the method's queries (inputs and outputs), keys and mixing draws."""

    def __init__(self, method, monkeypatch):
        self.query_inputs, self.queries, self.keys, self.mixing = [], [], [], []
        query, keys = method.query, method.keys

        def record_query(images):
            self.query_inputs.append(images)
            return recording(query, self.queries)(images)

        monkeypatch.setattr(method, "query", record_query)
        monkeypatch.setattr(method, "keys", recording(keys, self.keys))
        monkeypatch.setattr(slr_module, "draw_mixing", recording(slr_module.draw_mixing, self.mixing))


# -- identity with MoCo v2 ---------------------------------------------------------------------
@pytest.mark.parametrize("switches", [{"slr": False, "mm": False}, {"alpha": 0.0, "mm": False}])
def test_slr_and_mm_off_is_moco_v2(switches):
    ours, baseline = paired_losses({"name": "slr", **switches}, {"name": "moco"})
    torch.testing.assert_close(ours, baseline, rtol=1e-5, atol=1e-6)


def test_declared_off_values_give_moco_v2():
    config_class = get_method_class("slr").config_class
    assert [c.name for c in config_class.components] == ["slr", "mm", "mm_partner", "mm_theta", "shuffle_bn"]
    off = {c.field: c.off for c in config_class.components if c.off is not None}
    ours, baseline = paired_losses({"name": "slr", **off}, {"name": "moco", "shuffle_bn": False})
    torch.testing.assert_close(ours, baseline, rtol=1e-5, atol=1e-6)


def test_mm_weight_zero_is_mm_off():
    ours, baseline = paired_losses({"name": "slr", "mm_weight": 0.0}, {"name": "slr", "mm": False})
    torch.testing.assert_close(ours, baseline, rtol=1e-6, atol=1e-7)


# -- against the NumPy references ----------------------------------------------------------------


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


@pytest.mark.parametrize("top_k", [None, 5])
def test_slr_loss_matches_numpy(monkeypatch, top_k):
    method = build({"name": "slr", "mm": False, "alpha": 0.3, "temperature_prime": 0.05, "top_k": top_k})
    rec = Recorder(method, monkeypatch)
    queue = as_np(method.queue)
    out = method(views_batch())
    q, k = as_np(rec.queries[0]), as_np(rec.keys[0])
    candidates = np.concatenate([k, queue])
    labels = refined_labels(k, candidates, 0.3, 0.05, top_k)
    assert out.loss.item() == pytest.approx(soft_ce(q @ candidates.T / 0.2, labels), rel=1e-5)
    entropy = -(labels * np.log(np.clip(labels, 1e-12, None))).sum(axis=1).mean()
    assert out.scalars["mean_label_entropy"].item() == pytest.approx(entropy, rel=1e-4)


@pytest.mark.parametrize(("partner", "theta_mode"), [("key_crop", "per_sample"), ("query_crop", "per_batch")])
def test_momentum_mixup_matches_numpy(monkeypatch, partner, theta_mode):
    cfg = {
        "name": "slr",
        "alpha": 0.4,
        "mm_kappa": 0.7,
        "mm_weight": 1.5,
        "mm_partner": partner,
        "mm_theta": theta_mode,
    }
    method = build(cfg)
    rec = Recorder(method, monkeypatch)
    queue = as_np(method.queue)
    batch = views_batch()
    out = method(batch)
    ((theta, perm),) = rec.mixing
    theta = theta.double().numpy() if isinstance(theta, torch.Tensor) else theta
    assert np.shape(theta) == ((ROWS,) if theta_mode == "per_sample" else ())
    assert np.all((0 < np.asarray(theta)) & (np.asarray(theta) < 1)) and sorted(perm.tolist()) == list(range(ROWS))
    x1, x2 = (v.numpy() for v in batch.views)
    mixed_partner = (x2 if partner == "key_crop" else x1)[perm.numpy()]
    np.testing.assert_allclose(rec.query_inputs[1].numpy(), mixed_input(theta, x1, mixed_partner), rtol=1e-5, atol=1e-6)
    q, q_mix, k = as_np(rec.queries[0]), as_np(rec.queries[1]), as_np(rec.keys[0])
    candidates = np.concatenate([k, queue])
    labels = refined_labels(k, candidates, 0.4, 0.1, None)
    column = np.reshape(theta, (-1, 1)) if np.ndim(theta) else theta
    mixed_labels = column * labels + (1 - column) * labels[perm.numpy()]
    expected = soft_ce(q @ candidates.T / 0.2, labels) + 1.5 * soft_ce(q_mix @ candidates.T / 0.2, mixed_labels)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.scalars["loss_mm"].item() == pytest.approx(soft_ce(q_mix @ candidates.T / 0.2, mixed_labels), rel=1e-5)


@pytest.mark.parametrize("theta_mode", ["per_sample", "per_batch"])
def test_slr_off_with_mm_is_moco_v2_plus_momentum_mixup(monkeypatch, theta_mode):
    method = build({"name": "slr", "slr": False, "mm_weight": 0.7, "mm_theta": theta_mode})
    rec = Recorder(method, monkeypatch)
    queue = as_np(method.queue)
    out = method(views_batch())
    ((theta, perm),) = rec.mixing
    theta = theta.double().numpy() if isinstance(theta, torch.Tensor) else theta
    perm = perm.numpy().copy()
    q, q_mix, k = as_np(rec.queries[0]), as_np(rec.queries[1]), as_np(rec.keys[0])
    moco, mm = moco_v2_mm_reference(q, q_mix, k, queue, perm, theta, 0.2)
    assert out.loss.item() == pytest.approx(moco + 0.7 * mm, rel=1e-5)


def test_mixup_without_batch_keys_counts_a_fixed_point_once():
    gen = torch.Generator().manual_seed(5)
    q_mix, keys, queue = (
        torch.nn.functional.normalize(torch.randn(n, 16, generator=gen, dtype=torch.float64), dim=1) for n in (4, 4, 12)
    )
    perm = torch.tensor([0, 2, 1, 3])  # rows 0 and 3 are fixed points
    theta = torch.tensor([0.3, 0.6, 0.2, 0.9], dtype=torch.float64)
    mixed = slr_module.MixedQueries(q_mix, perm, theta)
    got = slr_module.mixup_loss_without_batch_keys(mixed, keys, queue, 0.2)
    assert got.dtype == torch.float64
    expected = moco_v2_mm_reference(
        as_np(q_mix), as_np(q_mix), as_np(keys), as_np(queue), perm.numpy(), theta.numpy(), 0.2
    )[1]
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_draws_come_from_the_batch_generator():
    method = build({"name": "slr"})
    first, again = (method(views_batch(seed=1)).loss for _ in range(2))
    torch.testing.assert_close(first, again)
    batch = views_batch(seed=1)
    batch.generator = torch.Generator().manual_seed(99)
    assert not torch.allclose(method(batch).loss, first)


# -- gradients -------------------------------------------------------------------------------------
def test_no_gradient_into_keys_queue_or_labels():
    gen = torch.Generator().manual_seed(3)
    q, q_mix, keys, queue = (
        torch.nn.functional.normalize(torch.randn(rows, 16, generator=gen), dim=1).requires_grad_()
        for rows in (ROWS, ROWS, ROWS, QUEUE)
    )
    mcfg = tiny_config({"name": "slr", "queue_size": QUEUE}).method
    mixed = slr_module.MixedQueries(q_mix, torch.randperm(ROWS, generator=gen), 0.3)
    loss = slr_module.slr_objective(q, keys, keys, queue, 0, mcfg, mixed).loss
    g_q, g_mix, g_keys, g_queue = torch.autograd.grad(loss, [q, q_mix, keys, queue], allow_unused=True)
    assert g_q.abs().sum() > 0 and g_mix.abs().sum() > 0
    # Keys, queue and the soft labels built from them are constants of the loss.
    assert g_keys is None and g_queue is None


def test_method_gradient_reaches_the_query_encoder_only(monkeypatch):
    method = build({"name": "slr"})
    labels: list[torch.Tensor] = []
    monkeypatch.setattr(slr_module, "slr_soft_labels", recording(slr_module.slr_soft_labels, labels))
    method(views_batch()).loss.backward()
    assert labels and not labels[0].requires_grad and labels[0].grad_fn is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.projector.parameters())
    assert all(p.grad is None for p in [*method.key_encoder.parameters(), *method.key_projector.parameters()])


def test_step_moves_key_encoder_by_ema_and_enqueues_keys(monkeypatch):
    method = build({"name": "slr", "momentum": 0.9})
    rec = Recorder(method, monkeypatch)
    key_before = [p.detach().clone() for p in method.key_encoder.parameters()]
    tools = StepTools([torch.optim.SGD(g, lr=0.1) for g in method.optimizer_groups()])
    method.train_step(method, views_batch(), tools)
    for old_key, key, online in zip(key_before, method.key_encoder.parameters(), method.encoder.parameters()):
        torch.testing.assert_close(key, 0.9 * old_key + 0.1 * online)
    assert int(method.queue_ptr) == ROWS
    torch.testing.assert_close(method.queue[:ROWS], rec.keys[0])


@pytest.mark.parametrize("name", ["slr"])
def test_example_config_loads(name):
    cfg = load_config(ROOT / "configs" / f"{name}_fashion_mnist.yaml")
    assert cfg.method.name == name and cfg.method.temperature_prime == 0.1


# -- runs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "scalars"),
    [
        ({"name": "slr"}, {"mean_label_entropy", "loss_slr", "loss_mm"}),
        ({"name": "slr", "top_k": 5, "mm_partner": "query_crop"}, {"mean_label_entropy", "loss_mm"}),
        ({"name": "slr", "slr": False, "mm": False}, set()),
    ],
    ids=["slr-mm", "topk-query-crop", "moco"],
)
def test_two_step_smoke_and_tensorboard(tmp_path, method, scalars):
    cfg = tiny_config(
        {"queue_size": QUEUE, **method}, optim={"epochs": 1}, data={"trifeature_train": 64}, eval={"probe_epochs": 2}
    )
    metrics, tags = one_epoch_run(cfg, tmp_path)
    assert math.isfinite(metrics["loss"]) and metrics["epoch"] == 1
    assert scalars <= set(metrics) and {f"train/{s}" for s in scalars} | {"train/loss", "val/knn_top1"} <= tags


@pytest.mark.slow
@needs_fashion
def test_learns_beyond_random_init(tmp_path):
    # A short run needs a key encoder that follows faster than the config's 0.99.
    before, after = learns_beyond_random_init(
        "slr", tmp_path, **{"method.momentum": 0.9, "method.queue_size": 1024, "optim.batch_size": 128}
    )
    assert after > before + 0.02, (before, after)
