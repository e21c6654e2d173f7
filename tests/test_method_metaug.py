"""MetAug: baseline identities, NumPy references, the meta-gradient, and short runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from contrastlab.config import load_config
from contrastlab.distributed import LocalDistributed
from contrastlab.engine import Trainer, train
from contrastlab.methods import DataInfo, StepTools, TrainBatch, get_method_class
from tests.helpers import ROOT, colour_knn, tiny_config
from tests.reference import delta_only_reference, margin_reference, oucl_reference, score_rows

INFO = DataInfo(channels=3, image_size=16, num_train=64)


def build(method: dict | None = None, dist=None, **sections):
    cfg = tiny_config({"name": "metaug", "generator_hidden": 16, **(method or {})}, **sections)
    torch.manual_seed(0)
    return get_method_class("metaug")(cfg, INFO, dist or LocalDistributed("cpu"))


def views_batch(rows: int = 8, shape=(3, 16, 16), dtype=torch.float32, seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(rows, *shape, generator=gen).to(dtype) for _ in range(2))
    return TrainBatch(views, torch.arange(rows), epoch=0, step=0, generator=gen)


def sgd_tools(method, lr: float = 0.1) -> StepTools:
    return StepTools([torch.optim.SGD(group, lr=lr) for group in method.optimizer_groups()])


def state_of(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


# -- identities with the baselines ---------------------------------------------------------
def test_generator_off_infonce_is_simclr_exactly():
    cfg = tiny_config({"name": "simclr", "temperature": 0.3})
    torch.manual_seed(0)
    simclr = get_method_class("simclr")(cfg, INFO, LocalDistributed("cpu"))
    metaug = build({"generator": False, "margin_type": "off", "loss": "infonce", "temperature": 0.3})
    metaug.load_state_dict(simclr.state_dict())
    batch = views_batch()
    assert torch.equal(metaug(batch).loss, simclr(batch).loss)
    simclr.train_step(simclr, batch, sgd_tools(simclr))
    metaug.train_step(metaug, batch, sgd_tools(metaug))
    for (name, a), b in zip(simclr.state_dict().items(), metaug.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "gamma, rows, circle", [(16.0, "sample", None), (8.0, "sample", None), (4.0, "view", None), (16.0, "sample", 0.3)]
)
def test_oucl_matches_numpy(gamma, rows, circle):
    switches = {"circle": circle is not None, "circle_margin": circle or 0.25}
    method = build({"generator": False, "gamma": gamma, "oucl_rows": rows, **switches})
    batch = views_batch()
    loss = method(batch).loss
    with torch.no_grad():
        z1, z2 = method.project(batch.views)
    expected = oucl_reference(z1.double().numpy(), z2.double().numpy(), gamma, rows, circle)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_margin_grad_keep_changes_the_meta_gradient_and_detach_does_not_touch_the_loss():
    """The margins' own gradient is part of the released meta-gradient: keep and detach give
    the same loss value but different generator gradients."""
    batch = views_batch(rows=6, shape=(3, 2, 2), dtype=torch.float64)
    keep, detach = (tiny_float64_method("second_order", "large", grad) for grad in ("keep", "detach"))
    assert keep(batch).loss.item() == pytest.approx(detach(batch).loss.item(), rel=1e-12)
    g_keep, g_detach = (
        torch.cat([g.reshape(-1) for g in m.generator_meta_gradients(batch.views)]) for m in (keep, detach)
    )
    assert not torch.allclose(g_keep, g_detach, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("margin", [0.25, 0.4])
def test_circle_delta_only_matches_the_released_form(margin):
    method = build({"generator": False, "gamma": 8.0, "circle": "delta_only", "circle_margin": margin})
    batch = views_batch()
    loss = method(batch).loss
    with torch.no_grad():
        z1, z2 = method.project(batch.views)
    assert loss.item() == pytest.approx(
        delta_only_reference(z1.double().numpy(), z2.double().numpy(), 8.0, margin), rel=1e-5
    )
    full = build({"generator": False, "gamma": 8.0, "circle": "full", "circle_margin": margin})(batch).loss
    assert not torch.allclose(full, loss)


def test_circle_accepts_the_old_booleans():
    assert build({"circle": True}).mcfg.circle == "full" and build({"circle": False}).mcfg.circle == "off"


@pytest.mark.parametrize("margin_type", ["large", "small", "mean"])
def test_full_objective_matches_numpy(margin_type):
    weights = {"aug_weight": 0.3, "margin_weight": 0.7, "margin_positive_weight": 0.5, "gamma": 8.0}
    method = build({**weights, "margin_type": margin_type})
    batch = views_batch()
    out = method(batch)
    with torch.no_grad():
        z1, z2 = method.project(batch.views)
        g1, g2 = method.generators[0](z1), method.generators[1](z2)
    a, b, ga, gb = (t.double().numpy() for t in (z1, z2, g1, g2))
    augmented = sum(oucl_reference(x, y, 8.0) for x, y in ((ga, b), (a, gb), (ga, gb)))
    margin = margin_reference(
        score_rows(a, b, "sample"), score_rows(ga, b, "sample"), score_rows(a, gb, "sample"), margin_type, 0.5
    )
    expected = oucl_reference(a, b, 8.0) + 0.3 * augmented + 0.7 * margin
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.scalars["margin_loss"].item() == pytest.approx(margin, rel=1e-5, abs=1e-7)
    cosines = 0.5 * ((a * ga).sum(1).mean() + (b * gb).sum(1).mean())
    assert out.scalars["generator_similarity"].item() == pytest.approx(cosines, rel=1e-5)


def test_margin_off_equals_zero_margin_weight_and_generator_off_is_oucl():
    batch = views_batch()
    off = build({"margin_type": "off", "aug_weight": 0.2})(batch)
    zero = build({"margin_weight": 0.0, "aug_weight": 0.2})(batch)
    assert torch.equal(off.loss, zero.loss) and "margin_loss" not in off.scalars
    baseline = build({"generator": False})
    no_aug = build({"aug_weight": 0.0, "margin_type": "off"})
    assert torch.equal(baseline(batch).loss, no_aug(batch).loss)
    assert baseline.generators is None and no_aug.generators is not None


# -- the meta step -------------------------------------------------------------------------
def tiny_float64_method(meta_update: str, margin_type: str = "off", margin_grad: str = "keep"):
    """A 12→5 MLP encoder, a 5→6→4 head and 4→8→8→4 generators, in float64.

    Tanh replaces ReLU: with a large inner step the unrolled loss of a ReLU net has kinks
    close to any point, and finite differences need a smooth function.
    """
    method = build(
        {
            "generator_hidden": 8,
            "meta_update": meta_update,
            "aug_weight": 1.0,
            "margin_type": margin_type,
            "margin_weight": 1.0,
            "margin_positive_weight": 1.0,
            "inner_lr": 0.05,
            "gamma": 4.0,
            "margin_grad": margin_grad,
        },
        model={"projector_hidden": 6, "projector_out": 4},
    )
    torch.manual_seed(3)
    method.encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5), nn.Tanh())
    method.projector = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4))
    for generator in method.generators:
        layers = generator.net
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.ReLU):
                layers[index] = nn.Tanh()
    return method.double().train()


def unrolled_loss(method, batch: TrainBatch, inner_grads=None) -> float:
    """L(θ − α∇θL(θ, φ), φ), editing the encoder's weights in place (no functional_call).

    With `inner_grads` the inner gradient is that constant instead (the first-order path).
    """
    theta = method.encoder_parameters()
    grads = inner_grads or torch.autograd.grad(method(batch).loss, theta)
    saved = [p.detach().clone() for p in theta]
    with torch.no_grad():
        for p, g in zip(theta, grads):
            p.sub_(method.mcfg.inner_lr * g)
        value = method(batch).loss.item()
        for p, s in zip(theta, saved):
            p.copy_(s)
    return value


def directional_derivative(fn, params, direction, step: float) -> float:
    """Five-point central difference of fn along `direction` (error O(step⁴))."""
    values = {}
    for k in (-2, -1, 1, 2):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(k * step * d)
        values[k] = fn()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(k * step * d)
    return (-values[2] + 8 * values[1] - 8 * values[-1] + values[-2]) / (12 * step)


# With detached margins the meta-gradient leaves out the margins' own path, so it is not
# the derivative of the unrolled loss (about 0.4% off here); keep, the released form, is.
@pytest.mark.parametrize(("margin_type", "margin_grad"), [("off", "keep"), ("large", "keep")])
def test_meta_gradients_match_finite_differences(margin_type, margin_grad):
    method = tiny_float64_method("second_order", margin_type, margin_grad)
    batch = views_batch(rows=6, shape=(3, 2, 2), dtype=torch.float64)
    phi = list(method.generators.parameters())
    direction = [
        torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i, p in enumerate(phi)
    ]
    second = method.generator_meta_gradients(batch.views)
    method.mcfg.meta_update = "first_order"
    first = method.generator_meta_gradients(batch.views)
    along = [sum((g * d).sum().item() for g, d in zip(grads, direction)) for grads in (second, first)]
    # The losses compute in float32, which bounds the accuracy of the differences (~1e-5 here).
    unrolled = directional_derivative(lambda: unrolled_loss(method, batch), phi, direction, 1e-4)
    assert along[0] == pytest.approx(unrolled, rel=1e-3)
    if margin_type == "off":
        assert abs(along[1] - along[0]) > 0.3 * abs(along[0])
    inner = torch.autograd.grad(method(batch).loss, method.encoder_parameters())
    direct = directional_derivative(lambda: unrolled_loss(method, batch, inner), phi, direction, 1e-4)
    assert along[1] == pytest.approx(direct, rel=1e-3)


@pytest.mark.parametrize("meta_update", ["second_order", "first_order"])
def test_meta_step_leaves_encoder_untouched_and_moves_generators(meta_update):
    method = build({"meta_update": meta_update, "aug_weight": 1.0, "margin_weight": 1.0})
    tools, batch = sgd_tools(method), views_batch()
    encoder_before, generators_before = state_of(method.encoder, method.projector), state_of(method.generators)
    scalars = method.meta_step(batch, tools)
    assert torch.isfinite(scalars["meta_grad_norm"]) and scalars["meta_grad_norm"] > 0
    encoder_after = state_of(method.encoder, method.projector)
    for key, value in encoder_before.items():
        assert torch.equal(value, encoder_after[key]), key  # parameters and BN buffers
    moved = [k for k, v in state_of(method.generators).items() if not torch.equal(v, generators_before[k])]
    assert any(k.endswith("weight") for k in moved)


def test_frozen_never_changes_the_generators():
    method = build({"meta_update": "frozen", "aug_weight": 1.0, "margin_weight": 1.0})
    assert len(method.optimizer_groups()) == 1
    tools, params_before = sgd_tools(method), copy.deepcopy(list(method.generators.parameters()))
    encoder_before = state_of(method.encoder)
    for seed in (1, 2):
        scalars = method.train_step(method, views_batch(seed=seed), tools)
    assert "meta_grad_norm" not in scalars and "margin_loss" in scalars
    for before, after in zip(params_before, method.generators.parameters()):
        assert torch.equal(before, after)
    assert any(not torch.equal(v, state_of(method.encoder)[k]) for k, v in encoder_before.items())


class HalvingDistributed(LocalDistributed):
    """Records the gradient reduction and halves the gradients, as a 2-worker mean would."""

    def __init__(self):
        super().__init__("cpu")
        self.reduced: list[list[nn.Parameter]] = []

    def all_reduce_gradients(self, parameters) -> None:
        parameters = list(parameters)
        self.reduced.append(parameters)
        for p in parameters:
            p.grad.mul_(0.5)


def test_generator_gradients_are_reduced_before_the_step():
    dist = HalvingDistributed()
    method = build({"aug_weight": 1.0, "generator_lr": 0.2}, dist=dist, optim={"batch_size": 32, "weight_decay": 0})
    tools, batch = sgd_tools(method), views_batch()
    phi = [p.detach().clone() for p in method.generators.parameters()]
    grads = method.generator_meta_gradients(batch.views)
    method.meta_step(batch, tools)
    assert len(dist.reduced) == 1
    assert [id(p) for p in dist.reduced[0]] == [id(p) for p in method.generators.parameters()]
    lr = 0.2 * 32 / 256
    for before, grad, after in zip(phi, grads, method.generators.parameters()):
        torch.testing.assert_close(after.detach(), before - lr * 0.5 * grad)


def test_train_step_through_a_ddp_wrapper_matches_the_plain_step(tmp_path):
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    plain = build({"aug_weight": 1.0})
    wrapped_method = copy.deepcopy(plain)
    batch = views_batch()
    plain.train_step(plain, batch, sgd_tools(plain))
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(wrapped_method)
        wrapped_method.train_step(model, batch, sgd_tools(wrapped_method))
    finally:
        torch_dist.destroy_process_group()
    for (name, a), b in zip(plain.state_dict().items(), wrapped_method.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


# -- config, smoke run and a short learning run ----------------------------------------
def test_config_defaults_components_and_yaml():
    cfg = load_config(ROOT / "configs/metaug_fashion_mnist.yaml")
    assert cfg.method.name == "metaug"
    defaults = get_method_class("metaug").config_class(name="metaug")
    assert (defaults.aug_weight, defaults.margin_weight, defaults.gamma) == (1e-5, 1e-11, 16.0)
    assert defaults.generator_hidden == 2048 and defaults.meta_update == "second_order"
    for component in defaults.components:
        assert component.field in type(defaults).model_fields
        if component.off is not None:
            tiny_config({"name": "metaug", component.field: component.off})
    assert {c.name for c in defaults.components} >= {"generator", "meta_update", "margin", "loss"}


def test_two_step_smoke_run(tmp_path):
    cfg = tiny_config(
        {"name": "metaug", "generator_hidden": 16, "eval_generator_features": True},
        optim={"epochs": 1},
        data={"trifeature_train": 64},
    )
    metrics = train(cfg, tmp_path)
    for key in (
        "loss",
        "margin_loss",
        "generator_similarity",
        "meta_grad_norm",
        "val/knn_top1",
        "test/linear_top1",
        "val/generator/knn_top1",
        "test/generator/linear_top1",
    ):
        assert np.isfinite(metrics[key]), key
    assert {f"train/{name}" for name in TRACKED} <= scalar_tags(tmp_path)


TRACKED = {"margin_loss", "generator_similarity", "meta_grad_norm"}


def scalar_tags(run_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return set(events.Tags()["scalars"])


@pytest.mark.slow
def test_short_run_learns_and_logs_to_tensorboard(tmp_path):
    cfg = tiny_config(
        {"name": "metaug", "generator_hidden": 32, "aug_weight": 0.1, "margin_weight": 0.01},
        data={"trifeature_train": 576, "val_size": 64, "trifeature_test": 256},
        optim={"epochs": 3, "batch_size": 64, "lr": 0.1},
        eval={"knn_every": 0, "linear_probe": False, "align_uniform": False},
    )
    trainer = Trainer(cfg, tmp_path)
    at_start = colour_knn(trainer)
    trainer.run()
    assert colour_knn(trainer) > at_start + 0.05
    assert {f"train/{name}" for name in TRACKED} <= scalar_tags(tmp_path)
