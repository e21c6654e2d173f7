"""Fixtures only, and the lock that keeps Ray clusters one at a time; builders live in tests/helpers.py."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from contrastlab.config import ExperimentConfig
from tests.helpers import postgres_server, tiny_config

RAY_LOCK = Path(os.environ.get("CONTRASTLAB_RAY_LOCK", "/tmp/contrastlab-ray-tests.lock"))


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


@pytest.fixture(scope="session")
def host_lock() -> Callable[[], AbstractContextManager[None]]:
    """`ray_host_lock` itself, for fixtures wider than one test: `with host_lock(): ...`."""
    return ray_host_lock


@pytest.fixture
def ray_lock():
    """The host's Ray lock for one test; wider fixtures take `host_lock`."""
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway PostgreSQL server (password authentication) for the session; its URL."""
    with postgres_server() as url:
        yield url
