"""The private attributes of Ray and Optuna that the project still reads, checked against
the installed packages (real classes and instances, no stand-ins).

When an upgrade renames or removes one of them, these tests say which attribute of which
class is gone and which accessor in contrastlab/study/internals.py must change.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray

from contrastlab.study import internals
from contrastlab.tuning.space_spec import parse_space

INTERNALS = "platform/contrastlab/study/internals.py"


def installed(where: str):
    module, _, name = where.rpartition(".")
    return getattr(importlib.import_module(module), name)


def missing_message(where: str, attribute: str, obj) -> str:
    return (
        f"{where} (ray {ray.__version__}, optuna {optuna.__version__}) has no attribute {attribute!r} any more: "
        f"update the accessor in {INTERNALS} that reads it (found instead: "
        f"{sorted(a for a in vars(obj) if a.startswith('_') and not a.startswith('__'))})"
    )


def searcher(tmp_path: Path, name: str = "s"):
    from ray.tune.search.optuna import OptunaSearch

    space = parse_space({"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}, "<test>")
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    return OptunaSearch(
        space=space,
        metric="loss",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        study_name=name,
        storage=storage,
    )


def asha():
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(time_attr="epoch", metric="loss", mode="min", max_t=4, grace_period=1)


def test_every_private_attribute_is_read_by_an_accessor_and_exists(tmp_path: Path) -> None:
    text = Path(internals.__file__).read_text()
    instances = {
        "ray.tune.search.optuna.OptunaSearch": searcher(tmp_path),
        "ray.tune.schedulers.AsyncHyperBandScheduler": asha(),
    }
    for where, attribute in internals.PRIVATE_ATTRIBUTES:
        assert f".{attribute}" in text or f'"{attribute}"' in text, f"{attribute} is listed but no accessor reads it"
        real = instances[where]
        assert isinstance(real, installed(where))
        assert hasattr(real, attribute), missing_message(where, attribute, real)


def test_optuna_search_keeps_its_trials_by_tune_trial_id(tmp_path: Path) -> None:
    real = searcher(tmp_path)
    assert hasattr(real, "_ot_trials"), missing_message("ray.tune.search.optuna.OptunaSearch", "_ot_trials", real)
    assert real.suggest("tune-1") is not None
    trials = internals.searcher_trials(real)
    assert isinstance(trials, dict) and set(trials) == {"tune-1"}, (
        f"OptunaSearch._ot_trials no longer maps Tune trial ids to Optuna trials: {trials!r}; "
        f"update searcher_trials in {INTERNALS}"
    )
    assert isinstance(trials["tune-1"], optuna.trial.Trial) and trials["tune-1"].number == 0


def test_asha_keeps_its_brackets_with_on_result(tmp_path: Path) -> None:
    from ray.tune.schedulers import TrialScheduler

    real = asha()
    assert hasattr(real, "_brackets"), missing_message("ray.tune.schedulers.AsyncHyperBandScheduler", "_brackets", real)
    bracket = internals.asha_bracket(real)
    assert callable(getattr(bracket, "on_result", None)), (
        f"AsyncHyperBandScheduler._brackets[0] has no on_result(trial, cur_iter, cur_rew) any more; "
        f"update asha_bracket in {INTERNALS} and StudyASHA.rebuild_rungs"
    )
    # Its rule as the project relies on it: a value below the rung's cutoff is stopped.
    for index, value in enumerate([-1.0, -2.0, -3.0, -4.0]):
        bracket.on_result(SimpleNamespace(trial_id=f"t{index}"), 1, value)
    assert bracket.on_result(SimpleNamespace(trial_id="late"), 1, -10.0) == TrialScheduler.STOP


def test_the_public_optuna_calls_the_searcher_relies_on(tmp_path: Path) -> None:
    """Trial number -> storage id, telling by number: the replacements of `_trial_id` and `_ot_study`."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'public.db'}")
    study = optuna.create_study(study_name="p", storage=storage)
    trial = study.ask()
    trial.report(0.5, 1)
    study_id = storage.get_study_id_from_name("p")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    assert storage.get_trial(trial_id).intermediate_values == {1: 0.5}
    optuna.load_study(study_name="p", storage=storage).tell(trial.number, 0.5)
    assert storage.get_trial(trial_id).state == optuna.trial.TrialState.COMPLETE


# -- the searcher and the scheduler through the accessors ------------------------------------
def study_searcher(tmp_path: Path):
    from contrastlab.tuning.study import StudySearcher

    space = parse_space({"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}, "<test>")
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    return StudySearcher(
        space, "loss", "min", "s", storage, optuna.samplers.RandomSampler(seed=0), base_epochs=2, max_t=2
    )


def test_study_searcher_records_states_values_and_orphans(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from contrastlab.tuning.study import FAIL_REASON, STOPPED_BY, TUNE_TRIAL_ID, end_orphans

    searcher = study_searcher(tmp_path)
    assert searcher.suggest("done") is not None
    searcher.on_trial_result("done", {"loss": 3.0, "epoch": 1})
    searcher.on_trial_result("done", {"loss": 3.0, "epoch": 1})  # a resumed trial repeats an epoch: kept once
    searcher.on_trial_complete("done", {"loss": 2.5, "epoch": 2})
    searcher.on_trial_complete("done", {"loss": 9.9, "epoch": 2})  # told once
    searcher.suggest("stopped")
    searcher.on_trial_complete("stopped", {"loss": 4.0, "epoch": 1})
    searcher.suggest("broken")
    searcher.on_trial_complete("broken", None, error=True)
    orphan = searcher.study.ask()  # asked after Tune last saved its state
    assert end_orphans(searcher.study_storage, "s", {"done", "stopped", "broken"}) == 1

    study = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}"))
    trials = {t.user_attrs.get(TUNE_TRIAL_ID, t.number): t for t in study.get_trials()}
    done, stopped, broken = trials["done"], trials["stopped"], trials["broken"]
    assert done.state == TrialState.COMPLETE and done.value == 2.5
    assert done.intermediate_values == {1: 3.0, 2: 2.5}
    assert stopped.state == TrialState.PRUNED and stopped.user_attrs[STOPPED_BY] == "scheduler"
    assert broken.state == TrialState.FAIL and broken.user_attrs[FAIL_REASON]
    assert (
        trials[orphan.number].state == TrialState.FAIL
        and "interrupted" in trials[orphan.number].user_attrs[FAIL_REASON]
    )


@pytest.mark.parametrize("mode", ["min", "max"])
def test_study_asha_negates_only_minimised_metrics(tmp_path: Path, mode: str) -> None:
    from contrastlab.tuning.scheduler import StudyASHA

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    optuna.create_study(study_name="s", storage=storage)
    scheduler = StudyASHA("s", storage, metric="loss", mode=mode, max_t=4, grace_period=1)
    assert scheduler.sign == (1.0 if mode == "max" else -1.0)
    with pytest.raises(ValueError, match="min or max"):
        StudyASHA("s", storage, metric="loss", mode=None, max_t=4)


def test_a_searcher_pickled_without_its_own_bookkeeping_still_resumes(tmp_path: Path) -> None:
    """Tune pickles the searcher with the experiment: a study started before the searcher kept
    its own study name, storage and told trials is resumed from OptunaSearch's attributes."""
    import pickle

    searcher = study_searcher(tmp_path)
    searcher.suggest("done")
    searcher.on_trial_complete("done", {"loss": 2.5, "epoch": 2})
    state = dict(searcher.__dict__)
    for key in ("optuna_study_name", "study_storage", "study_sampler", "told"):
        state.pop(key)
    for where, attribute in internals.PRIVATE_ATTRIBUTES:
        if where.endswith("OptunaSearch"):
            assert attribute in state, missing_message(where, attribute, searcher)
    state["_completed_trials"] = {"done"}
    legacy = type(searcher).__new__(type(searcher))
    legacy.__setstate__(pickle.loads(pickle.dumps(state)))
    assert legacy.told == {"done"} and legacy.optuna_study_name == "s"
    assert legacy.is_finished(0) and legacy.study.trials[0].value == 2.5


def test_the_autoscaler_config_reader_exists_with_its_fields() -> None:
    """`autoscaler_node_types` reads `ray._private.state.state.get_cluster_config()` and its
    `node_group_configs` (`resources`, `max_count`); it returns None when they are gone, so
    the pre-flight check would silently fall back to warnings: this test notices instead."""
    from ray._private.state import state
    from ray.core.generated import autoscaler_pb2

    assert callable(getattr(state, "get_cluster_config", None)), f"update autoscaler_node_types in {INTERNALS}"
    group = autoscaler_pb2.ClusterConfig().node_group_configs.add()
    group.resources["GPU"] = 8
    group.max_count = 2
    assert dict(group.resources) == {"GPU": 8} and group.max_count == 2
