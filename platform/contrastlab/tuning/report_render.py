"""A study's report: report.md and report.html with their PNG figures, in the study folder.

Sections: parameter importances (per branch, with the rung and the trials they rest on),
the optimisation history, every trial's intermediate values (pruned trials visible),
parallel coordinates and slice plots of the trials at the importances' rung, and the
trials. A multi-objective study has no intermediate values and no single best value: its
report shows the Pareto front instead of the four single-objective figures. The blocks
are rendered by `contrastlab.study.render`, as the ablation report is.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from contrastlab.study.render import Block, html_page, markdown
from contrastlab.tuning.importance import ALL_TRIALS, rung_study
from contrastlab.tuning.report_plots import (
    plot_history,
    plot_importances,
    plot_intermediate,
    plot_parallel,
    plot_pareto,
    plot_slices,
)

FIGURES = {
    "importances": "importances.png",
    "history": "history.png",
    "intermediate": "intermediate_values.png",
    "parallel": "parallel_coordinate.png",
    "slice": "slice.png",
    "pareto": "pareto_front.png",
}
TRIAL_ROWS = 100  # the trials table lists at most this many (trials.csv has them all)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _values(trial: FrozenTrial) -> str:
    return ", ".join(f"{v:.4f}" for v in trial.values) if trial.values else ""


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' names: the study's metric names, else its `metric` attribute, else
    `objective N`."""
    names = getattr(study, "metric_names", None)
    if names:
        return list(names)
    if len(study.directions) == 1:
        return [str(study.user_attrs.get("metric", "objective"))]
    return [f"objective {i}" for i in range(len(study.directions))]


def _rung_text(rung: Any) -> str:
    return f"epoch {rung}" if isinstance(rung, int) else f"{rung} value"


def _trials_text(entry: dict[str, Any]) -> str:
    return f"{entry['trials']} ({entry.get('pruned_trials', 0)} pruned)"


def importance_blocks(payload: dict[str, Any], names: list[str]) -> list[Block]:
    blocks: list[Block] = [
        ("h2", "Parameter importances"),
        (
            "text",
            f"Method: {payload['method']}. Target: {payload['target']}. Each branch uses the highest rung "
            f"(epoch) that at least {payload['min_trials']} of its trials reached; a conditional parameter "
            "has its own branch, the trials that have it. Parameters with one value in a branch are left out.",
        ),
    ]
    rows = []
    for branch in payload["branches"]:
        head = [branch["branch"]] + ([names[branch["objective"]]] if len(names) > 1 else [])
        where = [_rung_text(branch["rung"]), _trials_text(branch)]
        if branch["importances"] is None:
            rows.append([*head, *where, "", branch.get("reason", "")])
            continue
        for name, value in sorted(branch["importances"].items(), key=lambda kv: -kv[1]):
            rows.append([*head, *where, name, f"{value:.3f}"])
    header = ["branch"] + (["objective"] if len(names) > 1 else []) + ["rung", "trials", "parameter", "importance"]
    blocks.append(("table", header, rows))
    return blocks


def trials_blocks(study: optuna.Study, names: list[str]) -> list[Block]:
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(name for t in trials for name in t.params))
    head = ["trial", "state", ", ".join(names), "last epoch", *params]
    rows = []
    for trial in trials[:TRIAL_ROWS]:
        last = max(trial.intermediate_values) if trial.intermediate_values else ""
        rows.append(
            [trial.number, trial.state.name, _values(trial), last, *[_fmt(trial.params.get(p, "")) for p in params]]
        )
    note = (
        f"The first {TRIAL_ROWS} of {len(trials)} trials; trials.csv lists them all."
        if len(trials) > TRIAL_ROWS
        else "A parameter left blank did not exist in that trial (its condition was not met)."
    ) + (" A pruned trial's value is its last intermediate value, at its last epoch." if len(names) == 1 else "")
    return [("h2", "Trials"), ("text", note), ("table", head, rows)]


def _figure_block(out: Path, key: str, drawn: bool, title: str, text: str, missing: str) -> list[Block]:
    name = FIGURES[key]
    if drawn:
        return [("h2", title), ("text", text), ("image", name)]
    (out / name).unlink(missing_ok=True)  # a stale figure of an earlier report would mislead
    return [("h2", title), ("text", f"No figure: {missing}.")]


def single_objective_blocks(study: optuna.Study, payload: dict[str, Any], metric: str, out: Path) -> list[Block]:
    main = next(b for b in payload["branches"] if b["branch"] == ALL_TRIALS)
    chosen = set(main["trial_numbers"]) if main["importances"] is not None else set()
    at_rung = [t for t in study.get_trials(deepcopy=False) if t.number in chosen]
    values = {t.number: {main["rung"]: t.intermediate_values[main["rung"]]} for t in at_rung}
    rung = rung_study(at_rung, values, main["rung"], study.direction) if at_rung else None
    varying = [
        name
        for name in dict.fromkeys(p for t in at_rung for p in t.params)
        if len({repr(t.params[name]) for t in at_rung if name in t.params}) > 1
    ]
    target = f"{metric} at {_rung_text(main['rung'])}"
    pruned = sum(t.state == TrialState.PRUNED for t in at_rung)
    about = f"{len(at_rung)} trials that reached {_rung_text(main['rung'])} ({pruned} of them pruned); value: {target}."
    no_rung = "the importances found no rung with enough trials"
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return [
        *_figure_block(
            out,
            "history",
            plot_history(study, metric, out / FIGURES["history"]),
            "Optimisation history",
            f"The {complete} complete trials (pruned ones have no final value) and the best value so far.",
            "no complete trial",
        ),
        *_figure_block(
            out,
            "intermediate",
            plot_intermediate(study, metric, out / FIGURES["intermediate"]),
            "Intermediate values",
            f"{metric} at every epoch of every trial, pruned trials included: where a line stops, "
            "the scheduler stopped the trial (or it completed).",
            "no trial reported an epoch",
        ),
        *_figure_block(
            out,
            "parallel",
            rung is not None and plot_parallel(rung, main["params"], target, out / FIGURES["parallel"]),
            "Parallel coordinates",
            f"The parameters every trial has, over the {about}",
            no_rung,
        ),
        *_figure_block(
            out,
            "slice",
            rung is not None and plot_slices(rung, varying, target, out / FIGURES["slice"]),
            "Slice plots",
            f"Each parameter against the value, over the {about} A conditional parameter's "
            "panel holds the trials that have it.",
            no_rung,
        ),
    ]


def facts(study: optuna.Study, names: list[str], payload: dict[str, Any]) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    directions = ", ".join(
        f"{name} ({'max' if d == optuna.study.StudyDirection.MAXIMIZE else 'min'})"
        for name, d in zip(names, study.directions, strict=True)
    )
    lines = [
        f"objective: {directions}",
        "trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(study.directions) == 1 and complete:
        best = study.best_trial
        lines.append(f"best: {best.value:.4f} (trial #{best.number}) {json.dumps(best.params, sort_keys=True)}")
    elif complete:
        lines.append(f"Pareto front: {len(study.best_trials)} of {len(complete)} complete trials")
    if payload.get("importances"):
        top = sorted(payload["importances"].items(), key=lambda kv: -kv[1])[:3]
        where = f"{_rung_text(payload['rung'])}, {payload['trials']} trials"
        where += f", {payload['branches'][0].get('pruned_trials', 0)} of them pruned"
        lines.append(f"most important ({where}): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    return lines


def write_study_report(study: optuna.Study, out: Path, payload: dict[str, Any]) -> dict[str, Path]:
    """report.md, report.html and their figures in `out`; returns the files by name."""
    out.mkdir(parents=True, exist_ok=True)
    names = metric_names(study)
    blocks = importance_blocks(payload, names)
    drawn = plot_importances(payload["branches"], out / FIGURES["importances"])
    blocks += [("image", FIGURES["importances"])] if drawn else []
    if len(study.directions) == 1:
        blocks += single_objective_blocks(study, payload, names[0], out)
    else:
        blocks += _figure_block(
            out,
            "pareto",
            plot_pareto(study, names, out / FIGURES["pareto"]),
            "Pareto front",
            "Every complete trial; the non-dominated ones form the front. The single-objective "
            "figures (history, intermediate values, parallel coordinates, slices) do not apply.",
            "needs complete trials and two or three objectives",
        )
    blocks += trials_blocks(study, names)
    title = f"Study {study.study_name}"
    summary = facts(study, names, payload)
    (out / "report.md").write_text(markdown(title, summary, blocks))
    (out / "report.html").write_text(html_page(title, summary, blocks, out))
    written = {"report.md": out / "report.md", "report.html": out / "report.html"}
    written.update({b[1]: out / b[1] for b in blocks if b[0] == "image"})
    return written


__all__ = ["FIGURES", "importance_blocks", "metric_names", "trials_blocks", "write_study_report"]
