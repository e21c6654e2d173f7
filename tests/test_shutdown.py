"""Clean shutdown: a `tune` driver stopped by SIGTERM or SIGINT leaves no process behind,
and the Ray token file is readable by its owner only.

SIGKILL cannot be caught by the driver: there Ray's own reaper stops the local instance a
few seconds later, the kernel frees the run folder's lock, and checkpoints stay whole
(tests/test_checkpoint_swap.py, tests/test_run_folders.py).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

# isort: off
import ray  # noqa: F401 - puts Ray's vendored psutil on the path, so it comes first
import psutil
# isort: on

from contrastlab.raytrain.session import secure_token_file
from tests.helpers import ROOT, tiny_config_dict, write

GRACE = 2.0


def ray_started(tree: list[psutil.Process]) -> bool:
    names = " ".join(" ".join(p.cmdline()) for p in tree if p.is_running())
    return "raylet" in names and "gcs_server" in names and "ray::" in names


def descendants_when_ray_runs(driver: subprocess.Popen, timeout: float = 240) -> list[psutil.Process]:
    """The driver's processes once Ray and a trial worker are up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before Ray started"
        try:
            tree = psutil.Process(driver.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        try:
            if ray_started(tree):
                return tree
        except psutil.Error:
            pass
        time.sleep(0.5)
    raise AssertionError("Ray never started under the driver")


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.ray
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_tune_driver_leaves_no_process_behind(signum, tmp_path, ray_lock):
    spec = write(
        tmp_path / "spec.yaml",
        {
            "name": "stop",
            "base": tiny_config_dict(optim={"epochs": 200}),
            "metric": "loss",
            "mode": "min",
            "num_samples": 1,
            "space": {"optim.lr": {"type": "float", "low": 0.05, "high": 0.1}},
            "scheduler": {"type": "fifo"},
            "resources": {"workers": 1, "cpus_per_worker": 1},
        },
    )
    env = {**os.environ, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contrastlab.cli",
            "tune",
            str(spec),
            "--output",
            str(tmp_path / "study"),
            "--num-cpus",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        tree = descendants_when_ray_runs(driver)
        driver.send_signal(signum)
        driver.wait(timeout=90)
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline and not all(gone(p) for p in tree):
            time.sleep(0.2)
        survivors = [" ".join(p.cmdline()[:2]) for p in tree if not gone(p)]
        assert survivors == [], survivors
        # Handled, not killed by it (Ray's own SIGTERM handler in the driver exits with 15).
        assert driver.returncode in (130, 128 + signal.SIGTERM, signal.SIGTERM), driver.returncode
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        driver.stderr.close()


def test_the_ray_token_file_is_made_private(tmp_path, monkeypatch):
    token = write(tmp_path / "token", "secret\n")
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    default = write(tmp_path / "home" / ".ray" / "auth_token", "secret\n")
    default.chmod(0o640)
    secure_token_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(default.stat().st_mode) == 0o600


def test_a_command_stops_what_it_started_and_only_that(tmp_path, monkeypatch):
    from contrastlab import cli

    before = subprocess.Popen(["sleep", "60"])  # the caller's own child: must survive
    started: list[psutil.Process] = []

    def command(_args) -> int:
        shell = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"])  # a child with a grandchild
        deadline = time.monotonic() + 10
        while len(psutil.Process(shell.pid).children()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        started.extend([psutil.Process(shell.pid), *psutil.Process(shell.pid).children(recursive=True)])
        return 0

    monkeypatch.setattr("contrastlab.commands.report.run", command)
    try:
        assert cli.main(["report", str(tmp_path)]) == 0
        assert len(started) >= 2 and all(gone(p) for p in started)
        assert before.poll() is None
    finally:
        before.kill()
        before.wait()
