"""Parameter importances that survive pruning, per condition branch.

Optuna's own `get_param_importances(study)` reads COMPLETE trials only. Under ASHA most
trials are PRUNED, so it rests on the one or two trials that ran their full schedule; and
its evaluators other than PED-ANOVA (fANOVA among them) assess only the parameters every
complete trial has, so a conditional parameter (one that exists only when another has a
given value) is left out.

Here every trial that reported its metric counts (COMPLETE and PRUNED ones alike), and its
target is its intermediate value at a *rung*: the highest epoch that at least `min_trials`
trials reached. The trials are split into branches:

- `all trials`: every trial, with the parameters they all have;
- one branch per group of conditional parameters that appear in the same trials (e.g. every
  parameter conditioned on `method.synthesis = True`): the trials that have them, with the
  parameters all of those trials have, the group included.

Each branch picks its own rung, and parameters that take a single value in the branch (the
condition itself) are left out. A branch with fewer than `min_trials` trials at every
epoch gets a reason instead of numbers. Every branch records the method, the rung and
the trial numbers beside its importances.

The rung is chosen among the trials ASHA let reach it, which are the better ones of the
rungs below: importances at a high rung describe the differences among those survivors.

A multi-objective study has no intermediate values (Optuna refuses them there): its
importances are computed per objective over the COMPLETE trials, with the rung `final`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# The fewest trials a branch needs at its rung (fANOVA's forest over fewer says little).
MIN_TRIALS = 5
METHODS: dict[str, Callable[[int], optuna.importance.BaseImportanceEvaluator]] = {
    "fanova": lambda seed: optuna.importance.FanovaImportanceEvaluator(seed=seed),
    "mean_decrease_impurity": lambda seed: optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=seed),
}
METHOD_TEXT = {
    "fanova": "fANOVA (optuna.importance.FanovaImportanceEvaluator)",
    "mean_decrease_impurity": "mean decrease in impurity (optuna.importance.MeanDecreaseImpurityImportanceEvaluator)",
}
ALL_TRIALS = "all trials"
FINAL = "final"

Rung = int | str  # an epoch, or FINAL for the values of complete trials


def _measured(study: optuna.Study) -> list[FrozenTrial]:
    """Trials with a measurement of the metric: finished as COMPLETE or PRUNED."""
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=states) if t.params]


def _targets(study: optuna.Study, objective: int) -> dict[int, dict[Rung, float]]:
    """Each trial's values by rung: its intermediate values by epoch, or (multi-objective)
    the final value of a complete trial."""
    out: dict[int, dict[Rung, float]] = {}
    for trial in _measured(study):
        if len(study.directions) > 1:
            if trial.state == TrialState.COMPLETE and trial.values is not None:
                out[trial.number] = {FINAL: float(trial.values[objective])}
        elif trial.intermediate_values:
            out[trial.number] = {int(k): float(v) for k, v in trial.intermediate_values.items()}
    return out


def param_groups(trials: Sequence[FrozenTrial]) -> list[tuple[str, ...]]:
    """Conditional parameters grouped by the trials that have them (sorted, largest first)."""
    everyone = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    holders: dict[str, frozenset[int]] = {}
    for trial in trials:
        for name in trial.params:
            if name not in everyone:
                holders[name] = holders.get(name, frozenset()) | {trial.number}
    groups: dict[frozenset[int], list[str]] = {}
    for name, numbers in holders.items():
        groups.setdefault(numbers, []).append(name)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[0]), sorted(kv[1])))
    return [tuple(sorted(names)) for _, names in ordered]


def condition_text(members: Sequence[FrozenTrial], others: Sequence[FrozenTrial]) -> str | None:
    """`param = value` that holds in exactly the branch's trials, when one does."""
    for name in sorted(members[0].params):
        value = members[0].params[name]
        if all(t.params.get(name, object()) == value for t in members) and not any(
            name in t.params and t.params[name] == value for t in others
        ):
            return f"{name} = {value}"
    return None


def _order(rung: Rung) -> int:
    return rung if isinstance(rung, int) else 0  # FINAL is a rung on its own


def pick_rung(values: dict[int, dict[Rung, float]], numbers: Sequence[int], min_trials: int) -> tuple[Rung, list[int]]:
    """The highest rung at least `min_trials` of `numbers` reached, and those trials; else the
    rung most of them reached (with fewer trials than asked)."""
    counts: dict[Rung, list[int]] = {}
    for number in numbers:
        for rung in values.get(number, {}):
            counts.setdefault(rung, []).append(number)
    if not counts:
        return FINAL, []
    enough = [rung for rung, reached in counts.items() if len(reached) >= min_trials]
    if enough:
        rung = max(enough, key=_order)
    else:
        rung = max(counts, key=lambda r: (len(counts[r]), _order(r)))
    return rung, sorted(counts[rung])


def _varying(trials: Sequence[FrozenTrial], names: Sequence[str]) -> list[str]:
    return [n for n in names if len({repr(t.params[n]) for t in trials}) > 1]


def rung_study(
    trials: Sequence[FrozenTrial], values: dict[int, dict[Rung, float]], rung: Rung, direction
) -> optuna.Study:
    """An in-memory study whose trials are `trials` with their value at `rung` as the value."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory" per branch
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(trial.params),
                distributions=dict(trial.distributions),
                value=values[trial.number][rung],
                user_attrs={"number": trial.number, "state": trial.state.name},
            )
        )
    return study


def branch_importances(
    name: str,
    trials: Sequence[FrozenTrial],
    values: dict[int, dict[Rung, float]],
    *,
    direction,
    min_trials: int,
    method: str,
    seed: int,
    condition: str | None = None,
) -> dict[str, Any]:
    """One branch's importances at its rung, or the reason there are none."""
    rung, numbers = pick_rung(values, [t.number for t in trials], min_trials)
    at_rung = [t for t in trials if t.number in set(numbers)]
    shared = sorted(set.intersection(*(set(t.params) for t in at_rung))) if at_rung else []
    params = _varying(at_rung, shared)
    entry: dict[str, Any] = {
        "branch": name,
        "condition": condition,
        "method": method,
        "rung": rung,
        "trials": len(at_rung),
        "pruned_trials": sum(t.state == TrialState.PRUNED for t in at_rung),
        "trial_numbers": numbers,
        "params": params,
        "importances": None,
    }
    if len(at_rung) < min_trials:
        most = f"at most {len(at_rung)} trials reached any one epoch" if at_rung else "no trial reported the metric"
        entry["reason"] = f"too few trials: {most}; importances need at least {min_trials} at one rung"
        return entry
    if not params:
        entry["reason"] = "no parameter takes more than one value in these trials"
        return entry
    study = rung_study(at_rung, values, rung, direction)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=METHODS[method](seed), params=params)
    except (RuntimeError, ValueError) as err:
        entry["reason"] = f"{type(err).__name__}: {err}"
        return entry
    entry["importances"] = {k: float(v) for k, v in found.items()}
    return entry


def rung_importances(
    study: optuna.Study, min_trials: int = MIN_TRIALS, method: str = "fanova", seed: int = 0
) -> dict[str, Any]:
    """Importances per branch (and per objective in a multi-objective study), as saved in
    importances.json. The top-level `importances` are those of the `all trials` branch
    (of the first objective), with their rung, trials and method beside them."""
    if method not in METHODS:
        raise ValueError(f"importance method {method!r}: expected one of {sorted(METHODS)}")
    if min_trials < 2:
        raise ValueError(f"min_trials {min_trials}: expected at least 2")
    multi = len(study.directions) > 1
    branches: list[dict[str, Any]] = []
    for objective, direction in enumerate(study.directions):
        values = _targets(study, objective)
        trials = [t for t in _measured(study) if t.number in values]
        kwargs = {"direction": direction, "min_trials": min_trials, "method": method, "seed": seed}
        found = [branch_importances(ALL_TRIALS, trials, values, **kwargs)]
        for group in param_groups(trials):
            members = [t for t in trials if set(group) <= set(t.params)]
            others = [t for t in trials if not set(group) <= set(t.params)]
            condition = condition_text(members, others)
            label = ", ".join(group) if condition is None else f"{condition} ({', '.join(group)})"
            found.append(branch_importances(label, members, values, condition=condition, **kwargs))
        for entry in found:
            entry["objective"] = objective
        branches += found
    main = branches[0]
    target = (
        "each complete trial's final value of each objective"
        if multi
        else "each trial's intermediate value of the metric at the rung (pruned trials included)"
    )
    payload: dict[str, Any] = {
        "method": METHOD_TEXT[method],
        "target": target,
        "min_trials": min_trials,
        "seed": seed,
        "importances": main["importances"],
        "rung": main["rung"],
        "trials": main["trials"],
        "branches": branches,
    }
    if main["importances"] is None:
        payload["reason"] = main["reason"]
    return payload


__all__ = [
    "ALL_TRIALS",
    "FINAL",
    "METHODS",
    "MIN_TRIALS",
    "branch_importances",
    "condition_text",
    "param_groups",
    "pick_rung",
    "rung_importances",
    "rung_study",
]
