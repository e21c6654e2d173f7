"""What a study with several objectives leaves in its output folder: its Pareto front.

- `trials.csv`: every trial as in a one-objective study, plus one `value:<metric>` column
  per objective (`value` holds the first);
- `pareto.csv`: the front (Optuna's `study.best_trials`: no other complete trial is at least
  as good on every objective and better on one), one row per trial, sorted on the first objective;
- `best_configs/trial_<n>.yaml`: each front point as an experiment `contrastlab train` runs;
- `pareto_front.png`: the trials in objective space, the front highlighted;
- `importances.json`: parameter importances for each objective over the complete trials, and
  `report.md` / `report.html` with the front and the importances (`tuning.report_render`);
- a summary for the terminal that lists the front.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial

from contrastlab.config import ExperimentConfig
from contrastlab.tuning.objectives import name_objectives
from contrastlab.tuning.report import complete_trials, state_counts, write_importances, write_trials_csv
from contrastlab.tuning.report_render import write_study_report
from contrastlab.tuning.study import OVERRIDES, TUNE_TRIAL_ID

log = logging.getLogger("contrastlab")
PARETO_CSV = "pareto.csv"
FRONT_DIR = "best_configs"
FRONT_PLOT = "pareto_front.png"


def front(study: optuna.Study, metrics: list[str], modes: list[str]) -> list[FrozenTrial]:
    """The Pareto front, best first on the first objective (then by trial number)."""
    sign = -1.0 if modes[0] == "max" else 1.0
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """Whether values `a` are at least as good as `b` on every objective and better on one."""
    signs = [1.0 if m == "max" else -1.0 for m in modes]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a, b))


def write_pareto_csv(points: list[FrozenTrial], metrics: list[str], path: Path) -> None:
    names = list(dict.fromkeys(name for t in points for name in t.user_attrs.get(OVERRIDES, t.params)))
    fields = ["number", "tune_trial_id", *metrics, *(f"param:{n}" for n in names), "config"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for trial in points:
            tuned = trial.user_attrs.get(OVERRIDES, trial.params)
            row = {"number": trial.number, "tune_trial_id": trial.user_attrs.get(TUNE_TRIAL_ID, "")}
            row.update(dict(zip(metrics, trial.values)))
            row.update({f"param:{n}": json.dumps(tuned[n]) if n in tuned else "" for n in names})
            row["config"] = f"{FRONT_DIR}/trial_{trial.number}.yaml"
            writer.writerow(row)


def write_front_configs(
    points: list[FrozenTrial], base: ExperimentConfig, metrics: list[str], folder: Path, study_name: str
) -> list[Path]:
    """One runnable experiment per front point; configs of trials no longer on the front go."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for trial in points:
        overrides = dict(trial.user_attrs.get(OVERRIDES, {}))
        cfg = base.with_overrides({**overrides, "name": f"{base.name}-pareto-{trial.number}"}, f"<study {study_name}>")
        values = ", ".join(f"{m} {v:.6g}" for m, v in zip(metrics, trial.values))
        header = (
            f"# Pareto front of study {study_name}: Optuna trial #{trial.number} "
            f"(Tune {trial.user_attrs.get(TUNE_TRIAL_ID, '?')}), {values}\n"
            f"# Tuned: {json.dumps(overrides, sort_keys=True)}\n"
        )
        path = folder / f"trial_{trial.number}.yaml"
        path.write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        written.append(path)
    for stale in set(folder.glob("trial_*.yaml")) - set(written):
        stale.unlink()
    return written


def plot_front(study: optuna.Study, metrics: list[str], path: Path) -> Path | None:
    """Optuna's Pareto-front plot of the complete trials, as a PNG (None without a complete trial)."""
    if not complete_trials(study) or len(metrics) not in (2, 3):
        path.unlink(missing_ok=True)
        return None
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_pareto_front

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        axes = plot_pareto_front(study, target_names=metrics)
    figure = axes.get_figure()
    figure.set_size_inches(7, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def pareto_summary(
    study: optuna.Study, points: list[FrozenTrial], metrics: list[str], modes: list[str], output: Path, url: str
) -> str:
    counts = state_counts(study)
    goals = ", ".join(f"{m} ({mode})" for m, mode in zip(metrics, modes))
    lines = [
        f"study {study.study_name} ({url})",
        "trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
        f"objectives: {goals}; test numbers are never used for selection",
    ]
    if points:
        lines.append(f"Pareto front: {len(points)} trials")
        for trial in points:
            values = ", ".join(f"{m} {v:.4g}" for m, v in zip(metrics, trial.values))
            tuned = json.dumps(trial.user_attrs.get(OVERRIDES, trial.params), sort_keys=True)
            lines.append(f"  #{trial.number}: {values} {tuned}")
        lines.append(f"front configs: {output / FRONT_DIR}  table: {output / PARETO_CSV}")
    else:
        lines.append("no complete trial yet: no Pareto front")
    if (output / FRONT_PLOT).is_file():
        lines.append(f"front plot: {output / FRONT_PLOT}")
    lines.append(f"trials table: {output / 'trials.csv'}")
    lines.append(f"tensorboard --logdir {output / 'tensorboard'}")
    lines.append(f"optuna-dashboard {url}")
    return "\n".join(lines)


def write_pareto_outputs(
    study: optuna.Study, base: ExperimentConfig, output: Path, url: str, metrics: list[str], modes: list[str]
) -> str:
    """Write every output file of a multi-objective study and return the summary."""
    output.mkdir(parents=True, exist_ok=True)
    if not study.metric_names:  # a study created before the names were recorded
        name_objectives(study, metrics)
    write_trials_csv(study, output / "trials.csv", metrics)
    importances = write_importances(study, output / "importances.json")
    write_study_report(study, output, importances)
    points = front(study, metrics, modes)
    write_pareto_csv(points, metrics, output / PARETO_CSV)
    write_front_configs(points, base, metrics, output / FRONT_DIR, study.study_name)
    plot_front(study, metrics, output / FRONT_PLOT)
    return pareto_summary(study, points, metrics, modes, output, url)


__all__ = [
    "FRONT_DIR",
    "FRONT_PLOT",
    "PARETO_CSV",
    "dominates",
    "front",
    "plot_front",
    "write_pareto_csv",
    "write_pareto_outputs",
]
