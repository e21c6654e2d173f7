"""Ablation studies: statistics over paired seeds and the comparison report."""

from contrastlab.ablation.report import (
    RESULTS_FILE,
    load_results,
    load_results_meta,
    report_from_run_dir,
    save_results,
    write_report,
)
from contrastlab.ablation.stats import (
    MetricAnalysis,
    PairedComparison,
    VariantStats,
    analyse_results,
    bootstrap_mean_ci,
    holm_correction,
    paired_difference,
    summarize,
    verdict,
)

__all__ = [
    "RESULTS_FILE",
    "MetricAnalysis",
    "PairedComparison",
    "VariantStats",
    "analyse_results",
    "bootstrap_mean_ci",
    "holm_correction",
    "load_results",
    "load_results_meta",
    "paired_difference",
    "report_from_run_dir",
    "save_results",
    "summarize",
    "verdict",
    "write_report",
]
