"""MCL: identity with the base method, pseudo-labels, the cluster sampler, masks, resume, a run."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from contrastlab.config import ConfigError
from contrastlab.data import RandomBatches
from contrastlab.distributed import LocalDistributed
from contrastlab.engine import Trainer
from contrastlab.losses import moco_loss, nt_xent
from contrastlab.methods import DataInfo, TrainBatch, get_method_class
from contrastlab.methods import mcl as mcl_module
from contrastlab.methods.mcl_sampling import (
    ClusterBatches,
    batch_negative_mask,
    cumulative_labels,
    queue_negative_mask,
    stage_pseudo_labels,
)
from tests.helpers import colour_knn, tiny_config
from tests.reference import hand_mask

N = 64
INFO = DataInfo(channels=3, image_size=16, num_train=N)
QUIET = {
    "output": {"progress_every": 0, "tensorboard": False},
    "eval": {"knn_every": 0, "knn_k": 20, "linear_probe": False, "align_uniform": False},
}


def build(method: dict, **sections):
    cfg = tiny_config(method, **sections)
    torch.manual_seed(0)
    return get_method_class(method["name"])(cfg, INFO, LocalDistributed("cpu"))


def views_batch(rows: int = 8, seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    views = tuple(torch.randn(rows, 3, 16, 16, generator=gen) for _ in range(2))
    return TrainBatch(views, torch.arange(rows), epoch=0, step=0, generator=torch.Generator().manual_seed(seed + 1))


class FakeContext:
    """The parts of the engine's EpochContext that MCL's hooks use."""

    def __init__(self, features: torch.Tensor | None = None, batch_size: int = 16):
        self.features, self.batch_size, self.messages = features, batch_size, []
        self.dist = LocalDistributed("cpu")
        self.writer = type("NoWriter", (), {"scalars": lambda *a, **k: None, "text": lambda *a, **k: None})()

    def embed_train_set(self, fn):
        if self.features is None:
            raise AssertionError("this configuration must not embed the training set")
        return self.features

    def random_batches(self) -> RandomBatches:
        return RandomBatches(N, self.batch_size, 0)

    def log(self, message: str) -> None:
        self.messages.append(message)


def planted_features(groups: int = 4, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Features in `groups` tight, far-apart clusters, so k-means must recover them."""
    gen = torch.Generator().manual_seed(3)
    truth = torch.arange(N) % groups
    centres = torch.eye(dim)[:groups] * 10
    return centres[truth] + 0.01 * torch.randn(N, dim, generator=gen), truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a[:, None] == a[None]) == (b[:, None] == b[None])).all())


# -- stages: 0 is the base method ------------------------------------------------------------
@pytest.mark.parametrize(
    "base",
    [{"name": "simclr", "temperature": 0.3}, {"name": "moco", "temperature": 0.3, "queue_size": 32, "symmetric": True}],
)
def test_one_stage_is_the_base_method_on_a_batch(base):
    extra = {k: v for k, v in base.items() if k != "name"}
    ours = build({"name": "mcl", "base": base["name"], "stages": 0, "stage_epochs": [1, 1], **extra})
    baseline = build(base)
    assert torch.equal(
        torch.cat([p.flatten() for p in ours.stages[0].parameters()]),
        torch.cat([p.flatten() for p in baseline.parameters()]),
    )
    batch = views_batch()
    # A fresh batch each: the step generator also draws MoCo's Shuffle-BN permutation.
    assert torch.equal(ours(batch).loss, baseline(views_batch()).loss)
    ours.after_optimizer_step()
    baseline.after_optimizer_step()
    for name, buffer in baseline.named_buffers():
        assert torch.equal(ours.stages[0].get_buffer(name), buffer), name
    assert ours.eval_representations() == {}
    images = batch.views[0]
    assert torch.equal(ours.features(images), baseline.features(images))


def test_one_stage_trains_the_same_trajectory_as_simclr(tmp_path):
    sections = {**QUIET, "data": {"trifeature_train": 96, "val_size": 32}}
    simclr = Trainer(tiny_config({"name": "simclr", "temperature": 0.4}, **sections), tmp_path / "simclr")
    mcl = Trainer(tiny_config({"name": "mcl", "temperature": 0.4, "stages": 0}, **sections), tmp_path / "mcl")
    assert simclr.steps_per_epoch == mcl.steps_per_epoch == 2
    first, second = simclr.train_epoch(0), mcl.train_epoch(0)
    assert first["loss"] == second["loss"]
    for (name, p), q in zip(simclr.method.named_parameters(), mcl.method.stages[0].parameters()):
        assert torch.equal(p, q), name
    assert simclr.optimizers[0].param_groups[0]["lr"] == mcl.optimizers[0].param_groups[0]["lr"]


# -- the stage schedule -----------------------------------------------------------------------
def test_stage_epochs_default_split_and_budget_check():
    assert mcl_module.resolve_stage_epochs(mcl_module.MCLConfig(stages=2), 10) == [4, 3, 3]
    assert mcl_module.resolve_stage_epochs(mcl_module.MCLConfig(stages=0, stage_epochs=[5, 5]), 7) == [7]
    with pytest.raises(ValueError, match=r"method\.stage_epochs \[1, 1, 1\] sums to 3 epochs but optim\.epochs is 2"):
        build({"name": "mcl", "stages": 2, "stage_epochs": [1, 1, 1]})
    with pytest.raises(ConfigError, match="stage_epochs"):
        tiny_config({"name": "mcl", "stages": 2, "stage_epochs": [1, 1]})
    with pytest.raises(ConfigError, match="mask_other_clusters"):
        tiny_config({"name": "mcl", "base": "moco", "sampling": "cluster_batches"})


def test_each_stage_has_its_own_warmup_and_cosine():
    method = build({"name": "mcl", "stages": 1, "stage_epochs": [2, 1]}, optim={"epochs": 3, "warmup_epochs": 1})
    optimizers = [torch.optim.SGD(group, lr=1.0) for group in method.optimizer_groups()]
    schedules = [method.lr_schedule(opt, i, steps_per_epoch=4) for i, opt in enumerate(optimizers)]
    lrs = []
    for _ in range(12):
        lrs.append([opt.param_groups[0]["lr"] for opt in optimizers])
        for opt, schedule in zip(optimizers, schedules):
            opt.step()
            schedule.step()
    stage0, stage1 = zip(*lrs)
    assert stage0[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and all(lr == 0 for lr in stage0[8:])
    assert all(lr == 0 for lr in stage1[:8]) and stage1[8:] == pytest.approx([0.25, 0.5, 0.75, 1.0])


# -- pseudo-labels --------------------------------------------------------------------------
def test_cumulative_labels_on_a_hand_example():
    assignments = torch.tensor([[0, 1, 0, 1, 2, 2], [1, 1, 0, 0, 1, 1]])
    # y = c0 + 3·c1 = [3, 4, 0, 1, 5, 5]; the codes in order 0, 1, 3, 4, 5 become ids 0..4.
    assert cumulative_labels(assignments, 3).tolist() == [2, 3, 0, 1, 4, 4]
    assert stage_pseudo_labels(assignments, 3, "last_stage").tolist() == [1, 1, 0, 0, 1, 1]
    gen = torch.Generator().manual_seed(0)
    deep = torch.randint(0, 4, (3, 200), generator=gen)
    codes = deep[0] + 4 * deep[1] + 16 * deep[2]
    expected = torch.searchsorted(torch.unique(codes), codes)
    assert torch.equal(cumulative_labels(deep, 4), expected)


def test_stage_boundary_clusters_the_previous_stage():
    features, truth = planted_features()
    method = build({"name": "mcl", "stages": 1, "clusters": 4, "stage_epochs": [1, 1]})
    ctx = FakeContext(features)
    method.on_epoch_start(0, ctx)
    assert method.active == 0 and (method.pseudo_labels < 0).all()
    method.on_epoch_start(1, ctx)
    assert method.active == 1 and same_partition(method.pseudo_labels, truth)
    assert "cluster sizes [16, 16, 16, 16]" in ctx.messages[0]


# -- the cluster sampler ------------------------------------------------------------------
def uneven_labels() -> torch.Tensor:
    sizes = [40, 17, 9, 5, 3, 1]  # one group above a batch of 16, the rest below it
    labels = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))]


def test_cluster_batches_come_from_one_group_and_cover_the_epoch():
    labels = uneven_labels()
    sampler = ClusterBatches(labels, batch_size=16, seed=5)
    assert len(sampler) == labels.numel() // 16 == sampler.pure_batches + sampler.mixed_batches
    assert (sampler.pure_batches, sampler.left_out) == (3, labels.numel() % 16)
    batches, mixed = sampler.epoch_batches(0)
    for batch, is_mixed in zip(batches, mixed):
        assert is_mixed or labels[batch].unique().numel() == 1
    seen = batches.flatten()
    assert seen.unique().numel() == seen.numel() == labels.numel() - sampler.left_out
    everyone = torch.cat([sampler.epoch_batches(e)[0].flatten() for e in range(8)]).unique()
    assert everyone.numel() == labels.numel()  # the left-out samples change between epochs


def test_cluster_batches_are_seeded_and_shard_across_ranks():
    labels = uneven_labels()
    sampler = ClusterBatches(labels, batch_size=16, seed=5)
    again = ClusterBatches(labels, batch_size=16, seed=5)
    assert torch.equal(sampler.epoch_batches(3)[0], again.epoch_batches(3)[0])
    assert not torch.equal(sampler.epoch_batches(3)[0], sampler.epoch_batches(4)[0])
    assert not torch.equal(sampler.epoch_batches(3)[0], ClusterBatches(labels, 16, seed=6).epoch_batches(3)[0])
    shards = [list(ClusterBatches(labels, 16, 5, rank=r, world_size=4).epoch(3)) for r in range(4)]
    for step, batch in enumerate(sampler.epoch_batches(3)[0]):
        parts = [shards[r][step] for r in range(4)]
        assert torch.equal(torch.cat(parts), batch)  # disjoint shards of the same global batch


def test_random_negatives_ignore_the_cluster_labels():
    method = build({"name": "mcl", "stages": 1, "negatives": "random", "stage_epochs": [1, 1]})
    method.on_epoch_start(1, FakeContext(features=None))  # no clustering is asked for
    assert method.active == 1 and not method.masks_negatives
    reference = [b.tolist() for b in RandomBatches(N, 16, 0).epoch(1)]
    for labels in (torch.zeros(N, dtype=torch.long), torch.arange(N) % 5):
        method.pseudo_labels.copy_(labels)
        assert [b.tolist() for b in method.batch_sampler(FakeContext()).epoch(1)] == reference
    batch = views_batch()
    assert torch.equal(method(batch).loss, method.stages[1].compute_loss(batch).loss)


# -- masks of other clusters ----------------------------------------------------------------


def test_mask_keeps_exactly_the_same_cluster_negatives():
    labels_all = [0, 1, 0, 2, 1, 0]
    for offset, b in [(0, 6), (3, 3)]:  # one worker, and worker 1 of 2
        local = torch.tensor(labels_all[offset : offset + b])
        mask = batch_negative_mask(local, torch.tensor(labels_all), offset)
        assert torch.equal(mask, hand_mask(labels_all, offset, b))
    gen = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.nn.functional.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1) for _ in range(2)
    )
    keep = hand_mask(labels_all, 0, 6)
    anchors, candidates = torch.cat([z1, z2]), torch.cat([z1, z2])
    expected = []
    for r in range(12):
        others = [c for c in range(12) if c not in (r, (r + 6) % 12)]
        pos = torch.exp(anchors[r] @ candidates[(r + 6) % 12] / 0.5)
        neg = sum(torch.exp(anchors[r] @ candidates[c] / 0.5) for c, k in zip(others, keep[r]) if k)
        expected.append(-torch.log(pos / (pos + neg)))
    torch.testing.assert_close(nt_xent(z1, z2, 0.5, negative_mask=keep), torch.stack(expected).mean())


def test_mask_other_clusters_in_the_method_and_on_a_queue():
    method = build({"name": "mcl", "stages": 1, "sampling": "mask_other_clusters", "stage_epochs": [1, 1]})
    method.active_stage.fill_(1)
    method.pseudo_labels.copy_(torch.arange(N) % 3)
    batch = views_batch()
    z1, z2 = method.stages[1].project(batch.views)
    keep = hand_mask((torch.arange(8) % 3).tolist(), 0, 8)
    torch.testing.assert_close(method(batch).loss, nt_xent(z1, z2, 0.5, negative_mask=keep))
    queue_labels = torch.tensor([0, 1, -1, 1, 0])
    expected = torch.tensor([[True, False, True, False, True], [False, True, True, True, False]])
    assert torch.equal(queue_negative_mask(torch.tensor([0, 1]), queue_labels), expected)
    q, k, queue = (torch.nn.functional.normalize(torch.randn(n, 4), dim=1) for n in (2, 2, 5))
    assert torch.equal(
        moco_loss(q, k, queue, 0.2, negative_mask=torch.ones(2, 5, dtype=torch.bool)), moco_loss(q, k, queue, 0.2)
    )


def test_moco_queue_keeps_the_labels_of_its_keys():
    method = build(
        {
            "name": "mcl",
            "base": "moco",
            "stages": 1,
            "sampling": "mask_other_clusters",
            "queue_size": 12,
            "stage_epochs": [1, 1],
        }
    )
    method.active_stage.fill_(1)
    method.pseudo_labels.copy_(torch.arange(N) % 4)
    for start in (0, 8):
        batch = views_batch()
        batch.indices = torch.arange(start, start + 8)
        method(batch)
        method.after_optimizer_step()
    # 16 keys through a queue of 12: rows 0-3 hold the newest (indices 12..15), 4-11 the rest.
    expected = (torch.cat([torch.arange(12, 16), torch.arange(4, 12)]) % 4).tolist()
    assert method.queue_labels[1].tolist() == expected


# -- checkpoints and a real run -------------------------------------------------------------
def resume_config():
    method = {"name": "mcl", "stages": 1, "stage_epochs": [1, 2], "clusters": 4}
    return tiny_config(method, optim={"epochs": 3}, data={"trifeature_train": 128}, **QUIET)


class KeepCheckpoints:
    def __init__(self, folder):
        self.folder = folder

    def report(self, metrics, checkpoint_dir):
        shutil.copytree(checkpoint_dir, self.folder / f"epoch{metrics['epoch']}")


def test_resume_mid_schedule_restores_stage_and_labels(tmp_path, monkeypatch):
    keep = KeepCheckpoints(tmp_path / "kept")
    full = Trainer(resume_config(), tmp_path / "full", reporter=keep)
    full.run()
    final = full.method.state_dict()
    # Mid stage 1: nothing may be clustered again.
    monkeypatch.setattr(mcl_module, "kmeans_assign", lambda *a, **k: pytest.fail("clustered again"))
    resumed = Trainer(resume_config(), tmp_path / "mid")
    resumed.restore(tmp_path / "kept" / "epoch2")
    assert resumed.method.active == 1 and resumed.start_epoch == 2
    assert torch.equal(resumed.method.pseudo_labels, final["pseudo_labels"])
    resumed.run()
    monkeypatch.undo()
    # After stage 0: the restored stage-0 model gives the same clustering.
    boundary = Trainer(resume_config(), tmp_path / "boundary")
    boundary.run(resume_from=tmp_path / "kept" / "epoch1")
    for trainer in (resumed, boundary):
        for name, value in trainer.method.state_dict().items():
            assert torch.equal(value, final[name]), name


def test_short_run_learns_and_logs_cluster_sizes(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config({"name": "mcl", "stages": 1}, eval={"linear_probe": False, "knn_k": 20})
    trainer = Trainer(cfg, tmp_path)
    before = colour_knn(trainer)
    with caplog.at_level(logging.INFO, logger="contrastlab"):
        metrics = trainer.run()
    after = colour_knn(trainer)
    assert after > before + 0.05, (before, after)
    assert {"val/stage0/knn_top1", "test/stage1/knn_top1", "val/backbone/knn_top1"} <= set(metrics)
    # Whole batches of the train part (256 generated images less the 26 of the validation split).
    assert trainer.train_images.shape[0] == 256 - 26
    assert metrics["mcl/stage"] == 1 and metrics["mcl/stage_samples"] == 32 * ((256 - 26) // 32)
    assert "cluster sizes [" in caplog.text
    events = EventAccumulator(str(next((tmp_path / "tensorboard").glob("events.out.tfevents.*"))))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/mcl/groups",
        "train/mcl/group_size_min",
        "train/mcl/stage0_cluster0_size",
        "train/mcl/stage_samples",
    } <= tags


# -- the suppression command's bookkeeping ---------------------------------------------------
def test_suppression_rescales_stages_and_checks_the_budget(tmp_path):
    from contrastlab.cli import InputError
    from contrastlab.commands import suppression

    assert suppression.scale_stage_epochs([3, 3, 3], 6) == [2, 2, 2]
    assert suppression.scale_stage_epochs([20, 10, 10], 8) == [4, 2, 2]
    assert sum(suppression.scale_stage_epochs([5, 1, 1], 11)) == 11
    simclr = tiny_config({"name": "simclr"})
    mcl = tiny_config({"name": "mcl", "stages": 1})
    suppression.check_same_budget(simclr, mcl)
    with pytest.raises(InputError, match="differ in `optim`"):
        suppression.check_same_budget(simclr, mcl.with_overrides({"optim.epochs": 3}))
    metrics = {f"test/{prefix}probe_{a}": 0.5 for prefix in ("", "stage0/", "stage1/") for a in suppression.ATTRIBUTES}
    metrics.update({name.replace("test/", "val/"): 0.9 for name in metrics})  # val never reaches the table
    anchors = {
        "raw_pixels": {f"test/probe_{a}": 0.3 for a in suppression.ATTRIBUTES},
        "untrained": {f"test/probe_{a}": 0.2 for a in suppression.ATTRIBUTES},
    }
    rows = suppression.table_rows({f"test/probe_{a}": 0.25 for a in suppression.ATTRIBUTES}, metrics, mcl, anchors)
    assert [r.key for r in rows] == [
        "anchor_raw_pixels",
        "anchor_untrained",
        "simclr_backbone",
        "mcl_stage0",
        "mcl_stage1",
        "mcl_integrated",
    ]
    assert rows[0].accuracy["shape"] == 0.3 and rows[3].accuracy["shape"] == 0.5
    table = suppression.write_outputs(rows, tmp_path, "note", step=2)
    assert "| SimCLR backbone | 25.0 | 25.0 | 25.0 |" in table
    assert (tmp_path / "suppression.csv").read_text().splitlines()[3] == "simclr_backbone,0.2500,0.2500,0.2500"


@pytest.mark.parametrize("init", ["scratch", "previous_stage"])
def test_stage_init_is_fresh_or_a_copy(init):
    method = build({"name": "mcl", "stages": 1, "negatives": "random", "init": init, "stage_epochs": [1, 1]})
    before = [p.clone() for p in method.stages[1].parameters()]
    method.on_epoch_start(1, FakeContext())
    copied = all(torch.equal(p, q) for p, q in zip(method.stages[0].parameters(), method.stages[1].parameters()))
    assert copied == (init == "previous_stage")
    if init == "scratch":
        assert all(torch.equal(p, q) for p, q in zip(before, method.stages[1].parameters()))
