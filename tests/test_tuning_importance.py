"""Importances that survive pruning: at the highest rung enough trials reached, per branch.

The studies are built without Ray (`tests.helpers.pruned_study`): every trial reports epochs
1-2, every third one runs to 6; the value rises with `method.synthetic_count`, which exists
only when `method.synthesis` is true. The expected rungs are counted here from the trials'
intermediate values, independently of the code under test.
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from contrastlab.tuning.importance import (
    ALL_TRIALS,
    FINAL,
    MIN_TRIALS,
    condition_text,
    param_groups,
    pick_rung,
    rung_importances,
)
from contrastlab.tuning.report import write_importances
from tests.helpers import pruned_study

CONDITIONAL = "method.synthetic_count"


def expected_rung(trials, min_trials: int) -> tuple[int, list[int]]:
    """Highest epoch at least `min_trials` of `trials` reported, counted by hand."""
    for epoch in sorted({e for t in trials for e in t.intermediate_values}, reverse=True):
        reached = sorted(t.number for t in trials if epoch in t.intermediate_values)
        if len(reached) >= min_trials:
            return epoch, reached
    raise AssertionError("no epoch has enough trials")


def branch(payload: dict, condition: str) -> dict:
    found = [b for b in payload["branches"] if b["condition"] == condition]
    assert len(found) == 1, [b["branch"] for b in payload["branches"]]
    return found[0]


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return pruned_study(trials=48)


@pytest.mark.parametrize("min_trials", [MIN_TRIALS, 12])
def test_conditional_parameter_ranks_first_in_its_branch_at_the_rung(study, min_trials):
    payload = rung_importances(study, min_trials=min_trials)
    found = branch(payload, "method.synthesis = True")
    members = [t for t in study.get_trials() if t.params["method.synthesis"]]
    rung, numbers = expected_rung(members, min_trials)
    assert (found["rung"], found["trial_numbers"], found["trials"]) == (rung, numbers, len(numbers))
    ranked = sorted(found["importances"], key=found["importances"].get, reverse=True)
    assert ranked[0] == CONDITIONAL, found["importances"]
    assert sum(found["importances"].values()) == pytest.approx(1.0)
    assert "method.synthesis" not in found["importances"]  # one value in the branch: left out
    states = {study.trials[n].state for n in numbers}
    assert found["pruned_trials"] == sum(study.trials[n].state == TrialState.PRUNED for n in numbers)
    if min_trials == 12:  # epoch 6 has 8 such trials: the rung falls to 2, mostly PRUNED trials
        assert rung == 2 and TrialState.PRUNED in states


def test_all_trials_branch_has_shared_parameters_and_names_its_rung(study):
    payload = rung_importances(study)
    main = payload["branches"][0]
    assert main["branch"] == ALL_TRIALS and main["condition"] is None
    rung, numbers = expected_rung(study.get_trials(), MIN_TRIALS)
    assert (payload["rung"], payload["trials"], main["trial_numbers"]) == (rung, len(numbers), numbers)
    assert set(payload["importances"]) == {"method.temperature", "optim.lr", "method.synthesis"}
    assert payload["importances"] == main["importances"]
    assert max(payload["importances"], key=payload["importances"].get) == "method.synthesis"
    assert "fANOVA" in payload["method"] and payload["min_trials"] == MIN_TRIALS


def test_too_few_trials_say_so_instead_of_numbers(tmp_path):
    payload = write_importances(pruned_study(trials=3), tmp_path / "importances.json")
    saved = json.loads((tmp_path / "importances.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["importances"] is None and "too few trials" in saved["reason"]
    assert all(b["importances"] is None and "too few" in b["reason"] for b in saved["branches"])
    assert saved["rung"] == 2 and saved["trials"] == 3


def test_groups_and_conditions_are_read_from_the_trials(study):
    trials = study.get_trials()
    assert param_groups(trials) == [(CONDITIONAL,)]
    members = [t for t in trials if CONDITIONAL in t.params]
    others = [t for t in trials if CONDITIONAL not in t.params]
    assert condition_text(members, others) == "method.synthesis = True"
    # Half of the members do not separate from the others on any parameter's value.
    assert condition_text(members[: len(members) // 2], others + members[len(members) // 2 :]) is None


def test_pick_rung_prefers_the_highest_populated_epoch():
    values = {0: {1: 0.1, 2: 0.2, 4: 0.4}, 1: {1: 0.1, 2: 0.2, 4: 0.4}, 2: {1: 0.1, 2: 0.2}, 3: {1: 0.1}}
    assert pick_rung(values, [0, 1, 2, 3], 2) == (4, [0, 1])
    assert pick_rung(values, [0, 1, 2, 3], 3) == (2, [0, 1, 2])
    assert pick_rung(values, [1, 2, 3], 5) == (1, [1, 2, 3])  # too few anywhere: the fullest epoch
    assert pick_rung(values, [], 2) == (FINAL, [])


def test_multi_objective_importances_per_objective_over_complete_trials():
    study = optuna.create_study(directions=["maximize", "minimize"])
    x, y = FloatDistribution(0, 1), FloatDistribution(0, 1)
    for i in range(12):
        a, b = (i % 4) / 4, (i * 7 % 12) / 12
        study.add_trial(create_trial(params={"x": a, "y": b}, distributions={"x": x, "y": y}, values=[a, b]))
    payload = rung_importances(study)
    assert [b["objective"] for b in payload["branches"]] == [0, 1]
    assert all(b["rung"] == FINAL and b["trials"] == 12 for b in payload["branches"])
    first, second = (b["importances"] for b in payload["branches"])
    assert max(first, key=first.get) == "x" and max(second, key=second.get) == "y"


def test_unknown_method_and_tiny_minimum_are_refused(study):
    with pytest.raises(ValueError, match="fanova"):
        rung_importances(study, method="shap")
    with pytest.raises(ValueError, match="at least 2"):
        rung_importances(study, min_trials=1)
