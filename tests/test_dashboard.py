"""optuna-dashboard opens a contrastlab study as the study wrote it, from SQLite and PostgreSQL.

The study is written by the study's own searcher (`tuning.runner.make_searcher`), driven with
the calls Tune makes (no Ray): a trial that trains both epochs (COMPLETE), one the scheduler
stops after its first epoch (PRUNED, with its one intermediate value) and one that fails
(FAIL, with its reason). optuna-dashboard is then started on the loopback on that database,
as a separate process (`optuna-dashboard URL --host 127.0.0.1 --port N`), and its JSON API is
compared with what Optuna reads from the same database. The process is stopped at the end.

Skipped, saying so, only where optuna-dashboard is not installed (it is in the test extras);
the PostgreSQL case also where the PostgreSQL server binaries are absent (the fixture's rule).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import URL, make_url

from contrastlab.tuning.runner import make_searcher
from contrastlab.tuning.spec import spec_from_dict
from contrastlab.tuning.study import FAIL_REASON, STOPPED_BY, TUNE_TRIAL_ID, default_storage_url, open_storage
from tests.helpers import PG_BIN, free_ports, tiny_config_dict

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard not installed (pip install -e '.[test]')")

# The command installed beside this Python (a virtual environment), else the one on PATH.
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
if not DASHBOARD.is_file() and shutil.which("optuna-dashboard"):
    DASHBOARD = Path(shutil.which("optuna-dashboard"))


def write_study(url: str) -> str:
    """A three-trial study written through the study's own searcher; its name."""
    spec = spec_from_dict(
        {
            "name": "dash",
            "base": tiny_config_dict(),
            "metric": "loss",
            "mode": "min",
            "num_samples": 3,
            "space": {
                "optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
                "eval.knn_k": {"type": "categorical", "choices": [10, 20]},
            },
            "resources": {"workers": 1, "cpus_per_worker": 1},
        },
        Path("<test>/dash.yaml"),
    )
    searcher = make_searcher(spec, open_storage(url))
    assert searcher.suggest("done") is not None
    searcher.on_trial_result("done", {"loss": 3.25, "epoch": 1})
    searcher.on_trial_complete("done", {"loss": 2.5, "epoch": 2})
    searcher.suggest("stopped")  # stopped by the scheduler after its first epoch
    searcher.on_trial_complete("stopped", {"loss": 4.75, "epoch": 1})
    searcher.suggest("broken")
    searcher.on_trial_complete("broken", None, error=True)
    return spec.study_name


@contextmanager
def dashboard(url: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """optuna-dashboard serving `url` on a free loopback port; yields its base address."""
    if not DASHBOARD.is_file():
        pytest.fail(f"optuna_dashboard imports but its command is not at {DASHBOARD}")
    (port,) = free_ports(1)
    command = [str(DASHBOARD), url, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {process.returncode}:\n{process.stdout.read()}")
            try:
                get_json(base, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer on {base} within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def get_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        assert answer.status == 200, (path, answer.status)
        return json.loads(answer.read())


def shown_value(value: float) -> float | str:
    """A value as the dashboard's API writes it (non-finite values as strings)."""
    if math.isnan(value):
        return "nan"
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def check_dashboard_shows_the_study(url: str, name: str, dashboard_url: str | None = None, env=None) -> None:
    """optuna-dashboard on `dashboard_url` (default `url`) shows the study `name` of `url` as stored."""
    # What Optuna itself reads from the database, through a connection of its own.
    study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))
    stored = sorted(study.get_trials(), key=lambda t: t.number)
    by_id = {t.user_attrs[TUNE_TRIAL_ID]: t for t in stored}
    # The study holds what this test expects before the dashboard is compared with it.
    assert [by_id[k].state.name for k in ("done", "stopped", "broken")] == ["COMPLETE", "PRUNED", "FAIL"]
    assert by_id["stopped"].intermediate_values == {1: 4.75} and by_id["stopped"].user_attrs[STOPPED_BY]
    assert by_id["done"].intermediate_values == {1: 3.25, 2: 2.5} and by_id["broken"].user_attrs[FAIL_REASON]

    with dashboard(dashboard_url or url, env) as base:
        listed = {s["study_name"]: s for s in get_json(base, "/api/studies")["study_summaries"]}
        # Every study in the database, this one among them (a shared server may hold others).
        assert sorted(listed) == sorted(optuna.get_all_study_names(optuna.storages.RDBStorage(url)))
        assert name in listed
        assert listed[name]["directions"] == [d.name.lower() for d in study.directions] == ["minimize"]
        detail = get_json(base, f"/api/studies/{listed[name]['study_id']}")
        with urllib.request.urlopen(f"{base}/dashboard/studies/{listed[name]['study_id']}", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()

    assert detail["name"] == name and detail["directions"] == ["minimize"]
    shown = sorted(detail["trials"], key=lambda t: t["number"])
    assert len(shown) == len(stored) == 3
    for trial, row in zip(stored, shown):
        assert row["state"].upper() == trial.state.name, row
        steps = [{"step": step, "value": shown_value(v)} for step, v in sorted(trial.intermediate_values.items())]
        assert row["intermediate_values"] == steps, row
        assert {p["name"]: p["param_external_value"] for p in row["params"]} == {
            k: str(v) for k, v in trial.params.items()
        }
        attrs = {a["key"]: a["value"] for a in row["user_attrs"]}
        assert set(attrs) == set(trial.user_attrs), row
        assert attrs[TUNE_TRIAL_ID] == trial.user_attrs[TUNE_TRIAL_ID]
        if trial.state.name == "COMPLETE":
            assert row["values"] == [trial.value]
        if trial.state.name == "FAIL":
            assert attrs[FAIL_REASON] == str(trial.user_attrs[FAIL_REASON])
    assert "Pruned" in {row["state"] for row in shown}
    # The best trial the dashboard shows is the study's.
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    # The pruned trial's curve is there to draw.
    assert detail["has_intermediate_values"] is True


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dashboard_opens_an_sqlite_study(tmp_path):
    url = default_storage_url(tmp_path)  # where `contrastlab tune` puts it: OUTPUT/study.db
    name = write_study(url)
    before = digest(tmp_path / "study.db")
    check_dashboard_shows_the_study(url, name)
    assert digest(tmp_path / "study.db") == before, "the dashboard changed the study's database"


@pytest.mark.skipif(
    PG_BIN is None, reason="PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does)"
)
def test_dashboard_opens_a_postgresql_study(postgres_url):
    # The password stays off the dashboard's command line (which `ps` shows): libpq reads it
    # from PGPASSWORD, as docs/tuning.md suggests.
    parsed = make_url(postgres_url)
    bare = URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    ).render_as_string(hide_password=False)
    assert parsed.password and parsed.password not in bare
    check_dashboard_shows_the_study(postgres_url, write_study(postgres_url), bare, {"PGPASSWORD": parsed.password})
