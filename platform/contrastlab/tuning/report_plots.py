"""The figures of a study's report, as PNG files beside it.

Optuna draws most of them (`optuna.visualization.matplotlib`, which needs no browser and
no plotly); the importances are drawn here, one panel per branch, with the rung and the
number of trials in each title. Optuna's functions draw on pyplot figures; each is saved,
then closed, so nothing is left open in the process. Every function returns whether it
wrote its file: a study with too little to show gets no figure, and the report says why.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from contrastlab.study.render import figure

DPI = 100


def _save_optuna(draw: Callable[[], Any], path: Path, adjust: Callable[[Any], None] | None = None) -> None:
    """Run one of Optuna's matplotlib plots, `adjust` its first axes, save the figure."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # The parallel-coordinate colour bar does not fit tight_layout; its figure is fine.
        warnings.filterwarnings("ignore", message=".*tight_layout.*", category=UserWarning)
        drawn = draw()
        first = drawn.flat[0] if hasattr(drawn, "flat") else drawn
        fig = first.figure
        try:
            if adjust is not None:
                adjust(first)
            fig.set_size_inches(max(fig.get_figwidth(), 7.0), max(fig.get_figheight(), 4.2))
            fig.tight_layout()
            fig.savefig(path, dpi=DPI)
        finally:
            plt.close(fig)


def plot_history(study: optuna.Study, metric: str, path: Path) -> bool:
    """The value of each complete trial and the best so far (single-objective studies)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return False
    _save_optuna(lambda: optuna.visualization.matplotlib.plot_optimization_history(study, target_name=metric), path)
    return True


def plot_intermediate(study: optuna.Study, metric: str, path: Path) -> bool:
    """Every trial's per-epoch values, pruned trials included (dashed, ending in a cross)."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.intermediate_values for t in trials):
        return False
    states = {f"Trial{t.number}": t.state for t in trials}

    def adjust(axis: Any) -> None:
        from matplotlib.lines import Line2D

        for line in axis.get_lines():
            state = states.get(str(line.get_label()))
            if state == TrialState.PRUNED:
                line.set(linestyle="--", alpha=0.7, linewidth=1.0, marker="")
                x, y = line.get_data()
                axis.plot(x[-1:], y[-1:], marker="x", color=line.get_color(), linestyle="")
            elif state == TrialState.COMPLETE:
                line.set(linewidth=2.0)
        if axis.get_legend() is not None:  # one entry per trial: unreadable past a dozen
            axis.get_legend().remove()
        axis.legend(
            [Line2D([], [], linewidth=2.0), Line2D([], [], linestyle="--", marker="x")],
            ["complete", "pruned (x: where it stopped)"],
            fontsize="small",
        )
        axis.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch, every trial")

    _save_optuna(lambda: optuna.visualization.matplotlib.plot_intermediate_values(study), path, adjust)
    return True


def plot_parallel(rung_study: optuna.Study, params: Sequence[str], target_name: str, path: Path) -> bool:
    """Parallel coordinates of `params` over the trials of a rung study (value at the rung)."""
    if len(rung_study.trials) < 2 or not params:
        return False
    _save_optuna(
        lambda: optuna.visualization.matplotlib.plot_parallel_coordinate(
            rung_study, params=list(params), target_name=target_name
        ),
        path,
    )
    return True


def plot_slices(rung_study: optuna.Study, params: Sequence[str], target_name: str, path: Path) -> bool:
    """One panel per parameter: the value at the rung against the parameter, over the trials
    that have it (a conditional parameter's panel holds its branch's trials)."""
    if len(rung_study.trials) < 2 or not params:
        return False
    _save_optuna(
        lambda: optuna.visualization.matplotlib.plot_slice(rung_study, params=list(params), target_name=target_name),
        path,
    )
    return True


def plot_pareto(study: optuna.Study, names: Sequence[str] | None, path: Path) -> bool:
    """The Pareto front of a study with two or three objectives."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete or len(study.directions) not in (2, 3):
        return False
    _save_optuna(
        lambda: optuna.visualization.matplotlib.plot_pareto_front(study, target_names=list(names) if names else None),
        path,
    )
    return True


def _rung_label(entry: dict[str, Any]) -> str:
    rung = entry["rung"]
    return f"epoch {rung}" if isinstance(rung, int) else f"{rung} values"


def plot_importances(branches: Sequence[dict[str, Any]], path: Path) -> bool:
    """One horizontal bar panel per branch with importances."""
    shown = [b for b in branches if b.get("importances")]
    if not shown:
        return False
    cols = min(2, len(shown))
    rows = math.ceil(len(shown) / cols)
    tallest = max(len(b["importances"]) for b in shown)
    fig, axes = figure(6.5 * cols, (0.45 * tallest + 1.4) * rows, rows, cols)
    for axis in axes[len(shown) :]:
        axis.set_visible(False)
    for axis, branch in zip(axes, shown, strict=False):
        pairs = sorted(branch["importances"].items(), key=lambda kv: kv[1])
        axis.barh([name for name, _ in pairs], [value for _, value in pairs], color="tab:blue")
        axis.set_xlim(0, 1)
        objective = f"objective {branch['objective']}, " if branch.get("objective") else ""
        axis.set_title(
            "\n".join(textwrap.wrap(branch["branch"], 60))
            + f"\n{objective}{_rung_label(branch)}, {branch['trials']} trials "
            f"({branch.get('pruned_trials', 0)} pruned)",
            fontsize="small",
        )
        axis.tick_params(labelsize="small")
        axis.set_xlabel("importance (sums to 1 in each branch)", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return True


__all__ = [
    "plot_history",
    "plot_importances",
    "plot_intermediate",
    "plot_parallel",
    "plot_pareto",
    "plot_slices",
]
