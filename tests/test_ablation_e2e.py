"""A tiny retuned ablation through Ray, end to end: 2 variants × 2 seeds as one-worker runs in
one Tune grid (the fast path: each run in its Tune trial), after a one-trial Optuna search
for the variant that has something to tune.

One local Ray instance serves the whole module (under the host's Ray lock). The steps build
on each other, as a user would run them:
1. the first `ablate` has one run fail mid-way (a test hook): it is recorded with its error
   and every other run keeps its result; the report is written anyway;
2. `ablate --resume` computes only the failed run, from its last checkpoint;
3. a third `ablate` reuses every run (and the search) without starting any trial;
   another code version would reuse nothing.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from contrastlab.ablation.cache import CACHE_FILE, RunCache
from contrastlab.ablation.runner import plan_runs, run_ablation
from contrastlab.ablation.spec import load_spec
from contrastlab.raytrain.worker import FAIL_ONCE_ENV
from tests.helpers import tensorboard_logdir, tiny_config_dict

pytestmark = pytest.mark.ray
CODE = "e2e-code-1"
# Two epochs of 8 steps each: step 12 is in the second epoch, after the first checkpoint.
# The search trains one epoch (retune.overrides), so it never reaches this step.
FAIL_STEP = 12


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, host_lock):
    import ray

    saved = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S")
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "180"
    os.environ.setdefault("CONTRASTLAB_CACHE", str(tmp_path_factory.mktemp("data-cache")))
    with host_lock():
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
        try:
            yield
        finally:
            ray.shutdown()
            if saved is None:
                os.environ.pop("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", None)
            else:
                os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = saved


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    base = tiny_config_dict({"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16})
    raw = {
        "name": "tiny-e2e",
        "base": base,
        "components": ["synthesis"],
        "design": "leave_one_out",
        "seeds": 2,
        "metrics": ["linear_top1", "knn_top1"],
        # The injected failure must end its run (no relaunch), so that --resume has it to compute.
        "resources": {"workers": 1, "cpus_per_worker": 1, "max_concurrent": 2, "trial_retries": 0},
        "retune": {
            "parameters": {"method.synthetic_count": {"type": "int", "low": 4, "high": 8, "requires": "synthesis"}},
            "samples": 1,
            "metric": "val/knn_top1",
            "mode": "max",
            "overrides": {"optim.epochs": 1},
        },
    }
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ablation") / "out"


@pytest.fixture(scope="module")
def first(ray_cluster, spec_path: Path, output: Path, tmp_path_factory):
    marker = tmp_path_factory.mktemp("hook") / "fired"
    os.environ[FAIL_ONCE_ENV] = f"0:{FAIL_STEP}:{marker}"
    try:
        return run_ablation(load_spec(spec_path), output, code=CODE)
    finally:
        os.environ.pop(FAIL_ONCE_ENV, None)


@pytest.fixture(scope="module")
def resumed(first, spec_path: Path, output: Path):
    return first, run_ablation(load_spec(spec_path), output, resume=True, code=CODE)


@pytest.fixture(scope="module")
def again(resumed, spec_path: Path, output: Path):
    return run_ablation(load_spec(spec_path), output, code=CODE)


def by_run(outcome) -> dict[tuple[str, int], dict]:
    return {(r["variant"], r["seed"]): r for r in outcome.results}


def test_a_failed_run_is_recorded_and_the_others_are_kept(first, output: Path) -> None:
    results = by_run(first)
    assert set(results) == {(v, s) for v in ("full", "no_synthesis") for s in (0, 1)}
    failed = [key for key, r in results.items() if r.get("error")]
    # Concurrent runs may both reach the hook's step before its marker exists.
    assert 1 <= len(failed) <= 2
    assert all("InjectedFailure" in results[key]["error"] for key in failed)
    for key, result in results.items():
        if key not in failed:
            assert result["metrics"]["epoch"] == 2
            assert all(0 <= result["metrics"][f"{split}/linear_top1"] <= 1 for split in ("val", "test"))
            assert [epoch for epoch, _ in result["curves"]["val/knn_top1"]] == [1, 2]
            assert not [name for name in result["curves"] if name.startswith("test/")]
    cache = json.loads((output / CACHE_FILE).read_text())
    assert len(cache["runs"]) == 4 - len(failed) and len(cache["searches"]) == 1
    runs_csv = list(csv.DictReader((output / "report" / "runs.csv").open()))
    assert sorted(row["status"] for row in runs_csv).count("failed") == len(failed)


def test_retuned_values_are_applied_to_the_variant_that_has_them(first) -> None:
    results = by_run(first)
    tuned = results[("full", 0)]["overrides"]
    assert 4 <= tuned["method.synthetic_count"] <= 8
    assert results[("full", 1)]["overrides"] == tuned  # every seed of a variant runs at its best values
    assert results[("no_synthesis", 0)]["overrides"] == {"method.synthesis": False}  # nothing left to tune


def test_resume_computes_only_the_failed_runs(resumed) -> None:
    first, second = resumed
    assert second.failed == 0
    assert second.computed == first.failed and second.reused == 4 - first.failed
    for key, result in by_run(second).items():
        assert result["metrics"]["epoch"] == 2 and "error" not in result, key


def test_a_second_ablate_reuses_every_run(again, output: Path, spec_path: Path) -> None:
    assert (again.reused, again.computed, again.failed) == (4, 0, 0)
    assert len(list((output / "ray").glob("grid-*"))) == 2  # the third call started no Tune experiment
    cache = RunCache(output / CACHE_FILE)
    spec = load_spec(spec_path)
    # The retuned variant's runs are keyed by the values its search chose.
    tuned = {
        name: next(r["overrides"] for r in again.results if r["variant"] == name and r["seed"] == 0)
        for name in ("full", "no_synthesis")
    }
    tuned["no_synthesis"] = {}  # its override is the variant's own switch, not a tuned value
    assert all(run.cached for run in plan_runs(spec, output, CODE, cache, tuned))
    assert not any(run.cached for run in plan_runs(spec, output, "e2e-code-2", cache, tuned))


def test_report_has_the_table_and_plots(again, output: Path) -> None:
    report = output / "report"
    names = {p.name for p in report.iterdir()}
    assert {
        "report.md",
        "report.html",
        "summary.csv",
        "runs.csv",
        "bar_linear_top1.png",
        "bar_knn_top1.png",
        "curves_val_knn_top1.png",
        "curves_loss.png",
    } <= names
    text = (report / "report.md").read_text()
    assert "| no_synthesis | synthesis | 2 |" in text
    assert "Mode: retuned" in text and "Runs: 4 of 4 complete" in text and "4 reused" in text
    rows = list(csv.DictReader((report / "summary.csv").open()))
    assert {(row["metric"], row["variant"]) for row in rows} == {
        (m, v) for m in ("linear_top1", "knn_top1") for v in ("full", "no_synthesis")
    }
    assert all(row["val_mean"] and row["test_mean"] for row in rows)
    # The protocol is on the page: seeds, the split, the anchors and what two seeds can show.
    assert "Seeds used: 0, 1" in text and "## Anchors" in text and "Verdicts (test split)" in text
    assert "Smallest attainable p with 2 seeds: 0.50" in text and "significant at α = 0.05 with 2 seeds" in text
    anchors = json.loads((output / "anchors.json").read_text())
    for anchor in ("raw_pixels", "untrained"):
        assert {f"{s}/{m}" for s in ("val", "test") for m in ("knn_top1", "linear_top1")} <= set(anchors[anchor])


def test_tensorboard_runs_are_grouped_by_variant_and_seed(again, output: Path) -> None:
    for variant in ("full", "no_synthesis"):
        for seed in (0, 1):
            run_dir = output / "runs" / variant / f"seed{seed}"
            assert list((run_dir / "tensorboard").glob("events.*")), run_dir
            assert not (run_dir / "ablation_hparams").exists(), run_dir
            assert yaml.safe_load((run_dir / "manifest.yaml").read_text())["seed"] == seed


def test_tensorboard_has_one_labelled_session_per_run_and_the_ablation_layout(again, output: Path) -> None:
    served = tensorboard_logdir(output / "runs")
    sessions = {(s["ablation/variant"], int(s["ablation/seed"])): s for s in served["sessions"].values()}
    assert len(served["sessions"]) == 4 and set(sessions) == {(v, k) for v in ("full", "no_synthesis") for k in (0, 1)}
    assert all(s["ablation/component/synthesis"] is (v == "full") for (v, _), s in sessions.items())
    assert "ablation/tuned/method.synthetic_count" in sessions[("full", 0)]
    for variant in ("full", "no_synthesis"):
        band = served["scalars"][f"mean_over_seeds/{variant}"]
        assert {f"over_seeds/val/knn_top1/{part}" for part in ("mean", "lower", "upper")} <= set(band)
    assert any(c.title.startswith("ablation tiny-e2e") for c in served["layout"].category)
    assert any(tag.startswith("report/bar_") for tag in served["images"]["."])
