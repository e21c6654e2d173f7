"""`contrastlab report FOLDER`: remake the report of an ablation or of a study.

An ablation's folder holds results.json (the report goes to FOLDER/report); a study's folder
holds study_spec.yaml and reads its trials from the study database (the report goes into the
folder itself, beside trials.csv and importances.json, which are remade too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contrastlab.errors import InputError

HELP = "remake the report (Markdown, HTML, plots) of an ablation folder or a tuning study folder"
ABLATION_MARK = "results.json"
STUDY_MARK = "study_spec.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="an ablation's output folder (holds results.json) or a study's (holds study_spec.yaml)"
    )
    parser.add_argument("--output", help="report folder (default: RUN_DIR/report for an ablation, RUN_DIR for a study)")
    parser.add_argument(
        "--min-trials",
        type=int,
        default=None,
        help="study only: the fewest trials a branch needs at its rung for importances (default 5)",
    )
    parser.add_argument(
        "--importance",
        choices=("fanova", "mean_decrease_impurity"),
        default="fanova",
        help="study only: Optuna's importance evaluator (default fanova)",
    )


def folder_kind(folder: Path) -> str:
    """`ablation` or `study`, from the file each kind of folder holds; else a one-line error."""
    if not folder.is_dir():
        raise InputError(f"{folder}: expected an ablation or study folder (not found)")
    if (folder / ABLATION_MARK).is_file():
        return "ablation"
    if (folder / STUDY_MARK).is_file():
        return "study"
    raise InputError(
        f"{folder}: expected an ablation folder (with {ABLATION_MARK}) or a study folder "
        f"(with {STUDY_MARK}); it holds neither"
    )


def run(args: argparse.Namespace) -> int:
    folder = Path(args.run_dir)
    kind = folder_kind(folder)
    if kind == "ablation":
        from contrastlab.ablation.report import report_from_run_dir

        written = report_from_run_dir(folder, args.output)
        out = Path(args.output) if args.output else folder / "report"
    else:
        from contrastlab.tuning.importance import MIN_TRIALS
        from contrastlab.tuning.report import report_from_study_dir

        min_trials = MIN_TRIALS if args.min_trials is None else args.min_trials
        if min_trials < 2:
            raise InputError(f"--min-trials: expected at least 2 trials (got {min_trials})")
        written = report_from_study_dir(folder, args.output, min_trials=min_trials, method=args.importance)
        out = Path(args.output) if args.output else folder
    print(f"report: {out.resolve() / 'report.md'} ({len(written)} files: {', '.join(sorted(written))})")
    return 0
