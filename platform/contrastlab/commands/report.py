"""`contrastlab report RUN_DIR`: remake an ablation's report from its results.json."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write an ablation's report (Markdown, HTML, CSV, plots) from its results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="an ablation's output folder (holds results.json)")
    parser.add_argument("--output", help="report folder (default: RUN_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from contrastlab.ablation.report import report_from_run_dir

    written = report_from_run_dir(args.run_dir, args.output)
    folder = Path(args.output) if args.output else Path(args.run_dir) / "report"
    print(f"report: {folder.resolve() / 'report.md'} ({len(written)} files: {', '.join(sorted(written))})")
    return 0
