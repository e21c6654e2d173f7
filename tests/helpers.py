"""Builders the test modules share: tiny configs, seeded tensors, input files, short runs.

Fixtures live in conftest.py and the NumPy oracles in reference.py; everything a test module
imports besides those comes from here.
"""

from __future__ import annotations

import copy
import functools
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from contrastlab.config import ExperimentConfig, config_from_dict

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]


# -- configs -------------------------------------------------------------------------------------------------
def tiny_config_dict(method: dict | None = None, **sections) -> dict:
    """A config that trains in seconds on CPU: synthetic Trifeature images, a narrow CNN."""
    data = {
        "name": "trifeature",
        "trifeature_train": 256,
        "trifeature_test": 128,
        "image_size": 16,
    }
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": data,
        "augment": {"crop_scale": [0.5, 1.0]},
        "model": {"encoder": "small_cnn", "width": 8, "projector_hidden": 32, "projector_out": 16},
        "method": method or {"name": "simclr", "temperature": 0.5},
        "optim": {"batch_size": 32, "epochs": 2, "warmup_epochs": 0, "lr": 0.1},
        "eval": {"knn_every": 1, "knn_k": 20, "probe_epochs": 5},
        "output": {"progress_every": 0},
        "resources": {"device": "cpu"},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def tiny_config(method: dict | None = None, **sections) -> ExperimentConfig:
    return config_from_dict(tiny_config_dict(method, **sections), "<test>")


# -- tensors -------------------------------------------------------------------------------------------------
def unit(*shape: int, d: int | None = None, seed: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Seeded random unit vectors along the last axis, float64 unless `dtype` says otherwise:
    `unit(n)` is n rows in R^6, `unit(n, d=8)` and `unit(n, 8)` n rows in R^8, `unit(n, k, 8)`
    an (n, k, 8) tensor."""
    import torch
    import torch.nn.functional as F

    dtype = torch.float64 if dtype is None else dtype
    if d is not None:
        shape = (*shape, d)
    elif len(shape) == 1:
        shape = (shape[0], 6)
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=-1)


def recording(fn, store: list):
    """`fn`, appending each return value to `store` (to monkeypatch over a library call)."""

    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        store.append(out)
        return out

    return wrapper


# -- runs ----------------------------------------------------------------------------------------------------
def colour_knn(trainer) -> float:
    """kNN top-1 on Trifeature's colour: the attribute a short contrastive run learns first
    (shape, the primary label, is the one it suppresses), so a few CPU epochs show learning."""
    from contrastlab.evaluation import knn_top1

    bundle, method = trainer.bundle, trainer.method
    method.eval()
    train_feats = trainer.evaluator.embed(method.features, bundle.train_images)
    test_feats = trainer.evaluator.embed(method.features, bundle.test_images)
    method.train()
    return knn_top1(
        train_feats,
        bundle.train_labels["colour"],
        test_feats,
        bundle.test_labels["colour"],
        k=20,
        temperature=0.1,
        num_classes=bundle.num_classes["colour"],
    )


def tensorboard_tags(folder) -> set[str]:
    """Scalar tags written to a run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def one_epoch_run(cfg, run_dir) -> tuple[dict, set[str]]:
    """Train `cfg` for its one epoch: the final metrics and the TensorBoard scalar tags."""
    from contrastlab.engine import train

    metrics = train(cfg, run_dir)
    return metrics, tensorboard_tags(run_dir / "tensorboard")


def __getattr__(name: str) -> Any:
    """`needs_fashion`: skips a test when the Debian package's Fashion-MNIST files are absent.
    Built on first use, as it imports the data package (and with it torch)."""
    if name != "needs_fashion":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from contrastlab.data.datasets import FASHION_MNIST_SYSTEM_DIR

    found = (FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file()
    return pytest.mark.skipif(not found, reason="Debian package dataset-fashion-mnist not installed")


def learns_beyond_random_init(config: str, run_dir, **overrides) -> tuple[float, float]:
    """kNN top-1 of a shipped Fashion-MNIST config's encoder at initialisation and after a
    short CPU run (2048 images, 8 epochs, a narrow CNN)."""
    from contrastlab.config import load_config
    from contrastlab.engine import Trainer

    cfg = load_config(ROOT / "configs" / f"{config}_fashion_mnist.yaml").with_overrides(
        {
            "data.subset": 2048,
            "data.test_subset": 1000,
            "optim.epochs": 8,
            "model.width": 16,
            "eval.knn_every": 0,
            "eval.linear_probe": False,
            "eval.align_uniform": False,
            "resources.device": "cpu",
            "output.progress_every": 0,
            **overrides,
        }
    )
    trainer = Trainer(cfg, run_dir)
    before = trainer.evaluator.knn(trainer.method)["val/knn_top1"]
    return before, trainer.run()["val/knn_top1"]


# -- files: writing test inputs, comparing folders before and after a command ------------------------------------
def put(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `dotted` set (sections created as needed)."""
    data = copy.deepcopy(data)
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def write(path: Path, content: str | bytes | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def valid_state(cfg_hash: str) -> dict[str, Any]:
    return {"method": {}, "epoch": 1, "step": 8, "config_hash": cfg_hash, "extra": {}}


def state_bytes(tmp: Path, state: Any) -> bytes:
    import torch

    scratch = tmp / "scratch.pt"
    torch.save(state, scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


class Evil:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file below `path` with its bytes (None: the path does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}


# -- a throwaway PostgreSQL server -----------------------------------------------------------------------------
PG_BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
PG_BIN = next((Path(d) for d in PG_BIN_DIRS if (Path(d) / "pg_ctl").is_file()), None)
# Distinctive, so that a search of the files a study wrote finds it wherever it leaked.
PG_PASSWORD = "pw-Zq4k9-leakcanary-7731"


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the package's `postgres` user."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        pytest.skip("running as root without `runuser` to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server(password: str = PG_PASSWORD) -> Iterator[str]:
    """A PostgreSQL server on a Unix socket in a temporary folder (never a network port),
    with password authentication and a database `studies`; yields its URL, password included."""
    # Not under pytest's temporary root: that is private to this user, and the server runs
    # as `postgres` when the tests run as root.
    folder = Path(tempfile.mkdtemp(prefix="contrastlab-pg-"))
    data, sockets, pwfile = folder / "data", folder / "sockets", folder / "pwfile"
    sockets.mkdir()
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        for path in (folder, sockets, pwfile):
            shutil.chown(path, "postgres")
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    run(as_server_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", *auth, "--no-sync"]))
    pwfile.unlink()
    options = f"-c listen_addresses='' -c unix_socket_directories='{sockets}' -c fsync=off"
    start = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60"]
    run(as_server_user([*start, "-l", str(folder / "server.log"), "start"]))
    try:
        createdb = [str(PG_BIN / "createdb"), "-h", str(sockets), "-U", "postgres", "studies"]
        run(as_server_user(createdb), env={**os.environ, "PGPASSWORD": password})
        yield f"postgresql+psycopg2://postgres:{password}@/studies?host={sockets}"
    finally:
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(as_server_user(stop), check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# -- clusters ------------------------------------------------------------------------------------------------
def tiny_study_dict(samples: int, **resources) -> dict[str, Any]:
    """A FIFO study of `samples` one-epoch tiny trials, concurrency left to the cluster.

    The trials take the Ray Train path, so that the State API lists where each one ran
    (its `RayTrainWorker`), and the pace counts a driver plus its Train worker."""
    return {
        "name": "cluster",
        "base": tiny_config_dict(optim={"epochs": 1}, eval={"probe_epochs": 1, "align_uniform": False}),
        "metric": "loss",
        "mode": "min",
        "num_samples": samples,
        "space": {"optim.lr": {"type": "categorical", "choices": [0.05, 0.1, 0.2]}},
        "scheduler": {"type": "fifo"},
        "resources": {"workers": 1, "cpus_per_worker": 1, "trial_path": "train", **resources},
        "max_concurrent_trials": None,
    }


def train_worker_nodes(address: str | None = None) -> list[str]:
    """The node id of every Ray Train worker the cluster has started (alive or finished), in
    the order the State API lists them; `address` is the dashboard's (None: the connected Ray)."""
    from ray.util.state import list_actors

    actors = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker")], limit=10_000, detail=True)
    return [actor.node_id for actor in actors]


def ray_list(kind: str, address: str, env: dict[str, str], *filters: str) -> list[dict[str, Any]]:
    """`ray list KIND` of the cluster whose dashboard is `address`, as dicts, run in a process
    of its own: Ray reads token authentication settings once per process."""
    import json
    import subprocess
    import sys

    command = [str(Path(sys.executable).with_name("ray")), "list", kind, f"--address={address}"]
    command += ["--format=json", "--detail", "--limit=10000", *(f"--filter={f}" for f in filters)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout) if done.stdout.lstrip().startswith("[") else []  # "No resource in the cluster"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on the loopback now (bound together, then released)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_node_command(
    temp_dir: Path, resources: dict[str, float], head: dict[str, int] | None, join: str = ""
) -> list[str]:
    """`ray start --block` for one node on the loopback, every port of its own: a head (`head`
    names its gcs, dashboard and client ports) or a node joining `join`."""
    import json
    import sys

    ports = free_ports(6)
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--num-cpus=1",
        f"--resources={json.dumps(resources)}",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--metrics-export-port={ports[5]}",
        "--min-worker-port=0",  # workers bind to ports the system picks, as in Ray's own test clusters
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    if head is None:
        return [*command, f"--address=127.0.0.1:{join}"]
    return [
        *command,
        "--head",
        f"--port={head['gcs']}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={head['dashboard']}",
        f"--ray-client-server-port={head['client']}",
    ]


def ray_processes(started: list[int], temp_dirs: list[Path]) -> set[int]:
    """The processes of a cluster these tests started: the `ray start` processes, their
    descendants, and every process whose command line names one of its temp dirs."""
    import psutil

    found = set(started)
    for pid in started:
        try:
            found.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    marks = [str(folder) for folder in temp_dirs]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(mark in cmdline for mark in marks):
            found.add(proc.info["pid"])
    return found


def pruned_study(trials: int = 24, storage: str | None = None, name: str = "synthetic", seed: int = 0):
    """A study as ASHA leaves it, built without Ray: every trial reports epochs 1 and 2, every
    third one also 3 to 6 (COMPLETE at 6), the rest are PRUNED. `method.synthetic_count`
    exists only when `method.synthesis` is true, and there the value at every epoch rises
    with it (0.3 over its range); `method.temperature` and `optim.lr` add noise of 0.005."""
    import numpy as np
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    rng = np.random.default_rng(seed)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr("metric", "val/knn_top1")
    shared = {
        "method.temperature": FloatDistribution(0.1, 1.0, log=True),
        "optim.lr": FloatDistribution(0.05, 1.0, log=True),
        "method.synthesis": CategoricalDistribution([True, False]),
    }
    count = IntDistribution(0, 256, step=16)
    for number in range(trials):
        params = {
            "method.temperature": float(rng.uniform(0.1, 1.0)),
            "optim.lr": float(rng.uniform(0.05, 1.0)),
            "method.synthesis": number % 2 == 0,
        }
        distributions = dict(shared)
        level = 0.5
        if params["method.synthesis"]:
            params["method.synthetic_count"] = int(rng.integers(0, 17)) * 16
            distributions["method.synthetic_count"] = count
            level += 0.3 * params["method.synthetic_count"] / 256
        last = 6 if number % 3 == 0 else 2
        curve = {epoch: level + 0.01 * epoch + float(rng.normal(0, 0.005)) for epoch in range(1, last + 1)}
        complete = last == 6
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if complete else TrialState.PRUNED,
                value=curve[last] if complete else None,
                params=params,
                distributions=distributions,
                intermediate_values=curve,
            )
        )
    return study


# -- TensorBoard, read back with its own loader and plugins --------------------------------------
def tensorboard_logdir(root) -> dict[str, Any]:
    """What TensorBoard itself serves for the logdir `root`, read through its multiplexer and
    data provider: `scalars` (run -> tag -> [(step, value)]), `sessions` (HParams session
    groups of the hparams plugin: name -> {hparam: typed value}, plus `metrics`: tag -> value),
    `experiment` (the declared columns: [(name, type name, domain values)]), `metric_tags`,
    `layout` (the custom-scalars plugin's merged layout, a layout_pb2.Layout), `images`
    (run -> tags)."""
    from google.protobuf import json_format
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar import custom_scalars_plugin, layout_pb2
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer(size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(root))
    tb = base_plugin.TBContext(data_provider=provider, multiplexer=multiplexer, logdir=str(root))
    ctx = context.RequestContext()
    read = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=100_000)
    scalars = {
        run: {tag: [(d.step, d.value) for d in data] for tag, data in tags.items()} for run, tags in read.items()
    }
    blobs = provider.list_blob_sequences(ctx, experiment_id="", plugin_name="images")
    images = {run: set(tags) for run, tags in blobs.items() if tags}
    hparams = backend_context.Context(tb)
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=1000, allowed_statuses=list(api_pb2.Status.values())
    )
    groups = list_session_groups.Handler(ctx, hparams, "", request).run().session_groups
    sessions = {}
    for group in groups:
        # A google.protobuf.Value: a bool, a float or a str in Python, as the table typed it.
        typed: dict[str, Any] = {name: json_format.MessageToDict(v) for name, v in group.hparams.items()}
        typed["metrics"] = {m.name.tag: m.value for m in group.metric_values}
        sessions[group.name] = typed
    metadata = hparams.hparams_metadata(ctx, "")
    experiment = hparams.experiment_from_metadata(
        ctx, "", True, metadata, hparams.hparams_from_data_provider(ctx, "", limit=None)
    )
    columns = [
        (
            info.name,
            api_pb2.DataType.Name(info.type),
            [json_format.MessageToDict(v) for v in info.domain_discrete.values],
        )
        for info in experiment.hparam_infos
    ]
    plugin = custom_scalars_plugin.CustomScalarsPlugin(tb)
    layout = plugin.layout_impl(ctx, "")  # the JSON the dashboard receives
    layout_proto = layout_pb2.Layout()
    if layout:
        parse = json_format.Parse if isinstance(layout, str) else json_format.ParseDict
        parse(layout, layout_proto)
    return {
        "scalars": scalars,
        "sessions": sessions,
        "experiment": columns,
        "metric_tags": [m.name.tag for m in experiment.metric_infos],
        "layout": layout_proto,
        "images": images,
    }
