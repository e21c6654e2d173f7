"""Every loss accepts float64 and bf16 inputs: float64 stays float64 (the reference tests'
precision), bf16 is reduced in float32, also under bf16 autocast."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from contrastlab import losses as L
from contrastlab.methods import slr as slr_module
from contrastlab.methods import sscl as sscl_module
from tests.helpers import tiny_config, unit

B, D, K = 6, 8, 20


def tensors() -> dict[str, torch.Tensor]:
    return {
        "z1": unit(B, D, seed=0),
        "z2": unit(B, D, seed=1),
        "queue": unit(K, D, seed=2),
        "synthetic": unit(B, 3, D, seed=3),
        "probs": torch.softmax(unit(B, K, seed=4) * 5, dim=1),
    }


def slr_loss(t: dict[str, torch.Tensor]) -> torch.Tensor:
    mcfg = tiny_config({"name": "slr", "queue_size": K}).method
    mixed = slr_module.MixedQueries(t["z2"], torch.arange(B).roll(1), torch.full((B,), 0.3))
    return slr_module.slr_objective(t["z1"], t["z2"], t["z2"], t["queue"], 0, mcfg, mixed).loss


def slr_off_loss(t: dict[str, torch.Tensor]) -> torch.Tensor:
    mcfg = tiny_config({"name": "slr", "queue_size": K, "slr": False}).method
    mixed = slr_module.MixedQueries(t["z2"], torch.arange(B).roll(1), 0.3)
    return slr_module.slr_objective(t["z1"], t["z2"], t["z2"], t["queue"], 0, mcfg, mixed).loss


def sscl_queue_loss(t: dict[str, torch.Tensor]) -> torch.Tensor:
    mcfg = tiny_config(
        {"name": "sscl", "base": "moco", "queue_size": K, "hard_pool_size": 8, "synthetic_count": 4}
    ).method
    q, k, queue = t["z1"], t["z2"], t["queue"]
    pos, neg = (q * k).sum(1), q @ queue.to(q.dtype).T
    return sscl_module.sscl_objective(q, pos, neg, queue, None, mcfg, torch.Generator().manual_seed(0)).loss


def oucl(t: dict[str, torch.Tensor]) -> torch.Tensor:
    pos, neg = L.two_view_scores(t["z1"], t["z2"])
    return L.oucl_loss((pos + 1) / 2, (neg + 1) / 2, circle=True)


def margin(t: dict[str, torch.Tensor]) -> torch.Tensor:
    pos, neg = L.two_view_scores(t["z1"], t["z2"])
    return L.margin_injected_loss(pos, neg, pos.roll(1, 0), neg.roll(1, 0), "large", 0.5)


LOSSES: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
    "nt_xent": lambda t: L.nt_xent(t["z1"], t["z2"], 0.5),
    "dcl": lambda t: L.dcl_loss(t["z1"], t["z2"], 0.5, 0.1),
    "hcl": lambda t: L.hcl_loss(t["z1"], t["z2"], 0.5, 0.1, 1.0),
    "sscl_loss": lambda t: L.sscl_loss(
        *L.positive_negative_similarities(t["z1"], t["z2"]), t["synthetic"][:, :, 0].repeat(2, 1), 0.5, 1.0, 0.1
    )[0],
    "moco": lambda t: L.moco_loss(t["z1"], t["z2"], t["queue"], 0.2),
    "mochi": lambda t: L.mochi_loss(t["z1"], t["z2"], t["queue"], t["synthetic"], 0.2),
    "soft_cross_entropy": lambda t: L.soft_cross_entropy(t["z1"] @ t["queue"].to(t["z1"].dtype).T, t["probs"]),
    "oucl": oucl,
    "margin_injected": margin,
    "slr_objective": slr_loss,
    "slr_off_with_mm": slr_off_loss,
    "sscl_objective_queue": sscl_queue_loss,
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_float64_stays_float64(name):
    loss = LOSSES[name](tensors())
    assert loss.dtype == torch.float64 and torch.isfinite(loss)


@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "bf16_autocast"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_bf16_inputs_reduce_in_float32(name, autocast):
    reference = LOSSES[name](tensors())
    low = {key: value.to(torch.bfloat16) for key, value in tensors().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = LOSSES[name](low)
    assert loss.dtype == torch.float32
    # bf16 inputs carry ~3 significant digits; the reductions must not lose more.
    assert loss.item() == pytest.approx(reference.item(), rel=5e-2, abs=5e-2)
