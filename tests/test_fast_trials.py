"""One-worker trials run in the Tune trial itself (the fast path), and Ray Train when forced.

Two small studies on one local Ray instance (2 CPUs):
  both paths    three trials, one at a time (GOOD -> COMPLETE, SLOW -> PRUNED by ASHA,
                NAN -> FAIL), run with `resources.trial_path: train` and `auto`: the same
                Optuna states, reasons and per-epoch values, and the same run folders.
  fast path     three one-CPU trials, two at a time: the first two run at the same time;
                one of them loses its process once (`CONTRASTLAB_TEST_EXIT_ONCE`) and is
                relaunched from its checkpoint under the same Optuna trial; the NaN trial
                is relaunched by Tune but never trains again.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.study.checkpoints import TUNE_COPIES_KEPT, checkpoint_epoch
from contrastlab.study.fast import EXIT_ONCE_ENV
from contrastlab.study.trial import FINAL_ERROR_FILE
from tests.helpers import tiny_config_dict

pytestmark = pytest.mark.ray
GOOD, SLOW, NAN = 0.5, 1.0e-6, 1.0e30
STEPS_PER_EPOCH = 7  # 256 images less a tenth for val: 7 full batches of 32
EPOCHS = 20  # about 3 s per trial: longer than the second actor takes to start


def spec(points: list[dict], **top) -> dict:
    return {
        "name": "paths",
        "base": tiny_config_dict(eval={"probe_epochs": 5, "align_uniform": False, "knn_every": 0}),
        "metric": "loss",
        "mode": "min",
        "num_samples": len(points),
        "space": {
            "optim.lr": {"type": "categorical", "choices": [GOOD, SLOW, NAN]},
            "eval.knn_k": {"type": "categorical", "choices": [10, 20]},
        },
        "points_to_evaluate": points,
        **top,
    }


def run_study(folder: Path, raw: dict, address: str) -> optuna.Study:
    folder.mkdir(parents=True)
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["tune", str(spec_file), "--output", str(folder / "out"), "--address", address]) == 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'out' / 'study.db'}")
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def tune_results(output: Path, trial_id: str) -> list[dict]:
    lines = (output / "ray" / "tune" / trial_id / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def attempts(output: Path, trial_id: str) -> list[dict]:
    return [json.loads(line) for line in (output / "trials" / trial_id / "attempts.jsonl").read_text().splitlines()]


def reason(trial: optuna.trial.FrozenTrial) -> str | None:
    text = trial.user_attrs.get("fail_reason")
    return text.split(" kept in ")[0] if text else None


def test_both_paths_give_the_same_trials(local_ray, tmp_path):
    points = [{"optim.lr": GOOD, "eval.knn_k": 20}, {"optim.lr": SLOW}, {"optim.lr": NAN}]
    top = {"scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}, "max_concurrent_trials": 1}
    studies = {}
    for path in ("train", "auto"):
        raw = spec(points, resources={"workers": 1, "cpus_per_worker": 1, "trial_path": path}, **top)
        studies[path] = run_study(tmp_path / path, raw, local_ray)
    trials = {path: sorted(study.get_trials(), key=lambda t: t.number) for path, study in studies.items()}
    assert [t.state.name for t in trials["auto"]] == ["COMPLETE", "PRUNED", "FAIL"]
    for train, fast in zip(trials["train"], trials["auto"]):
        assert fast.state == train.state and fast.params == train.params
        assert sorted(fast.intermediate_values) == sorted(train.intermediate_values)
        for epoch, value in train.intermediate_values.items():
            assert fast.intermediate_values[epoch] == pytest.approx(value, rel=1e-5)
        # The same reason; it names the trial's own run folder, which differs.
        assert reason(fast) == reason(train)
    assert trials["auto"][2].user_attrs["fail_reason"].startswith("NonFiniteLossError: loss became NaN")
    # The same run folders, and the final metrics of the complete trial agree.
    for path, rows in trials.items():
        for trial in rows:
            assert (tmp_path / path / "out" / "trials" / trial.user_attrs["tune_trial_id"] / "manifest.yaml").is_file()
    finals = {
        path: tune_results(tmp_path / path / "out", rows[0].user_attrs["tune_trial_id"])[-1]
        for path, rows in trials.items()
    }
    for name in ("val/knn_top1", "val/linear_top1", "test/linear_top1"):
        assert finals["auto"][name] == pytest.approx(finals["train"][name], abs=1e-6), name


def test_one_cpu_trials_run_together_and_only_lost_actors_are_retried(local_ray, tmp_path, monkeypatch):
    marker = tmp_path / "exited"
    # In the last epoch, after a checkpoint each epoch.
    monkeypatch.setenv(EXIT_ONCE_ENV, f"{(EPOCHS - 1) * STEPS_PER_EPOCH + 2}:{marker}")
    points = [{"optim.lr": GOOD, "eval.knn_k": 20}, {"optim.lr": GOOD, "eval.knn_k": 10}, {"optim.lr": NAN}]
    raw = spec(points, scheduler={"type": "fifo"}, resources={"workers": 1, "cpus_per_worker": 1})
    raw["base"]["optim"]["epochs"] = EPOCHS
    study = run_study(tmp_path / "fast", raw, local_ray)
    output = tmp_path / "fast" / "out"
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL"]  # one Optuna trial each
    ids = [t.user_attrs["tune_trial_id"] for t in trials]
    assert marker.exists()
    # Exactly one of the two good trials lost its process and was relaunched; it resumed from
    # its last checkpoint, so no epoch was reported twice.
    relaunched = [i for i in ids[:2] if len(attempts(output, i)) == 2]
    assert len(relaunched) == 1 and all(len(attempts(output, i)) in (1, 2) for i in ids[:2])
    assert [r["epoch"] for r in tune_results(output, relaunched[0])] == list(range(1, EPOCHS + 1))
    # The two good trials ran at the same time on two CPUs, in two processes: each was still
    # running at its first report (start + Tune's time_total_s), after both had started.
    firsts = [tune_results(output, i)[0] for i in ids[:2]]
    starts = [attempts(output, i)[0]["time"] for i in ids[:2]]
    reported = [
        start + max(r["time_total_s"] for r in tune_results(output, i) if r["pid"] == first["pid"])
        for i, start, first in zip(ids[:2], starts, firsts)
    ]
    assert max(starts) < min(reported), (starts, reported)
    assert firsts[0]["pid"] != firsts[1]["pid"]
    # The NaN trial trained once: Tune relaunched it, the relaunches stopped at once.
    failed = trials[2]
    assert failed.user_attrs["fail_reason"].startswith("NonFiniteLossError: loss became NaN")
    assert len(attempts(output, ids[2])) == 1
    assert json.loads((output / "trials" / ids[2] / FINAL_ERROR_FILE).read_text())["trial_id"] == ids[2]
    errors = (output / "ray" / "tune" / ids[2] / "error.txt").read_text()
    assert errors.count("Failure #") == 3  # the first attempt and resources.trial_retries (2) relaunches
    # Tune kept one copy of each trial's checkpoints, not one per epoch; both good trials are
    # among the best keep_checkpoints (3), so the retention rule leaves them that copy.
    copies = {i: sorted(p.name for p in (output / "ray" / "tune" / i).glob("checkpoint_*")) for i in ids}
    assert [len(copies[i]) for i in ids] == [TUNE_COPIES_KEPT, TUNE_COPIES_KEPT, 0], copies
    assert all(checkpoint_epoch(output / "ray" / "tune" / i / copies[i][-1]) == EPOCHS for i in ids[:2])
