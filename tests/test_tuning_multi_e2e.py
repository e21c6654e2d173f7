"""A tiny two-objective study under Ray, grown from 2 to 3 trials.

One study serves every test here (Ray tests stay lean): `tiny_study_dict` with kNN top-1
(max) and the run's training seconds (min), two one-epoch trials, then `--resume --samples 3`
adds a third to the same Optuna study; `--samples 1` afterwards is refused.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.study import StudyDirection
from optuna.trial import TrialState

from contrastlab.cli import main
from tests.helpers import snapshot, tiny_study_dict, write

pytestmark = pytest.mark.ray


def spec_dict() -> dict:
    spec = tiny_study_dict(2)
    for key in ("metric", "mode", "scheduler"):
        spec.pop(key)
    spec["objectives"] = [{"metric": "knn_top1", "mode": "max"}, {"metric": "train_seconds", "mode": "min"}]
    spec["space"] = {
        "optim.lr": {"type": "categorical", "choices": [0.05, 0.1, 0.2]},
        "model.width": {"type": "categorical", "choices": [4, 8]},
    }
    spec["max_concurrent_trials"] = 1
    return spec


def load(output: Path) -> tuple[optuna.Study, list[str]]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=names[0], storage=storage), names


def last_results(output: Path) -> dict[str, dict]:
    """Tune trial id -> the last result Tune recorded (its own result.json files, all experiments)."""
    results = {}
    for path in (output / "ray").glob("tune*/*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            results[lines[-1]["trial_id"]] = lines[-1]
    return results


@pytest.fixture(scope="module")
def study(local_ray, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    spec_file = write(folder / "multi.yaml", spec_dict())
    output = folder / "out"
    assert main(["tune", str(spec_file), "--output", str(output), "--address", local_ray]) == 0
    first, _ = load(output)
    first_numbers = [t.number for t in first.get_trials(deepcopy=False)]
    grown = ["tune", str(spec_file), "--output", str(output), "--resume", "--samples", "3", "--address", local_ray]
    assert main(grown) == 0
    return {"output": output, "spec_file": spec_file, "first": first_numbers, "local_ray": local_ray}


def test_the_storage_has_both_directions_and_each_trial_both_values(study):
    optuna_study, names = load(study["output"])
    assert len(names) == 1  # the growth continued the same study
    assert optuna_study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    trials = optuna_study.get_trials(deepcopy=False)
    assert study["first"] == [0, 1] and [t.number for t in trials] == [0, 1, 2]
    results = last_results(study["output"])
    assert {t.user_attrs["tune_trial_id"] for t in trials} == set(results)  # three distinct Tune trials
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        result = results[trial.user_attrs["tune_trial_id"]]
        assert trial.values == [result["val/knn_top1"], result["train_seconds"]]
        assert 0 < result["train_seconds"] and result["train_seconds"] == pytest.approx(result["epoch_seconds"])


def test_outputs_list_the_pareto_front(study):
    output = study["output"]
    optuna_study, _ = load(output)
    values = {t.number: t.values for t in optuna_study.get_trials(deepcopy=False)}

    def beats(a, b):  # max the first, min the second
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    expected = {n for n, v in values.items() if not any(beats(w, v) for m, w in values.items() if m != n)}
    with (output / "pareto.csv").open() as handle:
        front = {int(row["number"]): row for row in csv.DictReader(handle)}
    assert set(front) == expected
    for number, row in front.items():
        assert [float(row["val/knn_top1"]), float(row["train_seconds"])] == values[number]
        config = yaml.safe_load((output / row["config"]).read_text())
        assert config["optim"]["epochs"] == 1
    assert {p.name for p in (output / "best_configs").iterdir()} == {f"trial_{n}.yaml" for n in expected}
    assert (output / "pareto_front.png").read_bytes()[:4] == b"\x89PNG"
    assert not (output / "best_config.yaml").exists()  # no single best among several objectives
    record = yaml.safe_load((output / "study_spec.yaml").read_text())
    assert record["num_samples"] == 3 and record["experiment_name"] == "tune-grow1"


def test_fewer_samples_than_trials_run_is_refused(study, capsys):
    output = study["output"]
    before = snapshot(output)
    argv = ["tune", str(study["spec_file"]), "--output", str(output), "--resume", "--samples", "1"]
    assert main([*argv, "--address", study["local_ray"]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--samples" in lines[0] and "3 trials" in lines[0], lines
    assert snapshot(output) == before
