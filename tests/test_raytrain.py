"""Ray Train: checks before start, a simulated two-node run, worker failure, remote submission.

The Ray tests share as few clusters as possible (starting one costs tens of seconds on a
2-core machine): one simulated two-node cluster for the training and failure tests, then
one head node started with `ray start` for `ray job submit`. Each holds the host's Ray lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray.train import UserCallback

from contrastlab.config import ConfigError
from contrastlab.raytrain import make_trainer, run_ray_training
from contrastlab.raytrain.cluster import check_distributed_config, resolve_storage, shared_storage_problem
from contrastlab.raytrain.worker import FAIL_ONCE_ENV, InjectedFailure, RayReporter, arm_fail_once
from tests.helpers import tiny_config, tiny_config_dict

START_TIMEOUT = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "180"}
EVALUATED = ("knn_top1", "linear_top1", "probe_colour", "probe_texture", "alignment", "uniformity")
COMPARED = ("loss", *(f"{split}/{name}" for split in ("val", "test") for name in EVALUATED))
VENV_BIN = Path(sys.executable).parent


def two_worker_config(**sections):
    return tiny_config(resources={"device": "cpu", "workers": 2, "cpus_per_worker": 1}, **sections)


# -- checks that need no cluster -------------------------------------------------------------
def test_local_storage_on_several_hosts_is_refused_with_advice() -> None:
    problem = shared_storage_problem("/home/me/runs/ray", ["10.0.0.1", "10.0.0.2"], "10.0.0.1", lambda host: False)
    assert problem is not None
    assert "10.0.0.2" in problem and "shared" in problem
    assert "NFS" in problem and "s3://" in problem and "gs://" in problem


@pytest.mark.parametrize(
    ("storage", "hosts", "visible"),
    [
        ("s3://bucket/runs", ["10.0.0.1", "10.0.0.2"], False),  # a URI is shared by definition
        ("/mnt/nfs/runs", ["10.0.0.1", "10.0.0.2"], True),  # every host sees the marker file
        ("/home/me/runs", ["10.0.0.1", "10.0.0.1"], False),  # several nodes, one host
    ],
)
def test_storage_that_every_host_sees_is_accepted(storage: str, hosts: list[str], visible: bool) -> None:
    assert shared_storage_problem(storage, hosts, "10.0.0.1", lambda host: visible) is None


def test_storage_defaults_to_an_absolute_folder_in_the_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(None, Path("runs/tiny")) == str(tmp_path / "runs" / "tiny" / "ray")
    assert resolve_storage("store", Path("x")) == str(tmp_path / "store")
    assert resolve_storage("gs://bucket/x", Path("x")) == "gs://bucket/x"


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"optim": {"batch_size": 30}, "resources": {"workers": 4}}, "optim.batch_size"),
        ({"model": {"sync_batchnorm": True}, "resources": {"workers": 2}}, "model.sync_batchnorm"),
        ({"resources": {"device": "cuda", "workers": 2}}, "resources.gpus_per_worker"),
    ],
)
def test_impossible_resource_requests_fail_before_ray_starts(sections: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_distributed_config(tiny_config(**sections))
    assert err.value.field == field


def test_make_trainer_maps_the_config_onto_ray(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(
        resources={"workers": 2, "cpus_per_worker": 1, "max_failures": 3}, data={"cache_dir": "relative/cache"}
    )
    trainer = make_trainer(cfg, tmp_path / "run", "tiny", str(tmp_path / "store"), max_failures=1)
    assert trainer.scaling_config.num_workers == 2 and not trainer.scaling_config.use_gpu
    assert trainer.run_config.name == "tiny" and trainer.run_config.storage_path == str(tmp_path / "store")
    assert trainer.run_config.failure_config.max_failures == 1  # the argument wins over the config
    loop_config = trainer.train_loop_config
    assert loop_config["run_dir"] == str((tmp_path / "run").resolve())
    assert Path(loop_config["config"]["data"]["cache_dir"]).is_absolute()  # workers change directory
    assert trainer.run_config.worker_runtime_env["env_vars"]["CONTRASTLAB_CACHE"] == str(tmp_path / "cache")
    default = make_trainer(cfg, tmp_path / "run", "tiny", str(tmp_path / "store"))
    assert default.run_config.failure_config.max_failures == 3


def test_rank_zero_alone_hands_over_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    calls: list[tuple[dict, object, dict]] = []

    def report(metrics, checkpoint=None, **options):
        calls.append((metrics, checkpoint, options))

    monkeypatch.setattr("ray.train.report", report)
    RayReporter(rank=1).report({"epoch": 3}, tmp_path)
    RayReporter(rank=0).report({"epoch": 3}, None)
    RayReporter(rank=0).report({"epoch": 3}, tmp_path)
    assert [c[1] is None for c in calls] == [True, True, False]
    assert Path(calls[2][1].path) == tmp_path
    assert calls[2][2]["delete_local_checkpoint_after_upload"] is False  # the run folder keeps its copy
    assert calls[2][2]["checkpoint_dir_name"] == "checkpoint_epoch_0003"


def test_fail_once_hook_fires_once_on_its_rank(tmp_path: Path, monkeypatch) -> None:
    class FakeMethod:
        def train_step(self, model, batch, tools):
            return "stepped"

    class FakeTrainer:
        def __init__(self):
            self.method = FakeMethod()

    class FakeBatch:
        step = 5

    marker = tmp_path / "fired"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"1:5:{marker}")
    other, chosen = FakeTrainer(), FakeTrainer()
    arm_fail_once(other, rank=0)
    arm_fail_once(chosen, rank=1)
    assert other.method.train_step(None, FakeBatch(), None) == "stepped"
    with pytest.raises(InjectedFailure):
        chosen.method.train_step(None, FakeBatch(), None)
    assert marker.exists()
    assert chosen.method.train_step(None, FakeBatch(), None) == "stepped"


# -- the Ray clusters ------------------------------------------------------------------------
def restore_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class ReportLog(UserCallback):
    """A Ray Train callback (it runs in the controller) that appends each report's epoch to a file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"epoch": metrics[0]["epoch"], "checkpoint": checkpoint is not None}) + "\n")

    def epochs(self) -> list[int]:
        return [json.loads(line)["epoch"] for line in Path(self.path).read_text().splitlines()]


@pytest.mark.ray
class TestSimulatedTwoNodeCluster:
    @pytest.fixture(scope="class")
    @classmethod
    def cluster(cls, tmp_path_factory, host_lock):
        import ray
        from ray.cluster_utils import Cluster

        # Class-scoped fixtures run before conftest's per-test data cache: set it here too.
        cache = tmp_path_factory.getbasetemp().parent / "contrastlab-cache"
        environment = {**START_TIMEOUT, "CONTRASTLAB_CACHE": str(cache)}
        saved = {k: os.environ.get(k) for k in environment}
        os.environ.update(environment)
        with host_lock():
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            try:
                yield cluster
            finally:
                ray.shutdown()
                cluster.shutdown()
                restore_environment(saved)

    @pytest.fixture(scope="class")
    @classmethod
    def uninterrupted(cls, cluster, tmp_path_factory) -> tuple[Path, dict]:
        """One run of two workers, one per node, to the end; also the reference of the failure test."""
        run_dir = tmp_path_factory.mktemp("uninterrupted") / "tiny"
        return run_dir, run_ray_training(two_worker_config(), run_dir, address=cluster.address)

    def test_one_worker_per_node_trains_to_the_end(self, uninterrupted) -> None:
        import ray

        run_dir, metrics = uninterrupted
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2 and all(n["Resources"]["CPU"] == 1 for n in nodes)  # so one worker per node
        assert metrics["epoch"] == two_worker_config().optim.epochs
        assert {"val/knn_top1", "test/linear_top1", "val/alignment"} <= metrics.keys()
        batch = two_worker_config().optim.batch_size
        # Both workers' images, summed: the whole batches of the train part (256 generated images
        # less the 26 of the validation split).
        assert metrics["train_samples"] == batch * ((256 - 26) // batch)
        stored = sorted(p.name for p in (run_dir / "ray" / "tiny").glob("checkpoint_epoch_*"))
        assert stored == ["checkpoint_epoch_0001", "checkpoint_epoch_0002"]  # one report per epoch
        assert yaml.safe_load((run_dir / "manifest.yaml").read_text())["world_size"] == 2
        assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1  # written by rank 0 only

    def test_storage_probe_asks_the_nodes_of_other_hosts(self, cluster, tmp_path: Path, monkeypatch) -> None:
        import ray

        from contrastlab.raytrain import cluster as cluster_checks

        asked: list[str] = []
        probe = cluster_checks._exists_on_node

        def recording_probe(node_id: str, path: str) -> bool:
            asked.append(node_id)
            return probe(node_id, path)

        # Pretend the driver runs on another host: both nodes must then be asked.
        monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "203.0.113.9")
        monkeypatch.setattr(cluster_checks, "_exists_on_node", recording_probe)
        cluster_checks.check_shared_storage(str(tmp_path / "store"))  # same disk: visible, passes
        assert len(asked) == 1  # the two fake nodes share one address: one probe per host
        assert list((tmp_path / "store").iterdir()) == []  # the marker is cleaned up
        assert not probe(asked[0], str(tmp_path / "missing"))

    def test_failed_worker_resumes_from_the_last_checkpoint(self, uninterrupted, tmp_path: Path, monkeypatch) -> None:
        cfg = two_worker_config()
        marker = tmp_path / "failure-injected"
        steps_per_epoch = 256 // cfg.optim.batch_size
        # Rank 1 fails in the middle of epoch 2, after the epoch-1 checkpoint.
        monkeypatch.setenv(FAIL_ONCE_ENV, f"1:{steps_per_epoch + 3}:{marker}")
        reports = ReportLog(tmp_path / "reports.jsonl")
        trainer = make_trainer(
            cfg, tmp_path / "tiny", "tiny", str(tmp_path / "store"), callbacks=[reports], max_failures=1
        )
        result = trainer.fit()
        assert marker.exists(), "the failure was never injected"
        assert reports.epochs() == [1, 2]  # epoch 1 is not trained again after the restart
        expected = uninterrupted[1]
        for name in COMPARED:
            assert result.metrics[name] == pytest.approx(expected[name], abs=1e-4), name


# -- remote submission -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_dashboard(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise TimeoutError(f"the dashboard on port {port} did not open in {timeout:.0f} s")


@pytest.fixture
def head_node(tmp_path: Path, ray_lock) -> Iterator[tuple[int, dict]]:
    """A head node as `ray start --head` makes it, token authentication on, with its own token."""
    token = tmp_path / "auth_token"
    token.write_text(os.urandom(16).hex())
    env = {
        **os.environ,
        **START_TIMEOUT,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    port, dashboard = free_port(), free_port()
    # A temp dir of its own (short: it holds Unix sockets) keeps this head node's address out
    # of /tmp/ray, where a later plain `ray.init()` on this host would try to join it.
    temp_dir = tempfile.mkdtemp(prefix="clray-")
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=2",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    # Its own session: teardown signals exactly the processes that this head node started.
    head = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "ray-start.log", "w"),
    )
    try:
        wait_for_dashboard(dashboard, head)
        yield dashboard, env
    finally:
        stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_process_group(process: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM to the head node's process group, SIGKILL to whatever is left after `grace` seconds."""
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=30)


@pytest.mark.ray
def test_ray_job_submit_trains_on_the_cluster(head_node, tmp_path: Path) -> None:
    dashboard, env = head_node
    config = tmp_path / "tiny.yaml"
    data = tiny_config_dict(optim={"epochs": 1}, eval={"probe_epochs": 2})
    config.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "runs" / "submitted"
    command = [
        str(VENV_BIN / "ray"),
        "job",
        "submit",
        f"--address=http://127.0.0.1:{dashboard}",
        "--",
        "contrastlab",
        "train",
        str(config),
        "--address",
        "auto",
        "--workers",
        "1",
        "--output",
        str(run_dir),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert (run_dir / "checkpoints" / "last" / "state.pt").is_file()
    assert (run_dir / "ray" / "submitted" / "checkpoint_epoch_0001").is_dir()
    wrong_token = {**env, "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    wrong_token.pop("RAY_AUTH_TOKEN_PATH")
    refused = subprocess.run(
        [str(VENV_BIN / "ray"), "job", "list", f"--address=http://127.0.0.1:{dashboard}"],
        env=wrong_token,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0, "the cluster answered a client with the wrong token"
