"""Shared test fixtures: tiny configs, one torch thread, and a lock that keeps Ray clusters one at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from contrastlab.config import ExperimentConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
RAY_LOCK = Path(os.environ.get("CONTRASTLAB_RAY_LOCK", "/tmp/contrastlab-ray-tests.lock"))


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


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch limited to one intra-op thread for a module (`pytestmark = pytest.mark.usefixtures(...)`):
    on tiny tensors a second thread only adds scheduling latency on a busy 2-core host."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    """Generated datasets are cached once per test session, outside the user's home."""
    cache = tmp_path_factory.getbasetemp().parent / "contrastlab-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("CONTRASTLAB_CACHE", str(cache))


@contextmanager
def ray_host_lock() -> Iterator[None]:
    """Ray tests hold this lock: two clusters on one host confuse Ray's State API."""
    RAY_LOCK.touch(exist_ok=True)
    with RAY_LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def ray_lock():
    """The host's Ray lock for one test; wider fixtures use `ray_host_lock()` directly."""
    with ray_host_lock():
        yield


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory) -> Iterator[str]:
    """One local Ray instance for a test module, under the host's Ray lock; yields its address."""
    import ray

    cache = tmp_path_factory.getbasetemp().parent / "contrastlab-cache"
    cache.mkdir(exist_ok=True)
    with ray_host_lock(), pytest.MonkeyPatch.context() as patch:
        # Set before Ray starts: its workers inherit them (2 cores start worker groups slowly).
        patch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
        patch.setenv("CONTRASTLAB_CACHE", str(cache))
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
