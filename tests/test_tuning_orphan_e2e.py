"""A killed driver whose last trial Tune had not saved yet: the resumed study loses no trial.

Two two-epoch trials of a tiny config on the fast path, one at a time.
The first driver saves Tune's experiment state only when a trial reports a checkpoint
(`TUNE_GLOBAL_CHECKPOINT_S` far away), and the second trial is held in its first epoch
(`CONTRASTLAB_TEST_HOLD`), before any checkpoint of its own, when the driver is killed: its
Optuna trial is RUNNING and the restored experiment does not know it. `--resume` must give
that Optuna trial to the trial it asks for instead, and end with two COMPLETE trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.study.fast import HOLD_ENV
from contrastlab.tuning.orphans import RESUMED_FROM
from tests.helpers import ROOT, tiny_config_dict

pytestmark = pytest.mark.ray
FIRST_EPOCH_STEP = 3  # of 7 steps an epoch: before the trial's first checkpoint


def load_study(output: Path) -> optuna.Study:
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def test_a_trial_started_after_tunes_last_saved_state_is_resumed(local_ray, tmp_path):
    spec = {
        "name": "orphan",
        "base": tiny_config_dict(eval={"probe_epochs": 2, "align_uniform": False}),
        "metric": "loss",
        "mode": "min",
        "num_samples": 2,
        "space": {"optim.lr": {"type": "categorical", "choices": [0.1, 0.5]}},
        "points_to_evaluate": [{"optim.lr": 0.5}, {"optim.lr": 0.1}],
        "scheduler": {"type": "fifo"},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "max_concurrent_trials": 1,
    }
    spec_file, output, held = tmp_path / "spec.yaml", tmp_path / "out", tmp_path / "held"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, HOLD_ENV: f"{FIRST_EPOCH_STEP}:2:{held}", "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    command = [sys.executable, "-m", "contrastlab.cli", "tune", str(spec_file), "--output", str(output)]
    with (tmp_path / "first_driver.log").open("w") as log:
        driver = subprocess.Popen(
            [*command, "--address", local_ray],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not (held.is_file() and len(held.read_text().splitlines()) >= 2):
                assert driver.poll() is None and time.monotonic() < deadline, "the second trial was never held"
                time.sleep(0.5)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    before = sorted(load_study(output).get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    orphan_id = before[1].user_attrs["tune_trial_id"]
    saved = (output / "ray" / "tune").glob("experiment_state-*.json")
    assert not any(orphan_id in p.read_text() for p in saved)  # the restored experiment cannot know it

    assert main(["tune", str(spec_file), "--output", str(output), "--resume", "--address", local_ray]) == 0
    after = sorted(load_study(output).get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in after] == ["COMPLETE", "COMPLETE"]  # no trial lost, none added
    resumed = after[1]
    assert resumed.params == before[1].params and resumed.user_attrs[RESUMED_FROM] == [orphan_id]
    new_id = resumed.user_attrs["tune_trial_id"]
    assert new_id != orphan_id and (output / "trials" / new_id / "checkpoints" / "last" / "state.pt").is_file()
    assert sorted(resumed.intermediate_values) == [1, 2]
    rows = (output / "trials.csv").read_text().splitlines()[1:]
    assert [row.split(",")[2] for row in rows] == ["COMPLETE", "COMPLETE"]
