"""Every read of a private attribute of Ray or Optuna, in one place.

Where a public API does the job, the project uses it (`optuna.Study.tell`,
`Study.get_trials`, `Trial.number`, `BaseStorage.get_trial`,
`BaseStorage.get_trial_id_from_study_id_trial_number`). What is left has no public
equivalent; each accessor says what it reads and against which versions it was checked,
and tests/test_private_apis.py fails with a clear message when an installed Ray or Optuna
no longer has the attribute.

Checked against ray 2.60.0 and optuna 5.0.0.
"""

from __future__ import annotations

from typing import Any

# (class, attribute, where the class lives): what tests/test_private_apis.py checks.
PRIVATE_ATTRIBUTES = (
    ("ray.tune.search.optuna.OptunaSearch", "_ot_trials"),
    ("ray.tune.search.optuna.OptunaSearch", "_study_name"),
    ("ray.tune.search.optuna.OptunaSearch", "_storage"),
    ("ray.tune.search.optuna.OptunaSearch", "_sampler"),
    ("ray.tune.search.optuna.OptunaSearch", "_completed_trials"),
    ("ray.tune.schedulers.AsyncHyperBandScheduler", "_brackets"),
)


def searcher_trials(searcher: Any) -> dict[str, Any]:
    """`OptunaSearch._ot_trials`: Tune trial id -> the `optuna.Trial` the searcher asked for it.

    Set in `OptunaSearch.__init__` and filled by `suggest` (`study.ask()` per Tune trial);
    it is saved and restored with the searcher's state. Ray offers no public way from a
    Tune trial id to its Optuna trial; the study's own records (user attributes) are only
    written after `suggest` returns. Checked: ray 2.60.0.
    """
    return searcher._ot_trials


def legacy_searcher_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a `StudySearcher` pickled before it kept its own bookkeeping needs, read from
    OptunaSearch's attributes in that pickled state: `_study_name`, `_storage` and
    `_sampler` (the arguments it was built with) and `_completed_trials` (the Tune trial
    ids it has told Optuna about). Tune pickles the searcher with the experiment, so a
    study started before then is resumed from such a state. Checked: ray 2.60.0.
    """
    return {
        "optuna_study_name": state["_study_name"],
        "study_storage": state["_storage"],
        "study_sampler": state["_sampler"],
        "told": set(state.get("_completed_trials", ())),
    }


def autoscaler_node_types() -> list[dict[str, float]] | None:
    """The resources of each node type the cluster's autoscaler may start
    (`ray._private.state.state.get_cluster_config().node_group_configs`, groups whose
    `max_count` is not 0), or None where the cluster publishes no such config (a fixed
    cluster, an older autoscaler) or the read fails. Ray offers no public way to learn the
    largest node a cluster could grow. Checked: ray 2.60.0.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:
        return None
    if config is None:
        return None
    groups = [group for group in config.node_group_configs if group.max_count]
    types = [{key: float(value) for key, value in group.resources.items()} for group in groups]
    return types or None


def asha_bracket(scheduler: Any) -> Any:
    """`AsyncHyperBandScheduler._brackets[0]`: the first (with Tune's default brackets=1,
    the only) bracket, whose public `on_result(trial, cur_iter, cur_rew)` records a value in
    its rungs and returns the decision. Ray has no public way to seed the rungs of a
    restored scheduler. Checked: ray 2.60.0.
    """
    return scheduler._brackets[0]


__all__ = ["PRIVATE_ATTRIBUTES", "asha_bracket", "autoscaler_node_types", "legacy_searcher_state", "searcher_trials"]
