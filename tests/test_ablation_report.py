"""The ablation report on a fixed results table whose statistics are worked out by hand."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from contrastlab.ablation import (
    analyse_results,
    load_results,
    load_results_meta,
    report_from_run_dir,
    save_results,
    write_report,
)
from contrastlab.config import ConfigError

SEEDS = (0, 1, 2)
# full: 0.70, 0.72, 0.74 (mean 0.72, std 0.02). no_a drops by 0.10, 0.09, 0.11 (clear effect).
# no_b has seed 1 failed and differs by +0.01 / -0.01 on the others (no effect).
# no_c never reported seed 2.
TOP1 = {
    "full": [0.70, 0.72, 0.74],
    "no_a": [0.60, 0.63, 0.63],
    "no_b": [0.71, None, 0.73],
    "no_c": [0.70, 0.73, None],
}
COMPONENTS = {"no_a": "augment_a", "no_b": "queue_b", "no_c": "loss_c"}


def fixed_results() -> list[dict]:
    results = []
    for variant, values in TOP1.items():
        for seed, value in zip(SEEDS, values, strict=True):
            if variant == "no_c" and value is None:
                continue  # this run never reported at all
            result = {
                "variant": variant, "seed": seed, "metrics": {}, "reused": seed == 0,
                "overrides": {} if variant == "full" else {f"method.{COMPONENTS[variant]}": False},
                "curves": {"knn_top1": [(epoch, (value or 0.5) * epoch / 3) for epoch in (1, 2, 3)]},
            }
            if value is None:
                result["error"] = "loss diverged"
            else:
                result["metrics"] = {"linear_top1": value, "final_loss": 2.0 - value}
            results.append(result)
    return results


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("ablation") / "report"
    written = write_report(
        fixed_results(), out, reference="full", metrics=["linear_top1", "final_loss"],
        title="Fixed ablation", mode_note="fixed hyperparameters", design="leave_one_out",
        component_of=COMPONENTS, n_boot=2000,
    )
    return out, written


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def t_test_p(diffs: list[float]) -> float:
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return 2.0 * scipy_stats.t.sf(abs(mean / (sd / math.sqrt(n))), df=n - 1)


def test_all_files_are_written(report):
    out, written = report
    expected = {"report.md", "report.html", "summary.csv", "runs.csv", "bar_linear_top1.png",
                "bar_final_loss.png", "curves_knn_top1.png"}
    assert set(written) == expected
    for name in expected:
        assert (out / name).is_file() and written[name] == out / name


def test_pngs_are_valid_images(report):
    out, _ = report
    for name in ("bar_linear_top1.png", "bar_final_loss.png", "curves_knn_top1.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
        assert width > 0 and height > 0 and len(data) > 1000


def test_summary_csv_matches_hand_computed_numbers(report):
    out, _ = report
    rows = {(r["metric"], r["variant"]): r for r in read_csv(out / "summary.csv")}
    assert len(rows) == 8

    full = rows[("linear_top1", "full")]
    assert float(full["mean"]) == pytest.approx(0.72)
    assert float(full["std"]) == pytest.approx(0.02)
    assert full["n"] == "3" and full["diff"] == "" and full["p"] == ""

    no_a = rows[("linear_top1", "no_a")]
    p_a = t_test_p([-0.10, -0.09, -0.11])
    assert float(no_a["mean"]) == pytest.approx(0.62)
    assert float(no_a["std"]) == pytest.approx(math.sqrt(0.0003))
    assert float(no_a["diff"]) == pytest.approx(-0.10)
    assert float(no_a["std_diff"]) == pytest.approx(0.01)
    assert float(no_a["p"]) == pytest.approx(p_a)
    assert float(no_a["ci_low"]) <= -0.10 <= float(no_a["ci_high"]) < 0.0

    no_b = rows[("linear_top1", "no_b")]
    assert (no_b["n"], no_b["n_missing"], no_b["n_pairs"]) == ("2", "1", "2")
    assert float(no_b["diff"]) == pytest.approx(0.0, abs=1e-12)
    p_b = float(no_b["p"])
    assert p_b == pytest.approx(1.0)

    no_c = rows[("linear_top1", "no_c")]
    p_c = t_test_p([0.0, 0.01])
    assert (no_c["n"], no_c["n_pairs"]) == ("2", "2")
    assert float(no_c["p"]) == pytest.approx(p_c)

    # Holm over the three comparisons of this metric, by hand: p_a < p_c < p_b.
    holm_a = 3 * p_a
    holm_c = max(holm_a, 2 * p_c)
    holm_b = max(holm_c, min(1.0, p_b))
    assert float(no_a["p_holm"]) == pytest.approx(holm_a)
    assert float(no_c["p_holm"]) == pytest.approx(holm_c)
    assert float(no_b["p_holm"]) == pytest.approx(holm_b)


def test_runs_csv_lists_failed_and_missing_runs(report):
    out, _ = report
    rows = {(r["variant"], r["seed"]): r for r in read_csv(out / "runs.csv")}
    assert len(rows) == 12  # 4 variants x 3 seeds, absent runs included
    assert rows[("no_b", "1")]["status"] == "failed"
    assert rows[("no_b", "1")]["error"] == "loss diverged"
    assert rows[("no_b", "1")]["linear_top1"] == ""
    assert rows[("no_c", "2")]["status"] == "missing"
    assert float(rows[("no_a", "1")]["linear_top1"]) == pytest.approx(0.63)
    assert rows[("no_a", "0")]["reused"] == "True"
    assert json.loads(rows[("no_a", "0")]["overrides"]) == {"method.augment_a": False}


def test_markdown_states_design_and_contains_the_tables(report):
    out, _ = report
    text = (out / "report.md").read_text()
    for fact in ("leave-one-out", "Reference variant: `full`", "Seeds: 0, 1, 2", "fixed hyperparameters",
                 "paired t-test", "Holm", "bootstrap"):
        assert fact in text
    assert "| full | full | 3 | 72.00 ± 2.00 | none |" in text
    assert "| no_a | augment_a | 3 | 62.00 ± 1.73 | none |" in text
    assert "| no_b | queue_b | 2 | 72.00 ± 1.41 | seed 1: failed: loss diverged |" in text
    assert "| no_c | loss_c | 2 | 71.50 ± 2.12 | seed 2: no run |" in text
    assert "| no_a | 3 | -10.00 ± 1.00 |" in text
    assert "no_b seed 1 (failed: loss diverged)" in text and "no_c seed 2 (missing)" in text
    assert "Runs: 10 of 12 complete (1 failed, 0 without every metric, 1 never reported)" in text
    assert "![bar_linear_top1.png](bar_linear_top1.png)" in text


def test_markdown_has_a_verdict_per_component(report):
    out, _ = report
    text = (out / "report.md").read_text()
    assert "removing augment_a costs 10.0 ± 1.0 points of linear_top1" in text
    assert "removing queue_b: no significant difference in linear_top1" in text
    assert "removing loss_c: no significant difference in linear_top1" in text
    # final_loss is lower-is-better and not in points: no_a raises it by 0.10.
    assert "removing augment_a costs 0.10 ± 0.01 in final_loss (95% CI [0.09, 0.11]" in text


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "src='bar_" not in page
    assert "<td>no_a</td><td>augment_a</td><td>3</td><td>62.00 ± 1.73</td>" in page


def test_expected_seeds_that_never_ran_are_missing():
    analyses = analyse_results(fixed_results(), "full", ["linear_top1"], seeds=[0, 1, 2, 3], n_boot=200)
    full = analyses[0].variants[0]
    assert full.missing == {3: "no run"}
    assert len(full.values) == 3


def test_save_and_load_round_trip(tmp_path):
    results = fixed_results()
    results[0]["metrics"]["linear_top1"] = float("nan")  # stored as null, read back as missing
    meta = {"reference": "full", "metrics": ["linear_top1"], "design": "leave_one_out",
            "component_of": COMPONENTS, "title": "Again", "mode_note": "retuned per variant", "n_boot": 200}
    save_results(results, tmp_path, meta=meta)
    loaded = load_results(tmp_path)
    assert len(loaded) == len(results)
    assert loaded[0]["metrics"]["linear_top1"] is None
    assert loaded[1]["curves"]["knn_top1"][0] == pytest.approx((1, 0.72 / 3))
    assert load_results_meta(tmp_path) == meta

    written = report_from_run_dir(tmp_path)
    text = written["report.md"].read_text()
    assert "retuned per variant" in text and "seed 0: no value" in text


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="reference"):
        analyse_results(fixed_results(), "nope", ["linear_top1"])
    with pytest.raises(ConfigError, match="repeats"):
        analyse_results(fixed_results() + fixed_results()[:1], "full", ["linear_top1"])
    with pytest.raises(ConfigError, match="design"):
        analyse_results(fixed_results(), "full", ["linear_top1"], design="leave-one-out")


def test_report_from_run_dir_needs_its_settings(tmp_path):
    save_results(fixed_results(), tmp_path)
    with pytest.raises(ConfigError, match="meta.reference"):
        report_from_run_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "elsewhere")
