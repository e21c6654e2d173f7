"""A run folder has one owner and one config: concurrent and conflicting runs are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from contrastlab.cli import main
from contrastlab.config import config_from_dict
from contrastlab.engine.checkpoint import load_checkpoint
from contrastlab.engine.runfolder import claim_run_folder
from tests.helpers import snapshot, tiny_config_dict, write

QUIET_EVAL = {"knn_every": 0, "linear_probe": False, "align_uniform": False}


def cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "contrastlab.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_train_on_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    config = write(tmp_path / "exp.yaml", tiny_config_dict(optim={"epochs": 500}, eval=QUIET_EVAL))
    run = tmp_path / "run"
    first = cli("train", str(config), "--output", str(run))
    try:
        wait_for(run / "config.yaml", first)
        wait_for(run / "checkpoints" / "last" / "state.pt", first)
        config_before = (run / "config.yaml").read_bytes()
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "contrastlab.cli",
                "train",
                str(config),
                "--output",
                str(run),
                "--set",
                "optim.lr=0.5",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2, second.stderr
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and str(run) in lines[0], second.stderr
        assert (run / "config.yaml").read_bytes() == config_before
        assert len(list((run / "tensorboard").iterdir())) == 1  # one event file: the first run's
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # SIGKILL cannot be caught, but the kernel drops the lock: the folder is free again, and its
    # checkpoint is the first run's, whole.
    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert load_checkpoint(run / "checkpoints" / "last")["epoch"] >= 1
    with claim_run_folder(run, cfg):
        pass


def test_a_rerun_with_another_config_is_refused_with_the_difference_and_changes_nothing(tmp_path, capsys):
    config = write(tmp_path / "exp.yaml", tiny_config_dict(optim={"epochs": 1}, eval=QUIET_EVAL))
    run = tmp_path / "run"
    assert main(["train", str(config), "--output", str(run)]) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert (
        main(["train", str(config), "--output", str(run), "--set", "optim.lr=0.2", "--set", "method.temperature=0.3"])
        == 2
    )
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert "optim.lr: 0.1 -> 0.2" in line and "method.temperature: 0.5 -> 0.3" in line
    assert snapshot(run) == before
    # The same config again is a resume of the finished run: allowed, and the folder keeps its one config.
    assert main(["train", str(config), "--output", str(run)]) == 0
    assert (run / "config.yaml").read_bytes() == before["config.yaml"]


def test_eval_refuses_a_config_yaml_changed_after_training(tmp_path, capsys):
    config = write(tmp_path / "exp.yaml", tiny_config_dict(optim={"epochs": 1}, eval=QUIET_EVAL))
    run = tmp_path / "run"
    assert main(["train", str(config), "--output", str(run)]) == 0
    edited = yaml.safe_load((run / "config.yaml").read_text())
    edited["method"]["temperature"] = 0.9
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    line = capsys.readouterr().err.strip()
    assert "config.yaml" in line and "hash" in line and "\n" not in line
    assert not (run / "eval").exists()


def test_the_lock_names_its_holder(tmp_path):
    with claim_run_folder(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
