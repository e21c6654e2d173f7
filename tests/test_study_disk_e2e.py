"""One small study through Ray Tune against the throwaway PostgreSQL server: its password
never reaches a file under the output, a resume finds it in the environment alone, and
the finished study keeps exactly the checkpoints of the retention rule.

Three trials of two epochs on the default (fast) path, one at a time, FIFO,
`keep_checkpoints: 1`, then a resume; the checkpoint copies to prune are Tune's, in each
trial's folder of the experiment.
"""

from __future__ import annotations

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.study.checkpoints import TUNE_COPIES_KEPT, checkpoint_epoch
from contrastlab.tuning import study as study_module
from contrastlab.tuning.study import STORAGE_ENV, TUNE_TRIAL_ID, open_storage, redact
from tests.helpers import PG_BIN, PG_PASSWORD, tiny_config_dict

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not found (scripts/setup.sh installs them)"),
]
TRIALS = 3


@pytest.fixture(scope="module")
def study(local_ray, postgres_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("disk")
    without_password = postgres_url.replace(f":{PG_PASSWORD}@", "@")
    assert without_password != postgres_url
    spec = {
        "name": "disk",
        "base": tiny_config_dict(eval={"probe_epochs": 2, "align_uniform": False}),
        "metric": "loss",
        "mode": "min",
        "num_samples": TRIALS,
        "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "scheduler": {"type": "fifo"},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "max_concurrent_trials": 1,
        # The spec names the database; the password comes from the environment.
        "study_storage": without_password,
        "keep_checkpoints": 1,
    }
    spec_file = folder / "disk.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    output = folder / "out"
    argv = ["tune", str(spec_file), "--output", str(output), "--address", local_ray]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STORAGE_ENV, postgres_url)
        assert main(argv) == 0
        # As a new driver: only the environment knows the password.
        patch.setattr(study_module, "_FULL_URLS", {})
        assert main([*argv, "--resume"]) == 0
    storage = open_storage(postgres_url)
    name = optuna.get_all_study_names(storage)
    found = [optuna.load_study(study_name=n, storage=storage) for n in name if n.startswith("disk-")]
    return {"output": output, "study": found[0]}


def test_the_password_is_in_no_file_of_the_output(study, capsys):
    leaks = [p for p in study["output"].rglob("*") if p.is_file() and PG_PASSWORD.encode() in p.read_bytes()]
    assert leaks == []
    saved = yaml.safe_load((study["output"] / "study_spec.yaml").read_text())
    assert saved["study_storage"] == redact(saved["study_storage"]) and "***" in saved["study_storage"]
    assert PG_PASSWORD not in capsys.readouterr().err


def test_the_finished_study_keeps_the_last_of_each_trial_and_the_copies_of_the_best(study):
    output, trials = study["output"], study["study"].get_trials()
    assert len(trials) == TRIALS and all(t.state.name == "COMPLETE" for t in trials)
    best = min(trials, key=lambda t: t.value).user_attrs[TUNE_TRIAL_ID]
    own = sorted(p.parent.parent.name for p in output.glob("trials/*/checkpoints/last"))
    assert own == sorted(t.user_attrs[TUNE_TRIAL_ID] for t in trials)
    copies = [p for p in output.rglob("checkpoint_*") if p.is_dir()]
    # Tune keeps the newest copy of a fast-path trial (epoch 2); only the best trial's stays.
    assert len(copies) == TUNE_COPIES_KEPT == 1
    assert copies[0].parent.name == best and copies[0].parent.parent == output / "ray" / "tune"
    assert checkpoint_epoch(copies[0]) == 2
