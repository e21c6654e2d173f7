"""A study database's password never reaches a file: not the pickled searcher and scheduler
(Tune saves both with its experiment), and a resume finds it again without a saved copy."""

from __future__ import annotations

import pickle
from pathlib import Path

import cloudpickle
import pytest

from contrastlab.errors import UserError
from contrastlab.tuning import study as study_module
from contrastlab.tuning.runner import make_scheduler, make_searcher
from contrastlab.tuning.spec import spec_from_dict
from contrastlab.tuning.study import STORAGE_ENV, open_storage, redact, storage_from_environment
from tests.helpers import PG_BIN, PG_PASSWORD, tiny_config_dict

pytestmark = pytest.mark.skipif(
    PG_BIN is None, reason="PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does)"
)


def tiny_spec():
    return spec_from_dict(
        {
            "name": "secret",
            "base": tiny_config_dict(),
            "metric": "loss",
            "mode": "min",
            "num_samples": 2,
            "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
            "resources": {"workers": 1, "cpus_per_worker": 1},
        },
        Path("<test>/secret.yaml"),
    )


@pytest.fixture
def fresh_process(monkeypatch):
    """As a new driver process: no database opened yet, no variable set."""
    monkeypatch.setattr(study_module, "_FULL_URLS", {})
    monkeypatch.delenv(STORAGE_ENV, raising=False)


def test_pickled_searcher_and_scheduler_hold_no_password_and_reconnect(postgres_url, fresh_process, monkeypatch):
    import optuna

    spec = tiny_spec()
    storage = open_storage(postgres_url)
    optuna.create_study(storage=storage, study_name=spec.study_name, load_if_exists=True)
    searcher = make_searcher(spec, storage)
    assert searcher.suggest("t1") is not None  # the searcher now holds trials and the study
    blobs = [
        pickle.dumps(searcher.__dict__),
        cloudpickle.dumps(searcher),
        cloudpickle.dumps(make_scheduler(spec, storage)),
    ]
    for blob in blobs:
        assert PG_PASSWORD.encode() not in blob
        assert redact(postgres_url).encode() in blob  # the database is still named
    # The same process reconnects with the URL it opened.
    restored = cloudpickle.loads(blobs[1])
    assert restored.study_storage.url == postgres_url
    assert len(restored.study.trials) == 1
    # A new process without the password is refused in one line that says how to give it ...
    monkeypatch.setattr(study_module, "_FULL_URLS", {})
    with pytest.raises(UserError, match=f"--storage-db or in the {STORAGE_ENV}"):
        cloudpickle.loads(blobs[1])
    # ... and reconnects when the environment holds it.
    monkeypatch.setenv(STORAGE_ENV, postgres_url)
    assert len(cloudpickle.loads(blobs[1]).study.trials) == 1


def test_the_environment_adds_the_password_to_the_same_database_only(monkeypatch):
    monkeypatch.setenv(STORAGE_ENV, "postgresql://user:pw@host/db")
    assert storage_from_environment(None) == "postgresql://user:pw@host/db"
    assert storage_from_environment("postgresql://user@host/db") == "postgresql://user:pw@host/db"
    assert storage_from_environment("postgresql://user@other/db") == "postgresql://user@other/db"
    monkeypatch.delenv(STORAGE_ENV)
    assert storage_from_environment("postgresql://user@host/db") == "postgresql://user@host/db"


def test_the_database_url_is_not_forwarded_to_workers(monkeypatch):
    from contrastlab.raytrain.trainer import forwarded_environment

    monkeypatch.setenv(STORAGE_ENV, "postgresql://user:pw@host/db")
    monkeypatch.setenv("CONTRASTLAB_CACHE", "/tmp/cache")
    forwarded = forwarded_environment()
    assert STORAGE_ENV not in forwarded and forwarded["CONTRASTLAB_CACHE"] == "/tmp/cache"
