"""A tiny study through Ray Tune, interrupted by killing its driver, then resumed.

One study serves every test here (Ray tests must stay lean): four trials of a tiny config on
the default (fast) path, run one at a time, with points chosen so the outcome is deterministic:
  #0 lr 0.5            trains both epochs            -> COMPLETE
  #1 lr 0.5, knn_k 10  held in its second epoch (`CONTRASTLAB_TEST_HOLD`) while the driver is
                       killed; `--resume` continues it from the epoch-1 checkpoint -> COMPLETE
  #2 lr 1e-6           loss clearly worse at epoch 1, ASHA (grace 1) stops it -> PRUNED
  #3 lr 1e30           loss becomes NaN at the first step -> FAIL, with the reason
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.config import load_config
from contrastlab.study.fast import HOLD_ENV
from contrastlab.tuning.orphans import RESUMED_FROM
from tests.helpers import ROOT, tiny_config_dict

pytestmark = pytest.mark.ray
GOOD, SLOW, NAN = 0.5, 1.0e-6, 1.0e30
SAMPLES = 4
SECOND_EPOCH_STEP = 8  # 256 images less a tenth for val: 7 batches of 32 an epoch


def study_spec() -> dict:
    return {
        "name": "e2e",
        "base": tiny_config_dict(eval={"probe_epochs": 5, "align_uniform": False}),
        "metric": "loss",
        "mode": "min",
        "num_samples": SAMPLES,
        "space": {
            "optim.lr": {"type": "categorical", "choices": [GOOD, SLOW, NAN]},
            "eval.knn_k": {"type": "categorical", "choices": [10, 20]},
        },
        "points_to_evaluate": [
            {"optim.lr": GOOD, "eval.knn_k": 20},
            {"optim.lr": GOOD, "eval.knn_k": 10},
            {"optim.lr": SLOW},
            {"optim.lr": NAN},
        ],
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "max_concurrent_trials": 1,
    }


def study_names(output: Path) -> list[str]:
    """The studies in the driver's database, read without writing to it.

    Opening the file with Optuna's storage while the driver is still creating its schema
    would race it (both insert the schema version); a read-only connection cannot.
    """
    try:
        with closing(sqlite3.connect(f"file:{output / 'study.db'}?mode=ro", uri=True)) as db:
            return [name for (name,) in db.execute("SELECT study_name FROM studies")]
    except sqlite3.OperationalError:  # no file or no table yet
        return []


def load_study(output: Path) -> optuna.Study:
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    return optuna.load_study(study_name=study_names(output)[0], storage=storage)


def wait_for_first_epoch_of_second_trial(
    output: Path, process: subprocess.Popen, held: Path, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the study ended before it could be interrupted"
        # The second trial is held in its second epoch; the driver creates the database file
        # first and the study in it a moment later.
        holding = held.is_file() and len(held.read_text().splitlines()) >= 2
        if holding and (output / "study.db").is_file() and study_names(output):
            trials = load_study(output).get_trials(deepcopy=False)
            if len(trials) >= 2 and trials[1].intermediate_values:
                return
        time.sleep(1)
    raise AssertionError("the second trial never reported its first epoch")


@pytest.fixture(scope="module")
def study(local_ray, tmp_path_factory):
    """Run the study in a subprocess, kill it mid-trial, resume it in this process."""
    folder = tmp_path_factory.mktemp("tune")
    spec_file = folder / "e2e.yaml"
    spec_file.write_text(yaml.safe_dump(study_spec(), sort_keys=False))
    output = folder / "out"
    log_file = folder / "first_driver.log"
    held = folder / "held"
    # Trial #1 (the second to reach its second epoch) waits there until the driver is killed.
    env = {**os.environ, HOLD_ENV: f"{SECOND_EPOCH_STEP}:2:{held}"}
    command = [
        sys.executable,
        "-m",
        "contrastlab.cli",
        "tune",
        str(spec_file),
        "--output",
        str(output),
        "--address",
        local_ray,
    ]
    with log_file.open("w") as log:
        driver = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_first_epoch_of_second_trial(output, driver, held)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and only what it started
            driver.wait()
    interrupted = {t.number: t.state.name for t in load_study(output).get_trials(deepcopy=False)}
    started = time.monotonic()
    code = main(["tune", str(spec_file), "--output", str(output), "--resume", "--address", local_ray])
    assert code == 0, log_file.read_text()[-3000:]
    return {
        "output": output,
        "spec_file": spec_file,
        "interrupted": interrupted,
        "resume_seconds": time.monotonic() - started,
    }


def test_trial_states_and_intermediate_values_in_the_database(study):
    trials = sorted(load_study(study["output"]).get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    complete, resumed, pruned, failed = trials
    assert sorted(complete.intermediate_values) == [1, 2]  # one value per epoch
    assert complete.value == pytest.approx(complete.intermediate_values[2])
    assert sorted(resumed.intermediate_values) == [1, 2]
    assert sorted(pruned.intermediate_values) == [1]
    assert pruned.intermediate_values[1] > complete.intermediate_values[1]
    assert pruned.user_attrs["epochs_trained"] == 1 and pruned.user_attrs["stopped_by"] == "scheduler"
    assert failed.user_attrs["fail_reason"].startswith("NonFiniteLossError: loss became NaN")
    assert failed.value is None and not failed.intermediate_values


def test_resume_finishes_the_request_without_rerunning_trials(study):
    output = study["output"]
    # The points to evaluate are enqueued in the study up front: the two not yet asked for wait.
    assert study["interrupted"] == {0: "COMPLETE", 1: "RUNNING", 2: "WAITING", 3: "WAITING"}
    trials = sorted(load_study(output).get_trials(), key=lambda t: t.number)
    tune_ids = [t.user_attrs["tune_trial_id"] for t in trials]
    assert len(trials) == SAMPLES and len(set(tune_ids)) == SAMPLES
    # The interrupted trial ran under its own Tune trial, relaunched, or (when Tune had not
    # saved it yet) under the orphan's id first and the id of the trial that resumed it then.
    runs = [[*t.user_attrs.get(RESUMED_FROM, []), t.user_attrs["tune_trial_id"]] for t in trials]
    assert [len(r) for r in runs] in ([1, 1, 1, 1], [1, 2, 1, 1])
    attempts = [sum(len((output / "trials" / i / "attempts.jsonl").read_text().splitlines()) for i in r) for r in runs]
    assert attempts == [1, 2, 1, 1]
    # It continued from its checkpoint: no epoch was trained twice.
    results = [line for i in runs[1] for line in (output / "ray" / "tune" / i / "result.json").read_text().splitlines()]
    assert [json.loads(line)["epoch"] for line in results] == [1, 2]


def test_outputs_best_config_table_importances_tensorboard(study):
    output = study["output"]
    best = load_config(output / "best_config.yaml")
    assert best.optim.lr == GOOD
    rows = (output / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,tune_trial_id,state,value,intermediate_values")
    assert [row.split(",")[2] for row in rows[1:]] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    importances = json.loads((output / "importances.json").read_text())
    assert importances["importances"] is not None or "reason" in importances
    sessions = hparams_sessions(output / "tensorboard")
    states = sorted(s["trial_state"] for s in sessions.values())
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    assert all("optim.lr" in s for s in sessions.values())


def hparams_sessions(root: Path) -> dict[str, dict]:
    """Trial run -> hparams of its session, read back with TensorBoard's own parsers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    sessions = {}
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        accumulator = EventAccumulator(str(run))
        accumulator.Reload()
        if run.name == "report":  # the study report's figures, logged as images: no session
            assert "report/history" in accumulator.Tags()["images"]
            continue
        content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
        if metadata.SESSION_START_INFO_TAG in content:
            info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
            sessions[run.name] = {k: v.string_value or v.number_value for k, v in info.hparams.items()}
    return sessions


def test_a_changed_spec_is_refused_and_shows_the_change(study, capsys):
    changed = study_spec()
    changed["space"]["optim.lr"]["choices"] = [GOOD, SLOW]
    changed["num_samples"] = 6
    changed["points_to_evaluate"] = changed["points_to_evaluate"][:3]  # 1e30 is no longer a choice
    spec_file = study["spec_file"].with_name("changed.yaml")
    spec_file.write_text(yaml.safe_dump(changed))
    assert main(["tune", str(spec_file), "--output", str(study["output"]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the spec changed" in err and "space.optim.lr.choices" in err and "num_samples: 4 -> 6" in err
    assert main(["tune", str(study["spec_file"]), "--output", str(study["output"])]) == 2
    assert "already holds a study" in capsys.readouterr().err
