"""Studies on a cluster that grows while they run: trials start as nodes join.

`test_trials_start_as_a_node_joins` runs Ray's in-process `Cluster` (several raylets of one
test process); `test_a_study_submitted_to_a_two_raylet_cluster` starts a head and a worker
with `ray start`, submits `contrastlab tune` with `ray job submit` and stops what it
started, by process id.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from contrastlab.tuning.runner import run_study
from contrastlab.tuning.spec import load_spec
from tests.helpers import free_ports, ray_list, ray_node_command, ray_processes, tiny_study_dict, train_worker_nodes

pytestmark = pytest.mark.ray
SAMPLES = 3


def write_spec(folder: Path, **resources) -> Path:
    spec_file = folder / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_study_dict(SAMPLES, **resources), sort_keys=False))
    return spec_file


def wait_for_training(study: threading.Thread, dashboard: str, timeout: float = 120) -> None:
    """Until the first Train worker is alive (on the head, the only node so far)."""
    deadline = time.monotonic() + timeout
    while not train_worker_nodes(dashboard):
        assert study.is_alive(), "the study ended before any trial trained"
        assert time.monotonic() < deadline, "no trial started training"
        time.sleep(0.5)


def test_trials_start_as_a_node_joins(tmp_path, ray_lock, monkeypatch) -> None:
    """A head with one CPU holds one trial (half a CPU); concurrency follows the cluster, so
    once a second node joins the waiting trials start there too."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "cache"))
    head_args = {"num_cpus": 1, "resources": {"head_slot": 1}, "include_dashboard": True}
    dashboard = free_ports(1)[0]  # the State API reads the cluster through it
    head_args.update(dashboard_host="127.0.0.1", dashboard_port=dashboard)
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    outcome: dict = {}
    try:
        head = cluster.head_node.node_id
        ray.init(address=cluster.address)
        spec = load_spec(write_spec(tmp_path, cpus_per_worker=0.5))
        # Ray adds nodes from the main thread only (signal handlers): the study runs beside it.
        study = threading.Thread(target=lambda: outcome.update(result=run_study(spec, tmp_path / "out")))
        study.start()
        wait_for_training(study, f"http://127.0.0.1:{dashboard}")
        joined = cluster.add_node(num_cpus=1, resources={"worker_slot": 1}).node_id
        study.join(timeout=300)
        assert not study.is_alive(), "the study did not finish"
        nodes = train_worker_nodes(f"http://127.0.0.1:{dashboard}")
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = outcome["result"].study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * SAMPLES
    assert len(nodes) == SAMPLES
    assert set(nodes) == {head, joined}  # the head's trial, and those on the node that joined
    # One reading of the cluster at the start (one CPU: one trial) would have run the trials
    # one after another; following the cluster, some ran at the same time once the node joined.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def wait_for(check, what: str, timeout: float, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc in processes:
            assert proc.poll() is None, f"{' '.join(proc.args[:2])} exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(1)


@pytest.mark.slow
def test_a_study_submitted_to_a_two_raylet_cluster(tmp_path, ray_lock) -> None:
    """`ray start` a head and a second raylet (one CPU each) on the loopback, submit
    `contrastlab tune` as a Ray job, and find its trials' workers on both raylets."""
    from contrastlab.shutdown import stop_processes

    root = Path(tempfile.mkdtemp(prefix="cl-", dir="/tmp"))  # short: Ray's socket paths have a limit
    temp_dirs = [root / "head", root / "node"]
    gcs, dashboard, client = free_ports(3)
    dashboard_url = f"http://127.0.0.1:{dashboard}"
    token = tmp_path / "auth_token"  # `ray start --head` turns token authentication on
    token.write_text(os.urandom(16).hex())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.update(RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="120", CONTRASTLAB_CACHE=str(tmp_path / "cache"))
    env.pop("RAY_ADDRESS", None)
    started: list[subprocess.Popen] = []
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("head", "node", "job")}
    try:
        for name, command in (
            (
                "head",
                ray_node_command(
                    temp_dirs[0], {"head_slot": 1}, {"gcs": gcs, "dashboard": dashboard, "client": client}
                ),
            ),
            ("node", ray_node_command(temp_dirs[1], {"worker_slot": 1}, None, join=str(gcs))),
        ):
            started.append(
                subprocess.Popen(command, env=env, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
            )
            count = len(started)
            try:
                wait_for(lambda n=count: alive_nodes(dashboard_url, env) >= n, f"{count} alive nodes", 120, started)
            except AssertionError:
                if name != "node" or started[-1].poll() is None:
                    raise
                logs[name].flush()
                lines = (tmp_path / "node.log").read_text().strip().splitlines() or ["(no output)"]
                pytest.skip(f"Ray did not start a second raylet on this host: {lines[-1]}")
        spec_file = write_spec(tmp_path, cpus_per_worker=0.5)
        output = tmp_path / "out"
        runtime_env = {
            "env_vars": {
                key: env[key]
                for key in (
                    "PYTHONPATH",
                    "OMP_NUM_THREADS",
                    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S",
                    "CONTRASTLAB_CACHE",
                )
                if key in env
            }
        }
        job = [
            str(Path(sys.executable).with_name("ray")),
            "job",
            "submit",
            f"--address={dashboard_url}",
            f"--runtime-env-json={json.dumps(runtime_env)}",
            "--",
            sys.executable,
            "-m",
            "contrastlab.cli",
            "tune",
            str(spec_file),
            "--address",
            "auto",
            "--output",
            str(output),
        ]
        done = subprocess.run(job, env=env, stdout=logs["job"], stderr=subprocess.STDOUT, timeout=400, check=False)
        assert done.returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
        slots = {node["node_id"]: node["resources_total"] for node in ray_list("nodes", dashboard_url, env)}
        nodes = {slot: node for node, total in slots.items() for slot in ("head_slot", "worker_slot") if slot in total}
        workers = [a["node_id"] for a in ray_list("actors", dashboard_url, env, "class_name=RayTrainWorker")]
    finally:
        for handle in logs.values():
            handle.close()
        survivors = stop_processes(ray_processes([proc.pid for proc in started], temp_dirs))
        for proc in started:
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    assert not survivors, f"processes of the test cluster still alive: {survivors}"
    with (output / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SAMPLES
    assert (output / "best_config.yaml").is_file()
    assert len(workers) == SAMPLES
    assert set(workers) == {nodes["head_slot"], nodes["worker_slot"]}  # trials on both raylets


def alive_nodes(address: str, env: dict[str, str]) -> int:
    try:
        return sum(node["state"] == "ALIVE" for node in ray_list("nodes", address, env))
    except subprocess.CalledProcessError:  # the dashboard is not up yet
        return 0
