"""The study bookkeeping against a real PostgreSQL server, started by the test.

The server comes from the Debian `postgresql` package (scripts/setup.sh installs it); the
test is skipped, saying so, where its binaries are absent. It runs on a Unix socket in a
temporary folder, never on a network port, and is stopped at the end. The searcher is
driven directly (no Ray): the same calls Tune makes, so the states, intermediate values
and reasons it writes are the ones a `contrastlab tune --set study_storage=postgresql://...`
study holds.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from contrastlab.tuning.runner import make_searcher
from contrastlab.tuning.scheduler import StudyASHA
from contrastlab.tuning.spec import spec_from_dict
from contrastlab.tuning.study import (
    FAIL_REASON,
    STOPPED_BY,
    TUNE_TRIAL_ID,
    StudySearcher,
    open_storage,
    redact,
)
from tests.helpers import PG_BIN, tiny_config_dict

pytestmark = pytest.mark.skipif(
    PG_BIN is None, reason="PostgreSQL server binaries not found (apt-get install postgresql; scripts/setup.sh does)"
)


def make_study(url: str) -> tuple[StudySearcher, object]:
    spec = spec_from_dict(
        {
            "name": "pg",
            "base": tiny_config_dict(),
            "metric": "loss",
            "mode": "min",
            "num_samples": 3,
            "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
            "resources": {"workers": 1, "cpus_per_worker": 1},
        },
        Path("<test>/pg.yaml"),
    )
    storage = open_storage(url)
    searcher = make_searcher(spec, storage)  # the study's own searcher, as `tune` builds it
    return searcher, spec


def test_states_values_and_reasons_in_postgresql(postgres_url):
    searcher, spec = make_study(postgres_url)
    assert spec.base.optim.epochs == 2
    # complete: both epochs reported
    assert searcher.suggest("done") is not None
    searcher.on_trial_result("done", {"loss": 3.0, "epoch": 1})
    searcher.on_trial_complete("done", {"loss": 2.5, "epoch": 2})
    # stopped by the scheduler after one epoch: PRUNED, not COMPLETE with a partial value
    searcher.suggest("stopped")
    searcher.on_trial_complete("stopped", {"loss": 4.0, "epoch": 1})
    # failed: FAIL with a reason
    searcher.suggest("broken")
    searcher.on_trial_complete("broken", None, error=True)

    # Read back through a fresh connection, as optuna-dashboard would.
    study = optuna.load_study(study_name=spec.study_name, storage=optuna.storages.RDBStorage(postgres_url))
    trials = {t.user_attrs[TUNE_TRIAL_ID]: t for t in study.get_trials()}
    done, stopped, broken = trials["done"], trials["stopped"], trials["broken"]
    assert done.state.name == "COMPLETE" and done.value == 2.5 and done.intermediate_values == {1: 3.0, 2: 2.5}
    # Optuna keeps a pruned trial's last intermediate value as its value; the state says it is partial.
    assert stopped.state.name == "PRUNED" and stopped.intermediate_values == {1: 4.0}
    assert stopped.user_attrs[STOPPED_BY] == "scheduler"
    assert broken.state.name == "FAIL" and broken.user_attrs[FAIL_REASON]
    assert 0.01 <= done.params["optim.lr"] <= 1.0

    # A resumed study's ASHA reads the same rungs back from the server.
    scheduler = StudyASHA(
        spec.study_name,
        open_storage(postgres_url),
        metric="loss",
        mode="min",
        max_t=2,
        grace_period=1,
        reduction_factor=2,
    )
    assert scheduler.rebuild_rungs() == 2


def test_password_is_not_shown(postgres_url):
    assert "secret" not in redact(postgres_url) and "postgres" in redact(postgres_url)
