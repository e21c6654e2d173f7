"""What a finished (or interrupted) study leaves in its output folder, read from the study.

- `trials.csv`: every trial (number, state, value, intermediate count, params, reason), with
  the val and test numbers of each complete trial side by side (selection read val only);
- `importances.json`: parameter importances at the highest rung enough trials reached,
  pruned trials included, per condition branch (`importance`);
- `best_config.yaml`: the best complete trial as an experiment `contrastlab train` runs;
- `report.md`, `report.html` and their figures (`report_render`);
- a short summary for the terminal.

`report_from_study_dir` remakes the table, the importances and the report of a study folder
from its database (`contrastlab report STUDY_FOLDER`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.engine.anchors import anchors_table
from contrastlab.errors import InputError
from contrastlab.tuning.importance import MIN_TRIALS, rung_importances
from contrastlab.tuning.report_render import write_study_report
from contrastlab.tuning.study import (
    EPOCHS_TRAINED,
    FAIL_REASON,
    FINAL_METRICS,
    OVERRIDES,
    TUNE_TRIAL_ID,
    existing_study,
    full_url,
    open_storage,
    redact,
)
from contrastlab.yamlfile import read_yaml

CSV_FIELDS = (
    "number",
    "tune_trial_id",
    "state",
    "value",
    "intermediate_values",
    "epochs_trained",
    "duration_s",
    "fail_reason",
)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    finals = sorted(
        dict.fromkeys(name for t in trials for name in t.user_attrs.get(FINAL_METRICS, {})),
        key=lambda name: (name.split("/", 1)[1], name),
    )  # val/x beside test/x
    rows = []
    for trial in trials:
        row = {
            "number": trial.number,
            "tune_trial_id": trial.user_attrs.get(TUNE_TRIAL_ID, ""),
            "state": trial.state.name,
            # values[0]: the value of a one-objective trial, the first objective's of several.
            "value": "" if trial.values is None else trial.values[0],
            "intermediate_values": len(trial.intermediate_values),
            "epochs_trained": trial.user_attrs.get(EPOCHS_TRAINED, ""),
            "duration_s": round(trial.duration.total_seconds(), 1) if trial.duration else "",
            "fail_reason": trial.user_attrs.get(FAIL_REASON, ""),
        }
        held_out = trial.user_attrs.get(FINAL_METRICS, {})
        row.update({name: held_out.get(name, "") for name in finals})
        row.update({f"param:{name}": trial.params.get(name, "") for name in names})
        rows.append(row)
    return rows


def value_columns(metrics: list[str]) -> list[str]:
    return [f"value:{metric}" for metric in metrics]


def write_trials_csv(study: optuna.Study, path: Path, metrics: list[str] | None = None) -> int:
    """Every trial; with several objectives (named by `metrics`, else by the study's metric
    names), one `value:<metric>` column each right after `value`, which holds the first."""
    rows = trial_rows(study)
    extra = [k for k in (rows[0] if rows else {}) if k not in CSV_FIELDS]
    fields = list(CSV_FIELDS) + extra
    metrics = metrics or (study.metric_names if len(study.directions) > 1 else None)
    if metrics:
        columns = value_columns(metrics)
        values = {t.number: t.values for t in study.get_trials(deepcopy=False)}
        for row in rows:
            found = values[row["number"]]
            row.update(dict.fromkeys(columns, "") if found is None else dict(zip(columns, found)))
        fields[fields.index("value") + 1 : fields.index("value") + 1] = columns
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def write_importances(
    study: optuna.Study, path: Path, min_trials: int = MIN_TRIALS, method: str = "fanova"
) -> dict[str, Any]:
    """Importances at the highest well-populated rung, per condition branch (`importance`);
    when they cannot be computed, the file says why."""
    payload = rung_importances(study, min_trials=min_trials, method=method)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial; None while there is none, and for several objectives (their
    Pareto front is in the report)."""
    if len(study.directions) > 1:
        return None
    return study.best_trial if complete_trials(study) else None


def write_best_config(study: optuna.Study, base: ExperimentConfig, path: Path, study_name: str) -> FrozenTrial | None:
    """The best complete trial's parameters applied to the base experiment, runnable as it is."""
    best = best_trial(study)
    if best is None:
        path.unlink(missing_ok=True)
        return None
    overrides = dict(best.user_attrs.get(OVERRIDES, {}))
    cfg = base.with_overrides({**overrides, "name": f"{base.name}-best"}, f"<study {study_name}>")
    header = (
        f"# Best trial of study {study_name}: Optuna trial #{best.number} "
        f"(Tune {best.user_attrs.get(TUNE_TRIAL_ID, '?')}), value {best.value:.6g}\n"
        f"# Tuned: {json.dumps(overrides, sort_keys=True)}\n"
    )
    path.write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return best


def state_counts(study: optuna.Study) -> dict[str, int]:
    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def summary_text(
    study: optuna.Study,
    output: Path,
    storage_url: str,
    metric: str,
    mode: str,
    importances: dict[str, Any],
    anchors: dict[str, Any] | None = None,
    seed: int | None = None,
) -> str:
    counts = state_counts(study)
    best = best_trial(study)
    split = "validation split" if metric.startswith("val/") else "training objective"
    lines = [
        f"study {study.study_name} ({storage_url})",
        "trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
        f"selected on {metric} ({split}); test numbers are shown beside it and never used for selection",
    ]
    if seed is not None:
        lines.append(f"every trial ran at seed {seed} (ablations evaluate on seeds below 1000)")
    if best is not None:
        tuned = json.dumps(best.user_attrs.get(OVERRIDES, best.params), sort_keys=True)
        lines.append(f"best {metric} ({mode}): {best.value:.4f} (trial #{best.number}) {tuned}")
        held_out = best.user_attrs.get(FINAL_METRICS, {})
        if held_out:
            lines.append(
                "  its held-out numbers: "
                + ", ".join(
                    f"{k} {v:.4f}" for k, v in sorted(held_out.items(), key=lambda kv: (kv[0].split("/", 1)[1], kv[0]))
                )
            )
        lines.append(f"best config: {output / 'best_config.yaml'}")
    else:
        lines.append(
            "several objectives: no single best config; the Pareto front is in report.md"
            if len(study.directions) > 1
            else "no complete trial yet: no best config"
        )
    if importances.get("importances"):
        top = sorted(importances["importances"].items(), key=lambda kv: -kv[1])[:5]
        where = f"epoch {importances['rung']}, {importances['trials']} trials"
        lines.append(f"importances ({where}): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
        branches = [b for b in importances.get("branches", [])[1:] if b.get("importances")]
        if branches:
            lines.append(f"  and {len(branches)} condition branches at their own rungs: {output / 'report.md'}")
    elif importances.get("reason"):
        lines.append(f"importances: none ({importances['reason']})")
    if anchors:
        names = [
            n
            for n in ("val/knn_top1", "test/knn_top1", "val/linear_top1", "test/linear_top1")
            if n in (anchors.get("raw_pixels") or {})
        ]
        lines += anchors_table(anchors, names)
    lines.append(f"trials table: {output / 'trials.csv'}; report: {output / 'report.md'}")
    lines.append(f"tensorboard --logdir {output / 'tensorboard'}")
    lines.append(f"optuna-dashboard {storage_url}")
    return "\n".join(lines)


def write_outputs(
    study: optuna.Study,
    base: ExperimentConfig,
    output: Path,
    storage_url: str,
    metric: str,
    mode: str,
    anchors: dict[str, Any] | None = None,
) -> str:
    """Write every output file and return the summary."""
    output.mkdir(parents=True, exist_ok=True)
    write_trials_csv(study, output / "trials.csv")
    importances = write_importances(study, output / "importances.json")
    write_best_config(study, base, output / "best_config.yaml", study.study_name)
    write_study_report(study, output, importances)
    return summary_text(study, output, storage_url, metric, mode, importances, anchors, base.seed)


# -- rebuilding a study folder's report ------------------------------------------------------------
SPEC_FILE = "study_spec.yaml"  # the resolved spec the runner saves in every study folder (runner.SPEC_FILE)


def load_study_dir(folder: str | Path) -> optuna.Study:
    """The study of a study folder: its study.db when the folder holds one (also after the
    folder was moved), else the database its study_spec.yaml names."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise InputError(f"{folder}: not a study folder (expected {SPEC_FILE}, written by contrastlab tune)")
    record = read_yaml(spec_path)
    name = record.get("study_name") if isinstance(record, dict) else None
    if not isinstance(name, str):
        raise ConfigError(str(spec_path), "study_name", "the Optuna study's name, as contrastlab tune saves it")
    local = folder / "study.db"
    url = f"sqlite:///{local.resolve()}" if local.is_file() else full_url(str(record.get("study_storage") or ""))
    if not url:
        raise ConfigError(str(spec_path), "study_storage", "the study's database URL (no study.db in the folder)")
    study = existing_study(open_storage(url), name)
    if study is None:
        raise InputError(f"{spec_path}: study_name: expected a study in {redact(url)}; it has no study {name!r}")
    return study


def report_from_study_dir(
    folder: str | Path, out_dir: str | Path | None = None, min_trials: int = MIN_TRIALS, method: str = "fanova"
) -> dict[str, Path]:
    """Remake trials.csv, importances.json and the report (into the folder by default)."""
    study = load_study_dir(folder)
    out = Path(out_dir) if out_dir else Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_trials_csv(study, out / "trials.csv")
    payload = write_importances(study, out / "importances.json", min_trials, method)
    written = write_study_report(study, out, payload)
    return {"trials.csv": out / "trials.csv", "importances.json": out / "importances.json", **written}


__all__ = [
    "load_study_dir",
    "report_from_study_dir",
    "state_counts",
    "summary_text",
    "trial_rows",
    "write_best_config",
    "write_importances",
    "write_outputs",
    "value_columns",
    "write_trials_csv",
]
