"""TensorBoard as TensorBoard itself serves it: grouped tags, one typed HParams session per
run, the HParams declaration and custom-scalars layout of a study and of an ablation, the
report's figures. Everything is read back through TensorBoard's multiplexer, data provider
and plugins (tests.helpers.tensorboard_logdir), not through our own writer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from contrastlab.ablation.cache import RunCache
from contrastlab.ablation.runner import plan_runs
from contrastlab.ablation.spec import spec_from_dict
from contrastlab.ablation.tensorboard import label_runs, write_ablation_tensorboard
from contrastlab.engine import train
from contrastlab.tracking import RunWriter, tag_for, write_run_labels
from contrastlab.tracking.hparams import flatten
from contrastlab.tuning.callbacks import StudyCallback, write_experiment_summary
from contrastlab.tuning.space_spec import parse_space
from tests.helpers import tensorboard_logdir, tiny_config, tiny_config_dict

GROUPS = ("train/", "val/", "test/", "system/")


def test_metric_keys_map_to_grouped_tags() -> None:
    expected = {
        "loss": "train/loss",
        "lr": "train/lr",
        "synthetic_similarity": "train/synthetic_similarity",
        "mcl/stage": "train/mcl/stage",
        "throughput": "system/throughput",
        "epoch_seconds": "system/epoch_seconds",
        "val/knn_top1": "val/knn_top1",
        "test/stage0/linear_top1": "test/stage0/linear_top1",
        "epoch": None,
    }
    assert {key: tag_for(key) for key in expected} == expected


def test_a_run_writes_grouped_tags_and_one_typed_session(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    labels = {"variant": "full", "seed": 3, "component/debias": True, "component/pool": None}
    write_run_labels(run_dir, labels, categories=["component/pool"])
    cfg = tiny_config({"name": "sscl", "hard_pool_size": 16, "synthetic_count": 8}, optim={"epochs": 1})
    metrics = train(cfg, run_dir)
    served = tensorboard_logdir(tmp_path)

    tags = served["scalars"]["run/tensorboard"]
    assert all(tag.startswith(GROUPS) for tag in tags), sorted(tags)
    must = {"train/loss", "train/lr", "train/synthetic_similarity", "val/knn_top1", "test/linear_top1"}
    assert must | {"system/throughput", "system/epoch_seconds", "system/host_memory_mib"} <= set(tags)
    assert tags["train/loss"] == [(1, np.float32(metrics["loss"]))]
    assert math.isclose(tags["test/linear_top1"][-1][1], metrics["test/linear_top1"], rel_tol=1e-6)

    # One session for the run (none from anywhere else), its values typed as written.
    assert list(served["sessions"]) == [cfg.name]
    session = served["sessions"][cfg.name]
    assert session["variant"] == "full" and session["seed"] == 3.0
    assert session["component/debias"] is True and session["component/pool"] == "null"
    assert session["eval.linear_probe"] is True and session["output.tensorboard"] is True
    assert session["optim.lr"] == cfg.optim.lr and session["method.name"] == "sscl"
    assert session["optim.grad_clip"] == "null"  # a null config field is the category "null"
    assert session["metrics"]["val/knn_top1"] == np.float32(metrics["val/knn_top1"])


# -- a study --------------------------------------------------------------------------------------
SPACE = {
    "method.temperature": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
    "model.projector_bn": {"type": "categorical", "choices": [True, False]},
    "optim.grad_clip": {"type": "categorical", "choices": [None, 1.0, 5.0]},
    "optim.optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
}


def fake_trial(trial_id: str, params: dict, results: list[dict]) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"params": params}, last_result=results[-1] if results else {})


def test_a_study_folder_has_typed_columns_every_trial_and_an_overlay(tmp_path: Path) -> None:
    space = parse_space(SPACE, "space.yaml")
    root = tmp_path / "tensorboard"
    write_experiment_summary(root, space, "val/knn_top1")
    callback = StudyCallback(root, "val/knn_top1", base_epochs=3, max_t=3, space=space)
    curves = {"a": [0.2, 0.4, 0.5], "b": [0.1], "c": [0.3, 0.35]}  # b is pruned after one epoch
    params = {
        "a": {"method.temperature": 0.1, "model.projector_bn": True, "optim.grad_clip": None, "optim.optimizer": "sgd"},
        "b": {
            "method.temperature": 0.5,
            "model.projector_bn": False,
            "optim.grad_clip": 5.0,
            "optim.optimizer": "adamw",
        },
        "c": {"method.temperature": 0.2, "model.projector_bn": True, "optim.grad_clip": 1.0, "optim.optimizer": "sgd"},
    }
    for trial_id, values in curves.items():
        results = [
            {"epoch": e + 1, "loss": 5.0 - e, "val/knn_top1": v, "throughput": 100.0} for e, v in enumerate(values)
        ]
        trial = fake_trial(trial_id, params[trial_id], results)
        for result in results:
            callback.on_trial_result(0, [], trial, result)
        (callback.on_trial_error if trial_id == "c" else callback.on_trial_complete)(0, [], trial)
    served = tensorboard_logdir(root)

    names = [name for name, _, _ in served["experiment"]]
    assert names == [*SPACE, "trial_state"]
    kinds = {name: (kind, domain) for name, kind, domain in served["experiment"]}
    assert kinds["model.projector_bn"] == ("DATA_TYPE_BOOL", [False, True])
    assert kinds["optim.grad_clip"] == ("DATA_TYPE_STRING", ["1.0", "5.0", "null"])
    assert kinds["optim.optimizer"] == ("DATA_TYPE_STRING", ["adamw", "sgd"])
    assert kinds["method.temperature"][0] == "DATA_TYPE_FLOAT64"
    assert served["metric_tags"][0] == "val/knn_top1" and "train/loss" in served["metric_tags"]

    sessions = served["sessions"]
    assert sorted(sessions) == ["a", "b", "c"]
    assert [sessions[t]["trial_state"] for t in "abc"] == ["COMPLETE", "PRUNED", "FAIL"]
    assert sessions["a"]["model.projector_bn"] is True and sessions["b"]["model.projector_bn"] is False
    assert [sessions[t]["optim.grad_clip"] for t in "abc"] == ["null", "5.0", "1.0"]
    for trial_id, values in curves.items():
        assert sessions[trial_id]["metrics"]["val/knn_top1"] == np.float32(values[-1])
        points = served["scalars"][trial_id]["val/knn_top1"]
        assert points == [(e + 1, np.float32(v)) for e, v in enumerate(values)]
        assert set(served["scalars"][trial_id]) == {"train/loss", "val/knn_top1", "system/throughput"}

    charts = [chart for category in served["layout"].category for chart in category.chart]
    overlay = next(chart for chart in charts if chart.multiline.tag == ["^val/knn_top1$"])
    assert "every trial" in overlay.title


# -- an ablation ------------------------------------------------------------------------------------
SSCL = {"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16}


def ablation_spec(tmp_path: Path):
    raw = {
        "name": "tiny",
        "base": tiny_config_dict(dict(SSCL)),
        "components": ["synthesis", "debias"],
        "seeds": 2,
        "metrics": ["knn_top1"],
    }
    return spec_from_dict(raw, tmp_path / "spec.yaml")


def tiny_png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1.5), dpi=40)
    axes.plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def test_an_ablation_folder_has_one_session_per_run_bands_and_figures(tmp_path: Path) -> None:
    spec = ablation_spec(tmp_path)
    plan = plan_runs(spec, tmp_path, "code", RunCache(tmp_path / "cache.json"))
    label_runs(plan, plan)
    rng = np.random.default_rng(0)
    results = []
    for run in plan:  # what each run's engine writes, then what the ablation records of it
        writer = RunWriter(run.run_dir / "tensorboard")
        knn = [float(v) for v in rng.uniform(0.2, 0.9, size=3)]
        for epoch, value in enumerate(knn, start=1):
            writer.scalars({"loss": 4.0 / epoch, "val/knn_top1": value, "throughput": 50.0, "epoch": epoch}, epoch)
        writer.hparams(run.config.to_dict())
        writer.close()
        curves = {"val/knn_top1": list(enumerate(knn, start=1)), "loss": [(e, 4.0 / e) for e in (1, 2, 3)]}
        results.append({"variant": run.variant.name, "seed": run.seed, "metrics": {"epoch": 3}, "curves": curves})
    tiny_png(tmp_path / "report" / "bar_knn_top1.png")
    write_ablation_tensorboard(tmp_path, spec, plan, results)
    write_ablation_tensorboard(tmp_path, spec, plan, results)  # rewritten, not appended
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) == 1
    served = tensorboard_logdir(tmp_path / "runs")

    # One session per run, named by the run's config name, led by the ablation's labels.
    sessions = served["sessions"]
    assert sorted(sessions) == sorted(run.config.name for run in plan)
    for run in plan:
        session = sessions[run.config.name]
        assert session["ablation/variant"] == run.variant.name and session["ablation/seed"] == float(run.seed)
        for component, value in run.variant.settings.items():
            assert session[f"ablation/component/{component}"] == value and isinstance(value, bool)
    # TensorBoard lists the leading columns (labels, what varies) first, each part by name.
    columns = [name for name, _, _ in served["experiment"]]
    labels = [f"ablation/{name}" for name in plan[0].hparams()]
    flat = [flatten(run.config.to_dict()) for run in plan]
    varying = {k for k in flat[0] if len({repr(f.get(k)) for f in flat}) > 1} | set(labels)
    constant = set(flat[0]) - varying
    assert {"ablation/variant", "ablation/seed", "ablation/component/synthesis", "seed", "name"} <= varying
    assert columns == sorted(varying) + sorted(constant) and constant
    assert columns[:4] == [
        "ablation/component/debias",
        "ablation/component/synthesis",
        "ablation/seed",
        "ablation/variant",
    ]
    assert served["metric_tags"] == ["val/knn_top1", "test/knn_top1", "train/loss"]

    # The mean and a band of one sample SD over seeds, per epoch, in one run per variant.
    for variant in spec.variants:
        mine = [r for r in results if r["variant"] == variant.name]
        band_run = served["scalars"][f"mean_over_seeds/{variant.name}"]
        for epoch in (1, 2, 3):
            values = [dict(r["curves"]["val/knn_top1"])[epoch] for r in mine]
            mean, sd = statistics.fmean(values), statistics.stdev(values)
            got = [dict(band_run[f"over_seeds/val/knn_top1/{part}"])[epoch] for part in ("mean", "lower", "upper")]
            assert np.allclose(got, [mean, mean - sd, mean + sd], atol=1e-6)

    categories = {category.title: category for category in served["layout"].category}
    assert set(categories) == {"ablation tiny: each variant over seeds", "ablation tiny: every run (variant/seed)"}
    band = categories["ablation tiny: each variant over seeds"].chart[0]
    assert [(s.value, s.lower, s.upper) for s in band.margin.series] == [
        ("over_seeds/val/knn_top1/mean", "over_seeds/val/knn_top1/lower", "over_seeds/val/knn_top1/upper")
    ]
    every_run = categories["ablation tiny: every run (variant/seed)"].chart[0]
    assert list(every_run.multiline.tag) == ["^val/knn_top1$"]
    assert served["images"] == {".": {"report/bar_knn_top1"}}


def test_a_study_logs_its_report_figures_once_as_images(tmp_path: Path) -> None:
    from contrastlab.tuning.tensorboard import log_study_figures

    assert log_study_figures(tmp_path) == 0 and not (tmp_path / "tensorboard").exists()  # no report yet
    for name in ("importances", "history"):
        tiny_png(tmp_path / f"{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert log_study_figures(tmp_path) == 2
    assert log_study_figures(tmp_path) == 2  # again: replaces, does not add
    assert len(list((tmp_path / "tensorboard" / "report").glob("events.out.tfevents.*"))) == 1
    assert tensorboard_logdir(tmp_path / "tensorboard")["images"] == {
        "report": {"report/history", "report/importances"}
    }
