"""MoCo v2 as published: the head without BN, Shuffle-BN on one worker and on two, and the
identity with the earlier MoCo (no Shuffle-BN, BN in the head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from contrastlab.distributed import LocalDistributed
from contrastlab.distributed.shuffle_bn import group_count
from contrastlab.distributed.torch_dist import TorchDistributed
from contrastlab.methods import DataInfo, StepTools, TrainBatch, get_method_class
from tests.helpers import tiny_config

INFO = DataInfo(channels=3, image_size=16, num_train=64)
ROWS, QUEUE, WORLD = 8, 32, 2


def build(method: dict, dist_=None, **sections):
    method = {"name": "moco", **method}
    if method["name"] != "simclr":
        method.setdefault("queue_size", QUEUE)
    cfg = tiny_config(method, **sections)
    torch.manual_seed(0)
    return get_method_class(cfg.method.name)(cfg, INFO, dist_ or LocalDistributed("cpu"))


def images(rows: int = ROWS, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3, 16, 16, generator=gen), torch.randn(rows, 3, 16, 16, generator=gen)


def batch_of(views, seed: int = 2) -> TrainBatch:
    return TrainBatch(views, torch.arange(views[0].shape[0]), 0, 0, torch.Generator().manual_seed(seed))


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(layer, nn.BatchNorm1d) for layer in module.modules())


def key_forward(method, x: torch.Tensor) -> torch.Tensor:
    """The key encoder on exactly the rows `x` (train-mode BN over them), written out."""
    return F.normalize(method.key_projector(method.key_encoder(x)), dim=1)


# -- the head ------------------------------------------------------------------------------------
def test_moco_family_heads_have_no_batchnorm_by_default():
    for name in ("moco", "slr", "mochi"):
        assert not has_batchnorm(build({"name": name, **({"hard_negatives": 8} if name == "mochi" else {})}).projector)
    assert has_batchnorm(build({"name": "simclr"}).projector)


def test_head_batchnorm_is_a_switch_and_the_method_field_wins():
    assert has_batchnorm(build({"projector_bn": True}).projector)
    assert has_batchnorm(build({}, model={"projector_bn": True}).projector)
    assert not has_batchnorm(build({"projector_bn": False}, model={"projector_bn": True}).projector)
    assert not has_batchnorm(build({"name": "simclr"}, model={"projector_bn": False}).projector)


# -- identity with the earlier MoCo -----------------------------------------------------------
def test_shuffle_bn_off_and_head_bn_on_is_the_earlier_moco():
    """Keys from one unshuffled train-mode pass, BN in the head: the loss written in NumPy."""
    method = build({"shuffle_bn": False, "projector_bn": True, "temperature": 0.2})
    assert has_batchnorm(method.projector)
    x1, x2 = images()
    queue = method.queue.double().numpy()
    loss = method(batch_of((x1, x2))).loss
    with torch.no_grad():
        q = F.normalize(method.projector(method.encoder(x1)), dim=1).double().numpy()
        k = key_forward(method, x2).double().numpy()
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / 0.2
    expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# -- Shuffle-BN on one worker ----------------------------------------------------------------------
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_split_batch_keys_are_per_group_forwards_in_original_order(groups):
    method = build({"shuffle_bn_groups": groups})
    method.train()
    x = images()[1]
    got = method.keys(x, torch.Generator().manual_seed(5))
    perm = torch.randperm(ROWS, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        parts = [key_forward(method, x[index]) for index in perm.tensor_split(group_count(ROWS, groups))]
    expected = torch.empty_like(got)
    expected[perm] = torch.cat(parts)
    torch.testing.assert_close(got, expected)
    with torch.no_grad():
        whole = key_forward(method, x)
    # One group is the unshuffled pass (BN statistics do not depend on the order).
    assert torch.allclose(got, whole, atol=1e-5) == (group_count(ROWS, groups) == 1)


def test_group_count_keeps_two_rows_per_group():
    assert [group_count(rows, 8) for rows in (1, 2, 5, 16, 64)] == [1, 1, 2, 8, 8]


def test_shuffle_bn_changes_nothing_in_eval_mode():
    method = build({})
    method.eval()
    x = images()[1]
    torch.testing.assert_close(method.keys(x, torch.Generator().manual_seed(0)), key_forward(method, x))


def test_shuffle_is_drawn_from_the_step_generator():
    method = build({})
    method.train()
    x = images()[1]
    first, again = (method.keys(x, torch.Generator().manual_seed(3)) for _ in range(2))
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, method.keys(x, torch.Generator().manual_seed(4)))


# -- Shuffle-BN across two workers -----------------------------------------------------------------
def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        distributed = TorchDistributed(torch.device("cpu"))
        method = build({"momentum": 0.9}, distributed, optim={"batch_size": 2 * ROWS, "weight_decay": 0.0})
        method.train()
        mine = slice(rank * ROWS, (rank + 1) * ROWS)
        x1, x2 = images(2 * ROWS)
        # Each rank seeds its own generator differently: only rank 0's draw may count.
        keys = method.keys(x2[mine], torch.Generator().manual_seed(10 + rank))
        model = distributed.wrap(method)
        tools = StepTools([torch.optim.SGD(group, lr=0.1) for group in method.optimizer_groups()])
        for step in range(2):
            batch = TrainBatch(
                (x1[mine], x2[mine]),
                torch.arange(2 * ROWS)[mine],
                0,
                step,
                torch.Generator().manual_seed(100 * step + rank),
            )
            method.train_step(model, batch, tools)
        torch.save(
            {"keys": keys, "queue": method.queue.clone(), "ptr": method.queue_ptr.clone()},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_workers_shuffle_across_workers_and_keep_one_queue(tmp_path: Path):
    mp.spawn(_worker, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=WORLD, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    # Reference: one process, the global key batch shuffled by rank 0's permutation; each
    # worker's slice of it is one BN group; the keys go back to their images' rows.
    method = build({"momentum": 0.9}, optim={"batch_size": 2 * ROWS})
    method.train()
    x2 = images(2 * ROWS)[1]
    perm = torch.randperm(2 * ROWS, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        shuffled = torch.cat([key_forward(method, x2[part]) for part in perm.tensor_split(WORLD)])
    expected = torch.empty_like(shuffled)
    expected[perm] = shuffled
    torch.testing.assert_close(torch.cat([rank0["keys"], rank1["keys"]]), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        unshuffled = torch.cat([key_forward(method, x2[:ROWS]), key_forward(method, x2[ROWS:])])
    assert not torch.allclose(expected, unshuffled, atol=1e-4), "the shuffle must change the BN groups"
    assert torch.equal(rank0["queue"], rank1["queue"]) and int(rank0["ptr"]) == int(rank1["ptr"]) == 4 * ROWS % QUEUE
