"""MoCHi: the MoCo v2 identity, the loss against a NumPy reference, gradients and the config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastlab.config import ConfigError, load_config
from contrastlab.distributed import LocalDistributed
from contrastlab.losses import mochi_loss, moco_loss
from contrastlab.methods import DataInfo, TrainBatch, get_method_class
from contrastlab.methods import mochi as mochi_module
from tests.helpers import ROOT, recording, tiny_config, unit
from tests.reference import mochi_reference

INFO = DataInfo(channels=3, image_size=16, num_train=64)
ROWS, QUEUE = 8, 64


def build(method: dict):
    cfg = tiny_config({"queue_size": QUEUE, **method})
    torch.manual_seed(0)
    return get_method_class(method["name"])(cfg, INFO, LocalDistributed("cpu"))


def views_batch(seed: int = 1, epoch: int = 0) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(ROWS, 3, 16, 16, generator=gen) for _ in range(2))
    return TrainBatch(views, torch.arange(ROWS), epoch, 0, torch.Generator().manual_seed(seed + 1))


def paired_losses(first: dict, second: dict, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = build(first), build(second)
    b.load_state_dict(a.state_dict())
    return a(views_batch(epoch=epoch)).loss, b(views_batch(epoch=epoch)).loss


MOCHI = {"name": "mochi", "hard_negatives": 16, "pair_negatives": 12, "query_negatives": 6}


# -- identity with MoCo v2 -----------------------------------------------------------------------
def test_no_synthetic_negatives_is_moco_v2_exactly():
    ours, baseline = paired_losses({**MOCHI, "pair_negatives": 0, "query_negatives": 0}, {"name": "moco"})
    assert torch.equal(ours, baseline)


def test_declared_off_values_give_moco_v2():
    config_class = get_method_class("mochi").config_class
    off = {c.field: c.off for c in config_class.components if c.off is not None}
    assert off == {"pair_negatives": 0, "query_negatives": 0, "shuffle_bn": False}
    ours, baseline = paired_losses({**MOCHI, **off}, {"name": "moco", "shuffle_bn": False})
    assert torch.equal(ours, baseline)


def test_before_mix_start_epoch_is_moco_v2():
    ours, baseline = paired_losses({**MOCHI, "mix_start_epoch": 3}, {"name": "moco"}, epoch=2)
    assert torch.equal(ours, baseline)
    mixed, plain = paired_losses({**MOCHI, "mix_start_epoch": 3}, {"name": "moco"}, epoch=3)
    assert not torch.allclose(mixed, plain)


# -- the loss against NumPy ----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [0, 1, 7])
def test_mochi_loss_matches_numpy_in_float64(extra):
    q, k, queue, synthetic = unit(5, 8, seed=0), unit(5, 8, seed=1), unit(20, 8, seed=2), unit(5, extra, 8, seed=3)
    got = mochi_loss(q, k, queue, synthetic, 0.2)
    assert got.dtype == torch.float64
    expected = mochi_reference(*(t.numpy() for t in (q, k, queue, synthetic)), 0.2)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    if extra == 0:
        assert torch.equal(got, moco_loss(q, k, queue, 0.2))


def test_method_loss_matches_numpy_with_its_own_synthetic_negatives(monkeypatch):
    method = build({**MOCHI, "temperature": 0.3})
    made, queries, keys = [], [], []
    monkeypatch.setattr(mochi_module, "mochi_negatives", recording(mochi_module.mochi_negatives, made))
    monkeypatch.setattr(method, "query", recording(method.query, queries))
    monkeypatch.setattr(method, "keys", recording(method.keys, keys))
    queue = method.queue.double().numpy()
    out = method(views_batch())
    synthetic = made[0]
    assert synthetic.shape == (ROWS, 18, 16) and not synthetic.requires_grad
    torch.testing.assert_close(synthetic.norm(dim=2), torch.ones(ROWS, 18))
    expected = mochi_reference(
        queries[0].detach().double().numpy(), keys[0].double().numpy(), queue, synthetic.double().numpy(), 0.3
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert "synthetic_similarity" in out.scalars


def test_type_two_negatives_lean_towards_their_query():
    """normalize(β·q + (1−β)·n) lies on the arc from n to q: never less similar to q than
    the least similar of the N hard negatives it is made from."""
    queue = F.normalize(torch.randn(QUEUE, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    q = F.normalize(torch.randn(ROWS, 16, generator=torch.Generator().manual_seed(4)), dim=1)
    synthetic = mochi_module.mochi_negatives(q, queue, 16, 0, 6, torch.Generator().manual_seed(0))
    to_query = torch.einsum("bd,bsd->bs", q, synthetic)
    least_hard = (q @ queue.T).topk(16, dim=1).values[:, -1:]
    assert synthetic.shape == (ROWS, 6, 16) and bool((to_query >= least_hard - 1e-6).all())


def test_gradient_reaches_the_query_encoder_only():
    method = build(MOCHI)
    method(views_batch()).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.projector.parameters())
    assert all(p.grad is None for p in [*method.key_encoder.parameters(), *method.key_projector.parameters()])


# -- config ----------------------------------------------------------------------------------------
def test_hard_set_must_fit_the_queue():
    with pytest.raises(ConfigError, match="hard_negatives"):
        tiny_config({"name": "mochi", "queue_size": 32, "hard_negatives": 64})


def test_example_config_loads():
    cfg = load_config(ROOT / "configs" / "mochi_fashion_mnist.yaml")
    assert cfg.method.name == "mochi" and cfg.method.hard_negatives <= cfg.method.queue_size
