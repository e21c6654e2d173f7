"""Two workers × batch B give the same parameter update as one worker × batch 2B.

For every registered method (simclr, moco and whichever of dcl, hcl, sscl, slr, metaug
exist), two optimisation steps run three ways on the same views: in one process on the
global batch (`LocalDistributed`), and in two processes of a gloo process group, each on
its contiguous half, through `TorchDistributed` (DDP, the differentiable gather, gathered
MoCo keys, averaged MetAug generator gradients). Parameter updates and MoCo queues must
agree to float32 round-off; both replicas must be identical.

BatchNorm: per-worker BatchNorm normalises with the statistics of the local batch (B rows,
not 2B), so in train mode the two runs differ *by design*, not by a bug; SyncBatchNorm
(GPU only in torch) removes that difference. These tests therefore freeze every
BatchNorm layer in eval mode, where it is a fixed affine map, and test everything else.
The same holds for Shuffle-BN (on by default for MoCo-family keys): it only regroups
train-mode BN, so with frozen BN the two-worker shuffle must give the same keys and queue.

Components that draw per-sample random numbers from the per-rank step generator (SSCL's
synthetic negatives, SLR's momentum mixup) draw different numbers on 2 workers than on 1,
as any data-parallel run does; they are switched off here and nothing else differs.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from contrastlab.distributed import LocalDistributed
from contrastlab.distributed.torch_dist import TorchDistributed
from contrastlab.methods import DataInfo, StepTools, TrainBatch, available_methods, get_method_class
from contrastlab.optim import build_optimizer
from tests.helpers import tiny_config

WORLD = 2
BROKEN_CASE = "simclr_constant_gather"
GLOBAL_BATCH = 16
STEPS = 2
CHANNELS, SIZE = 3, 16

# case name -> method section; a case runs when its method is registered.
CASES: dict[str, dict] = {
    "simclr": {"name": "simclr", "temperature": 0.5},
    "moco": {"name": "moco", "queue_size": 48, "momentum": 0.9},
    "dcl": {"name": "dcl", "tau_plus": 0.1},
    "hcl": {"name": "hcl", "tau_plus": 0.1, "beta": 1.0},
    "sscl": {"name": "sscl", "synthesis": False, "projector_bn": True},
    "sscl_moco": {"name": "sscl", "base": "moco", "synthesis": False, "queue_size": 48},
    "slr": {"name": "slr", "mm": False, "queue_size": 48, "top_k": 8},
    "metaug_encoder": {
        "name": "metaug",
        "generator_hidden": 16,
        "meta_update": "frozen",
        "aug_weight": 1.0,
        "margin_weight": 0.1,
    },
    "metaug": {
        "name": "metaug",
        "generator_hidden": 16,
        "meta_update": "second_order",
        "inner_lr": 0.5,
        "aug_weight": 1.0,
        "margin_weight": 0.1,
    },
}
# With SyncBatchNorm (GPU only), BatchNorm in train mode matches too.
SYNC_BN_CASES = {"simclr_sync_bn": "simclr", "moco_sync_bn": "moco"}


def case_config(case: str):
    # No weight decay: the update is then made of gradients only, the thing under test.
    optim = {"batch_size": GLOBAL_BATCH, "lr": 0.5, "weight_decay": 0.0}
    if case in SYNC_BN_CASES:
        # Shuffle-BN groups keys differently on 1 and 2 workers by design; here BN must see the global batch.
        method = {**CASES[SYNC_BN_CASES[case]]}
        if method["name"] == "moco":
            method["shuffle_bn"] = False
        return tiny_config(method, optim=optim, model={"sync_batchnorm": True})
    return tiny_config(CASES[case], optim=optim)


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep every BatchNorm layer in eval mode, even when a method calls `.train()` on it."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()
            layer.train = types.MethodType(lambda self, mode=True: self, layer)


def step_views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    shape = (GLOBAL_BATCH, CHANNELS, SIZE, SIZE)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def run_steps(
    case: str, distributed, rank: int, world: int, device: str = "cpu", frozen_bn: bool = True
) -> dict[str, torch.Tensor]:
    """`STEPS` optimisation steps on this rank's rows; returns the updates and the buffers (on CPU)."""
    cfg = case_config(case)
    torch.manual_seed(cfg.seed)
    info = DataInfo(CHANNELS, SIZE, 256, {"label": 10})
    method = get_method_class(cfg.method.name)(cfg, info, distributed).to(device)
    method.train()
    if frozen_bn:
        freeze_batchnorm(method)
    model = distributed.wrap(method)
    tools = StepTools([build_optimizer(group, cfg.optim) for group in method.optimizer_groups()])
    initial = {name: p.detach().clone() for name, p in method.named_parameters()}
    rows = GLOBAL_BATCH // world
    local = slice(rank * rows, (rank + 1) * rows)
    for step in range(STEPS):
        views = tuple(v[local].to(device) for v in step_views(step))
        generator = torch.Generator(device=device).manual_seed(step)
        batch = TrainBatch(views, torch.arange(GLOBAL_BATCH)[local], 0, step, generator)
        method.train_step(model, batch, tools)
    result = {f"update/{name}": (p.detach() - initial[name]) for name, p in method.named_parameters()}
    result.update({f"buffer/{name}": b.detach().clone() for name, b in method.named_buffers() if "queue" in name})
    return {name: value.cpu() for name, value in result.items()}


class ConstantGather(TorchDistributed):
    """The classic mistake: other workers' rows as constants, so half the gradient is lost."""

    def all_gather_with_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        gathered = self.all_gather(tensor)
        rows = tensor.shape[0]
        return torch.cat([gathered[: self.rank * rows], tensor, gathered[(self.rank + 1) * rows :]])


def _worker(rank: int, cases: list[str], init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        distributed = TorchDistributed(torch.device("cpu"))
        results = {case: run_steps(case, distributed, rank, WORLD) for case in cases}
        results[BROKEN_CASE] = run_steps("simclr", ConstantGather(torch.device("cpu")), rank, WORLD)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def available_cases() -> list[str]:
    names = set(available_methods())
    return [case for case, section in CASES.items() if section["name"] in names]


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> list[dict]:
    """All cases in one pair of spawned processes (spawning costs more than the steps)."""
    folder = tmp_path_factory.mktemp("equivalence")
    mp.spawn(_worker, args=(available_cases(), str(folder / "pg"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def assert_close_updates(single: dict[str, torch.Tensor], multi: dict[str, torch.Tensor]) -> None:
    assert single.keys() == multi.keys()
    moved = 0
    for name, expected in single.items():
        got = multi[name]
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 + 1e-4 * scale, msg=name)
        moved += int(name.startswith("update/") and scale > 0)
    assert moved > 0, "no parameter moved: the comparison would be vacuous"


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_match_one_worker_with_twice_the_batch(case: str, distributed_results) -> None:
    if case not in available_cases():
        pytest.skip(f"method {CASES[case]['name']} is not available")
    torch.set_num_threads(1)
    single = run_steps(case, LocalDistributed("cpu"), 0, 1)
    rank0, rank1 = (results[case] for results in distributed_results)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"replicas diverged in {name}"
    assert_close_updates(single, rank0)


def test_gather_without_gradient_is_caught(distributed_results) -> None:
    """The comparison is sensitive: negatives gathered as constants give another update."""
    single = run_steps("simclr", LocalDistributed("cpu"), 0, 1)
    with pytest.raises(AssertionError):
        assert_close_updates(single, distributed_results[0][BROKEN_CASE])


def _gpu_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.cuda.set_device(rank)
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions would hide the comparison in round-off
    torch.backends.cudnn.deterministic = True
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        distributed = TorchDistributed(f"cuda:{rank}", local_rank=rank)
        results = {
            case: run_steps(case, distributed, rank, WORLD, f"cuda:{rank}", frozen_bn=False) for case in SYNC_BN_CASES
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason="needs two CUDA devices")
def test_sync_batchnorm_matches_global_batchnorm_in_train_mode(tmp_path: Path) -> None:
    mp.spawn(_gpu_worker, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=WORLD, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    for case in SYNC_BN_CASES:
        single = run_steps(case, LocalDistributed("cuda:0"), 0, 1, "cuda:0", frozen_bn=False)
        for name in rank0[case]:
            torch.testing.assert_close(rank0[case][name], rank1[case][name], msg=name)
        assert_close_updates(single, rank0[case])
