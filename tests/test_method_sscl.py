"""SSCL, DCL and HCL: identities with their baselines, a loop reference, gradients and runs."""

from __future__ import annotations

import math

import pytest
import torch

from contrastlab.config import ConfigError, load_config
from contrastlab.distributed import LocalDistributed
from contrastlab.methods import DataInfo, TrainBatch, get_method_class
from contrastlab.methods import sscl as sscl_module
from tests.helpers import ROOT, learns_beyond_random_init, needs_fashion, one_epoch_run, recording, tiny_config
from tests.reference import hard_pool_reference, sscl_torch_reference

INFO = DataInfo(channels=3, image_size=16, num_train=64)
ROWS = 8


def build(method: dict, dist=None, **sections):
    cfg = tiny_config(method, **sections)
    torch.manual_seed(0)
    return get_method_class(method["name"])(cfg, INFO, dist or LocalDistributed("cpu"))


def views_batch(rows: int = ROWS, seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(rows, 3, 16, 16, generator=gen) for _ in range(2))
    return TrainBatch(views, torch.arange(rows), epoch=0, step=0, generator=torch.Generator().manual_seed(seed + 1))


def paired_losses(first: dict, second: dict, **sections) -> tuple[torch.Tensor, torch.Tensor]:
    """Both methods' losses on the same batch with the same weights (second takes first's)."""
    a, b = build(first, **sections), build(second, **sections)
    b.load_state_dict(a.state_dict())
    # A fresh batch each: the step generator also draws Shuffle-BN's permutation.
    return a(views_batch()).loss, b(views_batch()).loss


# -- identities with the baselines ---------------------------------------------------------
ALL_OFF = {"synthesis": False, "hard_sampling": False, "debias": False}


@pytest.mark.parametrize("switches", [ALL_OFF, {"synthetic_count": 0, "beta": 0.0, "tau_plus": 0.0}])
def test_everything_off_is_simclr(switches):
    simclr = {"name": "simclr", "temperature": 0.3}
    # The same head as SimCLR's published one (with BN), so only the loss differs.
    sscl = {"name": "sscl", "temperature": 0.3, "projector_bn": True, **switches}
    ours, baseline = paired_losses(sscl, simclr)
    torch.testing.assert_close(ours, baseline, rtol=1e-5, atol=1e-6)


def test_declared_off_values_give_simclr():
    """The ablation switches exactly what `components` declares."""
    config_class = get_method_class("sscl").config_class
    off = {c.field: c.off for c in config_class.components if c.off is not None}
    assert set(off) == {"synthesis", "hard_sampling", "debias"}
    names = [c.name for c in config_class.components]
    assert names == ["synthesis", "mix_mode", "hard_sampling", "debias", "debias_count"]
    ours, baseline = paired_losses({"name": "sscl", "projector_bn": True, **off}, {"name": "simclr"})
    torch.testing.assert_close(ours, baseline, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("sscl", "baseline"),
    [
        ({"synthesis": False, "debias": False, "beta": 2.0}, {"name": "hcl", "tau_plus": 0.0, "beta": 2.0}),
        ({"synthesis": False, "beta": 2.0, "tau_plus": 0.05}, {"name": "hcl", "tau_plus": 0.05, "beta": 2.0}),
        ({"synthesis": False, "hard_sampling": False, "tau_plus": 0.05}, {"name": "dcl", "tau_plus": 0.05}),
    ],
    ids=["k0-tau0-is-hcl-weighting", "k0-is-hcl", "k0-beta0-is-dcl"],
)
def test_synthesis_off_gives_hcl_and_dcl(sscl, baseline):
    ours, theirs = paired_losses({"name": "sscl", "projector_bn": True, **sscl}, baseline)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_baseline_chain_hcl_dcl_simclr():
    hcl, dcl = paired_losses({"name": "hcl", "beta": 0.0, "tau_plus": 0.05}, {"name": "dcl", "tau_plus": 0.05})
    torch.testing.assert_close(hcl, dcl, rtol=1e-5, atol=1e-6)
    dcl, simclr = paired_losses({"name": "dcl", "tau_plus": 0.0}, {"name": "simclr"})
    torch.testing.assert_close(dcl, simclr, rtol=1e-5, atol=1e-6)
    debiased, plain = paired_losses({"name": "dcl", "tau_plus": 0.1}, {"name": "simclr"})
    assert not torch.allclose(debiased, plain)


def test_queue_base_everything_off_is_moco():
    # Both follow MoCo v2's published head (no BN) and Shuffle-BN keys.
    moco = {"name": "moco", "queue_size": 64, "temperature": 0.2}
    sscl = {"name": "sscl", "base": "moco", "queue_size": 64, "temperature": 0.2, "projector_bn": None, **ALL_OFF}
    ours, baseline = paired_losses(sscl, moco)
    torch.testing.assert_close(ours, baseline, rtol=1e-5, atol=1e-6)


# -- the full loss against a loop reference --------------------------------------------------


SYNTH = {"name": "sscl", "synthetic_count": 4, "hard_pool_size": 3, "temperature": 0.4, "beta": 1.5, "tau_plus": 0.1}


@pytest.mark.parametrize(
    ("mix_mode", "count"), [("pair_mix", "all"), ("duplicate", "all"), ("anchor_mix", "all"), ("pair_mix", "real_only")]
)
def test_loss_matches_loop_reference(monkeypatch, mix_mode, count):
    method = build({**SYNTH, "mix_mode": mix_mode, "debias_count": count}, optim={"batch_size": ROWS})
    points, projections = [], []
    monkeypatch.setattr(sscl_module, "synthesize_negatives", recording(sscl_module.synthesize_negatives, points))
    monkeypatch.setattr(method, "project", recording(method.project, projections))
    out = method(views_batch())
    (z1, z2), (synth,) = projections[0], points
    assert synth.shape == (2 * ROWS, 4, 16)
    torch.testing.assert_close(synth.norm(dim=2), torch.ones(2 * ROWS, 4))
    expected = sscl_torch_reference(z1.detach(), z2.detach(), synth, 0.4, 1.5, 0.1, count)
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert set(out.scalars) == {"mean_hardness_weight", "synthetic_similarity", "max_hardness_weight"}


def test_synthetic_negatives_come_from_the_hard_pool(monkeypatch):
    """`duplicate` copies pool members; `pair_mix` lies on a segment between two of them."""
    for mode in ("duplicate", "pair_mix"):
        method = build({**SYNTH, "mix_mode": mode}, optim={"batch_size": ROWS})
        points, projections = [], []
        monkeypatch.setattr(sscl_module, "synthesize_negatives", recording(sscl_module.synthesize_negatives, points))
        monkeypatch.setattr(method, "project", recording(method.project, projections))
        method(views_batch())
        z1, z2 = (p.detach() for p in projections[0])
        for pool, synth in zip(hard_pool_reference(z1, z2, 3), points[0]):
            for point in synth:
                residuals = []
                for u in pool:
                    for w in pool:
                        basis = torch.stack([u, w], dim=1).double()
                        coef = torch.linalg.lstsq(basis, point.double()[:, None]).solution
                        residuals.append((basis @ coef).squeeze(1).sub(point).norm() + (coef < -1e-6).any())
                assert min(residuals) < 1e-5, mode
        monkeypatch.undo()


def test_draws_come_from_the_batch_generator():
    method = build({**SYNTH}, optim={"batch_size": ROWS})
    first, again = (method(views_batch(seed=1)).loss for _ in range(2))
    torch.testing.assert_close(first, again)
    batch = views_batch(seed=1)
    batch.generator = torch.Generator().manual_seed(99)
    assert not torch.allclose(method(batch).loss, first)


# -- gradients -------------------------------------------------------------------------------
class TwoWorkers(LocalDistributed):
    """Rank 0 of two: the other worker's projections are leaves the test can differentiate."""

    world_size = 2

    def __init__(self, remote: list[torch.Tensor]):
        super().__init__("cpu")
        self.remote = list(remote)

    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, self.remote.pop(0)])


@pytest.mark.parametrize("mix_mode", ["pair_mix", "anchor_mix"])
def test_gradient_reaches_anchors_and_real_negatives_not_synthetic_ones(monkeypatch, mix_mode):
    gen = torch.Generator().manual_seed(5)
    remote = [
        torch.nn.functional.normalize(torch.randn(ROWS, 16, generator=gen), dim=1).requires_grad_() for _ in range(2)
    ]
    method = build({**SYNTH, "mix_mode": mix_mode}, dist=TwoWorkers(remote), optim={"batch_size": 2 * ROWS})
    points, projections = [], []
    monkeypatch.setattr(sscl_module, "synthesize_negatives", recording(sscl_module.synthesize_negatives, points))
    monkeypatch.setattr(method, "project", recording(method.project, projections))
    loss = method(views_batch()).loss
    (z1, z2), (synth,) = projections[0], points
    assert not synth.requires_grad and synth.grad_fn is None
    leaves = [z1, z2, *remote]
    grads = torch.autograd.grad(loss, leaves)
    assert all(g.abs().sum() > 0 for g in grads)
    # The reference treats the synthetic negatives as constants; equal gradients mean the
    # method's loss reaches the real views only through their own similarities.
    expected = sscl_torch_reference(
        z1, z2, synth, 0.4, 1.5, 0.1, "all", torch.cat([z1, remote[0]]), torch.cat([z2, remote[1]])
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, torch.autograd.grad(expected, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


# -- configuration -------------------------------------------------------------------------------
def test_pool_larger_than_the_real_negatives_is_refused():
    with pytest.raises(ValueError, match="method.hard_pool_size"):
        build({"name": "sscl", "hard_pool_size": 64}, optim={"batch_size": 16})
    build({"name": "sscl", "hard_pool_size": 64, "synthesis": False}, optim={"batch_size": 16})
    with pytest.raises(ConfigError, match="hard_pool_size"):
        tiny_config({"name": "sscl", "base": "moco", "queue_size": 32, "hard_pool_size": 64})


def test_head_has_no_batchnorm_by_default():
    method = build({"name": "sscl", "synthesis": False})
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in method.projector.modules())
    assert not hasattr(method, "key_encoder")


@pytest.mark.parametrize("name", ["sscl", "hcl"])
def test_example_config_loads(name):
    cfg = load_config(ROOT / "configs" / f"{name}_fashion_mnist.yaml")
    assert cfg.method.name == name and cfg.data.name == "fashion_mnist"


# -- runs ----------------------------------------------------------------------------------------
SCALARS = {"mean_hardness_weight", "synthetic_similarity", "max_hardness_weight"}


@pytest.mark.parametrize(
    ("method", "scalars"),
    [
        ({"name": "sscl", "hard_pool_size": 16, "synthetic_count": 8}, SCALARS),
        ({"name": "sscl", "base": "moco", "queue_size": 64, "hard_pool_size": 16, "synthetic_count": 8}, SCALARS),
        ({"name": "hcl"}, set()),
        ({"name": "dcl"}, set()),
    ],
    ids=["sscl", "sscl-moco", "hcl", "dcl"],
)
def test_two_step_smoke_and_tensorboard(tmp_path, method, scalars):
    cfg = tiny_config(method, optim={"epochs": 1}, data={"trifeature_train": 64}, eval={"probe_epochs": 2})
    metrics, tags = one_epoch_run(cfg, tmp_path)
    assert math.isfinite(metrics["loss"]) and metrics["epoch"] == 1
    assert scalars <= set(metrics) and {f"train/{s}" for s in scalars} | {"train/loss", "val/knn_top1"} <= tags


@pytest.mark.slow
@needs_fashion
@pytest.mark.parametrize(
    ("config", "overrides"), [("sscl", {}), ("hcl", {}), ("hcl", {"method.beta": 0.0})], ids=["sscl", "hcl", "dcl"]
)
def test_learns_beyond_random_init(tmp_path, config, overrides):
    before, after = learns_beyond_random_init(config, tmp_path, **overrides)
    assert after > before + 0.02, (before, after)
