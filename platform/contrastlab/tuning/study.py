"""The Optuna study behind a tuning run: its database, and a searcher that records honestly.

Ray's `OptunaSearch` tells Optuna COMPLETE, with a partial value, for a trial that ASHA
stopped early, and reports intermediate values per Tune iteration. `StudySearcher` fixes
both: a trial is COMPLETE only when it trained its planned epochs, PRUNED (with its
intermediate values, one per epoch) when it was stopped before, and FAIL with the reason
as a user attribute when it raised. The study lives in a real database (SQLite file or
any SQLAlchemy URL) in Optuna's own schema, so optuna-dashboard opens it as it is.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch
from sqlalchemy.engine import make_url

from contrastlab.errors import UserError
from contrastlab.study.internals import legacy_searcher_state, searcher_trials
from contrastlab.tuning.orphans import RESUME_KEY, RESUMED_FROM, fail_unresumed, orphans
from contrastlab.tuning.space import SearchSpace

log = logging.getLogger("contrastlab")

# User attributes written on each Optuna trial (shown by optuna-dashboard).
TUNE_TRIAL_ID = "tune_trial_id"
OVERRIDES = "config_overrides"
TARGET_EPOCHS = "target_epochs"
EPOCHS_TRAINED = "epochs_trained"
FAIL_REASON = "fail_reason"
# The held-out metrics of a finished trial, val and test side by side: kept for the tables
# only; the sampler, ASHA and best_config read the objective value alone.
FINAL_METRICS = "final_metrics"
STOPPED_BY = "stopped_by"
REASON_CHARS = 1000

# Trials Tune currently knows, by id, kept fresh by `StudyCallback` in the same process:
# when a trial errors, Tune calls the searcher before any callback, and only the Trial
# object knows why it failed.
_LIVE_TRIALS: dict[str, Any] = {}


def register_trials(trials) -> None:
    for trial in trials:
        _LIVE_TRIALS[trial.trial_id] = trial


# -- storage --------------------------------------------------------------------------------
def default_storage_url(output: Path) -> str:
    return f"sqlite:///{(Path(output).resolve() / 'study.db')}"


def redact(url: str) -> str:
    """The URL without its password, for logs and saved files."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy understands: show it as given
        return url


# The full URL of a study database whose password is not written anywhere: given on the
# command line (--storage-db), in the spec, or in this environment variable.
STORAGE_ENV = "CONTRASTLAB_STUDY_STORAGE"
# Redacted URL -> full URL, for the databases this process opened (never saved).
_FULL_URLS: dict[str, str] = {}


def full_url(redacted: str) -> str:
    """The URL with its password, from this process's open databases or `STORAGE_ENV`."""
    if redacted in _FULL_URLS:
        return _FULL_URLS[redacted]
    given = os.environ.get(STORAGE_ENV)
    if given and redact(given) == redacted:
        return given
    if "***" in redacted:
        raise UserError(
            f"{redacted}: the study database's password is not saved with the study; pass the URL "
            f"again with --storage-db or in the {STORAGE_ENV} environment variable"
        )
    return redacted


def without_password(url: str) -> str:
    """The URL with any password replaced by the same placeholder (to compare databases)."""
    try:
        return make_url(url).set(password="-").render_as_string(hide_password=True)
    except Exception:
        return url


def storage_from_environment(given: str | None) -> str | None:
    """`STORAGE_ENV` when set and naming the same database as `given` (or `given` is None):
    the spec can name a database without its password, the environment adds it."""
    env = os.environ.get(STORAGE_ENV)
    if env and (given is None or without_password(given) == without_password(env)):
        return env
    return given


class StudyStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, pickled without the password of its URL.

    Tune pickles the searcher and the scheduler with its experiment (`tuner.pkl`, the
    searcher's state file), and with them every reference to the storage. The pickle keeps
    the redacted URL; unpickling reconnects with the full URL this process opened (or the
    one in `STORAGE_ENV`).
    """

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["url"] = redact(self.url)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**state, "url": full_url(state["url"])})


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's own RDB storage (its schema is what optuna-dashboard reads)."""
    # SQLite: wait for a lock rather than fail while optuna-dashboard reads the file.
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    storage = StudyStorage(url, engine_kwargs=kwargs)
    _FULL_URLS[redact(storage.url)] = storage.url
    return storage


def existing_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


# -- per-trial decisions ----------------------------------------------------------------------
def held_out_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The `val/…` and `test/…` numbers of a result."""
    return {
        k: float(v)
        for k, v in result.items()
        if k.startswith(("val/", "test/"))
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


def target_epochs(overrides: dict[str, Any], base_epochs: int, max_t: int) -> int:
    """Epochs a trial must train to count as complete (its own schedule, capped by max_t)."""
    return min(int(overrides.get("optim.epochs", base_epochs)), max_t)


def _error_text(trial) -> str | None:
    # The driver-side copy is written before the searcher hears of the failure; the copy
    # in the experiment's storage is synced later.
    local = getattr(trial, "error_file", None)
    if local and Path(local).is_file():
        return Path(local).read_text(errors="replace")
    return trial.get_error()


def failure_reason(trial_id: str) -> str:
    """The last line of the trial's error (the exception and its message), or why it is unknown."""
    trial = _LIVE_TRIALS.get(trial_id)
    text = None
    if trial is not None:
        try:
            text = _error_text(trial)
        except Exception as err:  # storage not readable: say so rather than lose the failure
            text = f"error file unreadable ({err})"
    if not text:
        return "the trial raised; Tune recorded no error text"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("Failure #", "Traceback", "File ", "^"))]
    last = meaningful[-1] if meaningful else lines[-1]
    # The driver's own wrapper adds nothing: keep what it wraps.
    head, _, rest = last.partition("TrialFailed: ")
    return (rest if rest and "." in head else last)[:REASON_CHARS]


class StudySearcher(OptunaSearch):
    """OptunaSearch with honest trial states, per-epoch intermediate values and bookkeeping."""

    def __init__(
        self,
        space: SearchSpace,
        metric: str,
        mode: str,
        study_name: str,
        storage: optuna.storages.BaseStorage,
        sampler: optuna.samplers.BaseSampler,
        base_epochs: int,
        max_t: int,
        points_to_evaluate: list[dict[str, Any]] | None = None,
    ):
        points = [space.optuna_point(p) for p in points_to_evaluate or []]
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            sampler=sampler,
            study_name=study_name,
            storage=storage,
            points_to_evaluate=points or None,
        )
        self._base_epochs = base_epochs
        self._max_t = max_t
        self._targets: dict[str, int] = {}
        # The searcher's own bookkeeping, through Optuna's public API only: the study by name
        # in `storage`, a trial's storage id by its number, the Tune trials already told.
        self.optuna_study_name = study_name
        self.study_storage = storage
        self.study_sampler = sampler
        self.told: set[str] = set()

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "study_storage" not in state:  # pickled before the searcher kept its own bookkeeping
            state = {**state, **legacy_searcher_state(state)}
        self.__dict__.update(state)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study this searcher asks and tells (loaded by name from its storage)."""
        return optuna.load_study(
            study_name=self.optuna_study_name, storage=self.study_storage, sampler=self.study_sampler
        )

    def storage_id(self, number: int) -> int:
        """The storage's id of the study's trial `number`."""
        storage = self.study_storage
        study_id = storage.get_study_id_from_name(self.optuna_study_name)
        return storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def is_finished(self, number: int) -> bool:
        return self.study_storage.get_trial(self.storage_id(number)).state.is_finished()

    def suggest(self, trial_id: str) -> dict | None:
        resumed = self.adopt_orphan(trial_id)
        config = super().suggest(trial_id)
        if config is None:
            return None
        if resumed is not None:  # the orphan's parameters, and where its checkpoint is
            config[RESUME_KEY] = resumed
        overrides = config.get("params", {})
        target = target_epochs(overrides, self._base_epochs, self._max_t)
        self._targets[trial_id] = target
        ot_trial = searcher_trials(self)[trial_id]
        ot_trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
        ot_trial.set_user_attr(OVERRIDES, json.loads(json.dumps(overrides, default=str)))
        ot_trial.set_user_attr(TARGET_EPOCHS, target)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Epochs without the metric (kNN every N epochs) are skipped; the step is the epoch,
        # so a resumed trial reports each epoch once and the curve matches TensorBoard's.
        trials = searcher_trials(self)
        if trial_id in self.told or self.metric not in result or trial_id not in trials:
            return
        value = result[self.metric]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ot_trial = trials[trial_id]
        if step in self.study_storage.get_trial(self.storage_id(ot_trial.number)).intermediate_values:
            return
        ot_trial.report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trials = searcher_trials(self)
        if trial_id in self.told or trial_id not in trials:
            return
        ot_trial = trials[trial_id]
        if self.is_finished(ot_trial.number):
            self.told.add(trial_id)
            return  # told before the driver was interrupted; the restored state did not know
        if result and not error:
            # Tune hands the result that made the scheduler stop the trial only to this
            # method, not to on_trial_result: it is an epoch like the others.
            self.on_trial_result(trial_id, result)
        self.told.add(trial_id)
        state, value, attrs = self.decide(trial_id, result or {}, error)
        for key, item in attrs.items():
            ot_trial.set_user_attr(key, item)
        self.study.tell(ot_trial.number, value, state=state)
        log.debug(  # the console's line per finished trial says it at the default level
            "trial %s (Optuna #%d): %s%s",
            trial_id,
            ot_trial.number,
            state.name,
            f" ({attrs[FAIL_REASON]})" if FAIL_REASON in attrs else "",
        )

    def decide(self, trial_id: str, result: dict, error: bool) -> tuple[TrialState, float | None, dict[str, Any]]:
        """The Optuna state, final value and extra user attributes of a finished Tune trial."""
        epochs = int(result.get("epoch", 0) or 0)
        attrs: dict[str, Any] = {EPOCHS_TRAINED: epochs}
        if error:
            attrs[FAIL_REASON] = failure_reason(trial_id)
            return TrialState.FAIL, None, attrs
        target = self._targets.get(trial_id, self._max_t)
        if epochs < target:
            attrs[STOPPED_BY] = "scheduler" if epochs else "stopped before its first epoch"
            return TrialState.PRUNED, None, attrs
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            attrs[FAIL_REASON] = f"metric {self.metric!r} missing or not finite at the last epoch ({value!r})"
            return TrialState.FAIL, None, attrs
        attrs[FINAL_METRICS] = held_out_metrics(result)
        return TrialState.COMPLETE, float(value), attrs

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # Trials asked for after Tune's last saved state: the next suggestions resume them.
        self.orphans = orphans(self.study, (t.number for t in searcher_trials(self).values()))
        if self.orphans:
            log.warning("Optuna trial(s) %s started after Tune last saved its state: resumed", self.orphans)

    def adopt_orphan(self, trial_id: str) -> str | None:
        """Give the Tune trial `trial_id` the first orphan left (see `contrastlab.tuning.orphans`);
        returns the orphan's own Tune trial id, whose run folder holds its checkpoint."""
        pending = getattr(self, "orphans", None)
        if not pending or trial_id in searcher_trials(self):
            return None
        number = pending.pop(0)
        frozen = self.study_storage.get_trial(self.storage_id(number))
        searcher_trials(self)[trial_id] = optuna.Trial(self.study, self.storage_id(number))
        earlier = frozen.user_attrs.get(TUNE_TRIAL_ID)
        runs = [*frozen.user_attrs.get(RESUMED_FROM, []), *([earlier] if earlier else [])]
        self.study_storage.set_trial_user_attr(self.storage_id(number), RESUMED_FROM, runs)
        log.warning("trial %s resumes Optuna trial #%d (Tune trial %s, orphaned)", trial_id, number, earlier)
        return earlier


def end_orphans(storage: optuna.storages.BaseStorage, study_name: str, tune_trial_ids) -> int:
    """After the experiment: orphans no Tune trial resumed are FAIL (`orphans.fail_unresumed`)."""
    return fail_unresumed(storage, study_name, tune_trial_ids, TUNE_TRIAL_ID, FAIL_REASON)


__all__ = [
    "EPOCHS_TRAINED",
    "STORAGE_ENV",
    "StudyStorage",
    "FAIL_REASON",
    "FINAL_METRICS",
    "OVERRIDES",
    "StudySearcher",
    "TARGET_EPOCHS",
    "TUNE_TRIAL_ID",
    "default_storage_url",
    "end_orphans",
    "existing_study",
    "failure_reason",
    "full_url",
    "storage_from_environment",
    "open_storage",
    "redact",
    "register_trials",
    "target_epochs",
]
