"""The training loop: smoke runs, exact resume from checkpoints, NaN handling."""

from __future__ import annotations

import pytest
import torch

from contrastlab.engine import NonFiniteLossError, Trainer, load_checkpoint, train
from contrastlab.engine.checkpoint import CheckpointError
from contrastlab.optim import LARS, warmup_cosine
from tests.helpers import tiny_config


def params_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.method.state_dict().items()}


@pytest.mark.parametrize("method", [{"name": "simclr"}, {"name": "moco", "queue_size": 64}])
def test_two_step_smoke(tmp_path, method):
    cfg = tiny_config(method, optim={"epochs": 1}, data={"trifeature_train": 64})
    metrics = train(cfg, tmp_path)
    assert metrics["epoch"] == 1 and torch.isfinite(torch.tensor(metrics["loss"]))
    for name in ("knn_top1", "linear_top1", "alignment", "uniformity", "probe_colour"):
        assert f"val/{name}" in metrics and f"test/{name}" in metrics
    assert not any(key.split("/")[0] in ("val", "test") for key in metrics if key.count("/") == 0)
    assert (tmp_path / "manifest.yaml").is_file() and (tmp_path / "checkpoints/last/state.pt").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class StopAfterFirstEpoch:
    def report(self, metrics, checkpoint_dir):
        raise KeyboardInterrupt


@pytest.mark.parametrize("method", [{"name": "simclr"}, {"name": "moco", "queue_size": 64}])
def test_resume_gives_the_uninterrupted_run(tmp_path, method):
    cfg = tiny_config(method, optim={"epochs": 2}, eval={"knn_every": 0, "linear_probe": False})
    straight = Trainer(cfg, tmp_path / "straight")
    straight_metrics = straight.run()

    interrupted = Trainer(cfg, tmp_path / "resumed", reporter=StopAfterFirstEpoch())
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    resumed = Trainer(cfg, tmp_path / "resumed")
    resumed_metrics = resumed.run()
    assert resumed_metrics["loss"] == pytest.approx(straight_metrics["loss"], rel=1e-5)
    a, b = params_of(straight), params_of(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_checkpoint_round_trip_same_weights_and_next_loss(tmp_path):
    cfg = tiny_config(optim={"epochs": 1}, eval={"knn_every": 0, "linear_probe": False})
    first = Trainer(cfg, tmp_path / "a")
    first.run()
    state = load_checkpoint(tmp_path / "a/checkpoints/last")
    assert state["epoch"] == 1 and state["step"] == first.global_step

    second = Trainer(cfg, tmp_path / "b")
    second.restore(tmp_path / "a/checkpoints/last")
    for key, value in params_of(first).items():
        torch.testing.assert_close(params_of(second)[key], value)
    batch = next(iter(first.method.batch_sampler(first.ctx).epoch(1)))
    images = first.train_images[batch]
    generator = torch.Generator().manual_seed(3)
    views = first.augment.two_views(images, torch.Generator().manual_seed(3))
    from contrastlab.methods import TrainBatch

    with torch.no_grad():
        first.method.eval(), second.method.eval()
        loss_a = first.method(TrainBatch(views, batch, 1, 0, generator)).loss
        loss_b = second.method(TrainBatch(views, batch, 1, 0, torch.Generator().manual_seed(3))).loss
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-6)


def test_checkpoint_from_other_config_is_refused(tmp_path):
    cfg = tiny_config(optim={"epochs": 1}, eval={"knn_every": 0, "linear_probe": False})
    train(cfg, tmp_path)
    changed = cfg.with_overrides({"method.temperature": 0.2})
    provenance = {name: (tmp_path / name).read_bytes() for name in ("config.yaml", "manifest.yaml")}
    events = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    with pytest.raises(CheckpointError, match="different config"):
        Trainer(changed, tmp_path).run()
    # Refused before anything was written: the folder still describes the checkpoint's config.
    assert {name: (tmp_path / name).read_bytes() for name in provenance} == provenance
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == events


def test_nan_loss_names_the_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(optim={"epochs": 3}, eval={"knn_every": 0, "linear_probe": False})
    trainer = Trainer(cfg, tmp_path)
    steps_per_epoch = trainer.steps_per_epoch
    original = type(trainer.method).compute_loss

    def poisoned(self, batch):
        out = original(self, batch)
        if batch.step == steps_per_epoch + 1:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(type(trainer.method), "compute_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=f"step {steps_per_epoch + 1} \\(epoch 2\\)"):
        trainer.run()
    state = load_checkpoint(tmp_path / "checkpoints/last")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_warmup_cosine_schedule():
    factor = warmup_cosine(total_steps=110, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0, abs=1e-12)


def test_lars_trust_ratio_matches_hand_computation():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.0, 2.0]])
    bias.grad = torch.tensor([0.5])
    opt = LARS([weight, bias], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1)
    opt.step()
    # trust = eta * |w| / |g| = 0.1 * 5 / 2 = 0.25, so the step is 0.25 * g
    torch.testing.assert_close(weight.data, torch.tensor([[3.0, 3.5]]))
    torch.testing.assert_close(bias.data, torch.tensor([0.5]))  # 1-d: plain SGD


def test_eval_command_matches_the_run_and_random_init(tmp_path, capsys):
    import json

    import yaml

    from contrastlab.cli import main
    from tests.helpers import tiny_config_dict

    data = tiny_config_dict(optim={"epochs": 1}, eval={"linear_probe": False, "align_uniform": False})
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["train", str(config_file), "--output", str(tmp_path / "run")]) == 0
    trained = json.loads(capsys.readouterr().out.split("\nresults:")[0])
    assert main(["eval", str(tmp_path / "run")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for name in ("val/knn_top1", "test/knn_top1"):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-4)
    assert main(["eval", "--random-init", str(config_file)]) == 0
    assert {"val/knn_top1", "test/knn_top1"} <= set(json.loads(capsys.readouterr().out))
    assert main(["eval", "--anchors", str(config_file)]) == 0
    anchors = json.loads(capsys.readouterr().out)
    assert {f"{a}/{s}/knn_top1" for a in ("raw_pixels", "untrained") for s in ("val", "test")} <= set(anchors)


def test_epochs_before_the_last_read_val_only(tmp_path):
    """Selection (ASHA, TPE, retuning) sees the per-epoch metrics: they never touch test."""
    cfg = tiny_config(optim={"epochs": 2}, data={"trifeature_train": 64}, eval={"linear_probe": False})
    trainer = Trainer(cfg, tmp_path)
    final = trainer.run()
    first = trainer.history[0]
    assert "val/knn_top1" in first and not [k for k in first if k.startswith("test/")]
    assert "test/knn_top1" in final and "val/knn_top1" in final


def test_anchors_are_kept_and_reused_while_the_experiment_and_seeds_stay(tmp_path, monkeypatch):
    from contrastlab.engine import anchors as anchors_module

    cfg = tiny_config(data={"trifeature_train": 64}, eval={"linear_probe": False, "align_uniform": False})
    path = tmp_path / "anchors.json"
    first = anchors_module.cached_anchors(cfg, [0], path)
    assert path.is_file() and {"val/knn_top1", "test/knn_top1"} <= set(first["raw_pixels"])
    assert 0.0 <= first["untrained"]["val/knn_top1"] <= 1.0

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed although the saved anchors match")

    monkeypatch.setattr(anchors_module, "compute_anchors", must_not_run)
    assert anchors_module.cached_anchors(cfg, [0], path)["raw_pixels"] == first["raw_pixels"]
    with pytest.raises(AssertionError, match="recomputed"):
        anchors_module.cached_anchors(cfg, [0, 1], path)  # other seeds: computed afresh
