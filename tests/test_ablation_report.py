"""The ablation report on fixed results tables whose statistics are worked out in the test."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
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
from contrastlab.ablation.inference import seeds_needed
from contrastlab.ablation.sections import report_section
from contrastlab.config import ConfigError
from tests.reference import enumerated_p, holm_by_hand

SEEDS = (0, 1, 2)
# Test split. full: 0.70, 0.72, 0.74. no_a drops by 0.10, 0.09, 0.11; no_b has seed 1 failed and
# differs by +0.01 / -0.01; no_c never reported seed 2. val = test + 0.02.
TOP1 = {
    "full": [0.70, 0.72, 0.74],
    "no_a": [0.60, 0.63, 0.63],
    "no_b": [0.71, None, 0.73],
    "no_c": [0.70, 0.73, None],
}
COMPONENTS = {"no_a": "augment_a", "no_b": "queue_b", "no_c": "loss_c"}
ANCHORS = {
    "raw_pixels": {"val/linear_top1": 0.66, "test/linear_top1": 0.65},
    "untrained": {"val/linear_top1": 0.30, "test/linear_top1": 0.28},
}
FAMILY = 6  # 3 comparisons x 2 metrics


def fixed_results() -> list[dict]:
    results = []
    for variant, values in TOP1.items():
        for seed, value in zip(SEEDS, values, strict=True):
            if variant == "no_c" and value is None:
                continue  # this run never reported at all
            shown = value or 0.5
            result = {
                "variant": variant,
                "seed": seed,
                "metrics": {},
                "reused": seed == 0,
                "overrides": {} if variant == "full" else {f"method.{COMPONENTS[variant]}": False},
                "curves": {
                    "loss": [(e, 3.0 - e * shown) for e in (1, 2, 3)],
                    "val/knn_top1": [(e, shown * e / 3) for e in (1, 2, 3)],
                },
            }
            if value is None:
                result["error"] = "loss diverged"
            else:
                result["metrics"] = {
                    "test/linear_top1": value,
                    "val/linear_top1": value + 0.02,
                    "test/final_loss": 2.0 - value,
                    "val/final_loss": 1.99 - value,
                    "loss": 1.0,
                }
            results.append(result)
    return results


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("ablation") / "report"
    written = write_report(
        fixed_results(),
        out,
        reference="full",
        metrics=["linear_top1", "final_loss"],
        title="Fixed ablation",
        mode_note="fixed hyperparameters",
        design="leave_one_out",
        component_of=COMPONENTS,
        n_boot=2000,
        anchors=ANCHORS,
    )
    return out, written


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_all_files_are_written(report):
    out, written = report
    expected = {
        "report.md",
        "report.html",
        "summary.csv",
        "runs.csv",
        "bar_linear_top1.png",
        "bar_final_loss.png",
        "curves_val_knn_top1.png",
        "curves_loss.png",
    }
    assert set(written) == expected
    for name in expected:
        assert (out / name).is_file() and written[name] == out / name
        if name.endswith(".png"):
            data = (out / name).read_bytes()
            width, height = struct.unpack(">II", data[16:24])  # IHDR follows the signature
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and width > 0 and height > 0


def test_summary_csv_matches_hand_computed_numbers(report):
    out, _ = report
    rows = {(r["metric"], r["variant"]): r for r in read_csv(out / "summary.csv")}
    assert len(rows) == 8
    full = rows[("linear_top1", "full")]
    assert float(full["test_mean"]) == pytest.approx(0.72) and float(full["test_std"]) == pytest.approx(0.02)
    assert float(full["val_mean"]) == pytest.approx(0.74) and float(full["val_std"]) == pytest.approx(0.02)
    assert full["diff"] == "" and full["p"] == ""

    diffs = {"no_a": [-0.10, -0.09, -0.11], "no_b": [0.01, -0.01], "no_c": [0.0, 0.01]}
    raw = [enumerated_p(d) for d in diffs.values()]
    adjusted = holm_by_hand(raw + [enumerated_p([-x for x in d]) for d in diffs.values()])
    level = 1 - 0.05 / FAMILY
    for (variant, d), p, p_adj in zip(diffs.items(), raw, adjusted, strict=False):
        row = rows[("linear_top1", variant)]
        mean, sd = np.mean(d), np.std(d, ddof=1)
        half = scipy_stats.t.ppf(0.5 + level / 2, len(d) - 1) * sd / math.sqrt(len(d))
        assert float(row["diff"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["p"]) == pytest.approx(p) and float(row["p_adjusted"]) == pytest.approx(p_adj)
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((mean - half, mean + half))
        assert float(row["ci_level"]) == pytest.approx(level)
        assert (row["family"], row["test"], row["interval"]) == ("confirmatory", "sign_flip", "t")
    assert float(rows[("linear_top1", "no_a")]["p"]) == 0.25  # the floor of 3 seeds
    assert (rows[("linear_top1", "no_b")]["n"], rows[("linear_top1", "no_b")]["n_missing"]) == ("2", "1")


def test_runs_csv_has_val_and_test_of_every_metric(report):
    out, _ = report
    rows = {(r["variant"], r["seed"]): r for r in read_csv(out / "runs.csv")}
    assert len(rows) == 12  # 4 variants x 3 seeds, absent runs included
    assert float(rows[("no_a", "1")]["test/linear_top1"]) == pytest.approx(0.63)
    assert float(rows[("no_a", "1")]["val/linear_top1"]) == pytest.approx(0.65)
    assert rows[("no_b", "1")]["status"] == "failed" and rows[("no_b", "1")]["error"] == "loss diverged"
    assert rows[("no_c", "2")]["status"] == "missing"
    assert rows[("no_a", "0")]["reused"] == "True"
    assert json.loads(rows[("no_a", "0")]["overrides"]) == {"method.augment_a": False}


def test_facts_state_splits_seeds_test_family_interval_and_floor(report):
    text = (Path(report[0]) / "report.md").read_text()
    for fact in (
        "leave-one-out",
        "Reference variant: `full`",
        "Seeds used: 0, 1, 2 (3;",
        "verdicts and statistics on the test split",
        "val shown for reference",
        "selection (tuning, early stopping, retuning, best_config) used only val",
        "fixed hyperparameters",
        "exact paired sign-flip permutation test",
        "Smallest attainable p with 3 seeds: 0.25",
        "No difference can be significant at α = 0.05 with 3 seeds",
        f"Holm–Bonferroni over all {FAMILY} tests",
        "t-interval of the mean paired difference, at 99.17% = 1 − 0.05/6, Bonferroni-simultaneous",
        "Holm-adjusted p < 0.05",
        "Runs: 10 of 12 complete (1 failed, 0 without every test metric, 1 never reported)",
    ):
        assert fact in text, fact


def test_tables_name_their_split(report):
    text = (Path(report[0]) / "report.md").read_text()
    assert (
        "| variant | component | n (test) | val/linear_top1 mean ± std | test/linear_top1 mean ± std | missing (test) |"
    ) in text
    assert "| full | full | 3 | 74.00 ± 2.00 | 72.00 ± 2.00 | none |" in text
    assert "| no_b | queue_b | 2 | 74.00 ± 1.41 | 72.00 ± 1.41 | seed 1: failed: loss diverged |" in text
    assert "| no_c | loss_c | 2 | 73.50 ± 2.12 | 71.50 ± 2.12 | seed 2: no run |" in text
    assert "| no_a | 3 | -10.00 ± 1.00 |" in text
    assert "| variant | seed | status | reused | error | val/linear_top1 | test/linear_top1 |" in text


def test_verdicts_flag_variants_below_the_raw_pixel_anchor(report):
    text = (Path(report[0]) / "report.md").read_text()
    assert "| raw pixels (normalised pixels as features) | 66.00 | 65.00 |" in text
    assert "| untrained encoder | 30.00 | 28.00 |" in text
    line = next(line for line in text.splitlines() if line.startswith("- **linear_top1**: removing augment_a"))
    assert "no significant difference" in line and "smallest possible p is 0.25" in line
    assert "below the raw-pixel anchor (test 65.00, val 66.00): at this budget" in line
    assert "Below the raw-pixel anchor: 1 of 4 variants (no_a)" in text
    assert (
        "removing queue_b: no significant difference" in text
        and "below the raw" not in text.split("removing queue_b")[1].splitlines()[0]
    )


def test_power_line_per_metric(report):
    text = (Path(report[0]) / "report.md").read_text()
    variances = [np.var([-0.10, -0.09, -0.11], ddof=1), np.var([0.01, -0.01], ddof=1), np.var([0.0, 0.01], ddof=1)]
    dofs = [2, 1, 1]
    sd = math.sqrt(sum(v * k for v, k in zip(variances, dofs, strict=True)) / sum(dofs))
    needed = seeds_needed(0.01, sd, 0.05 / FAMILY, test="sign_flip")
    line = next(line for line in text.splitlines() if line.startswith("- **linear_top1**: sd of the per-seed"))
    assert f"{sd * 100:.2f} points (pooled over 3 comparisons)" in line
    assert "no effect is detectable: the sign_flip test cannot reach p < 0.0083" in line
    assert f"detecting 1.00 points needs {needed} seeds" in line
    assert any(line.startswith("- **final_loss**: sd of the per-seed") for line in text.splitlines())


def test_curves_overlay_eval_and_split_losses_into_panels(report):
    text = (Path(report[0]) / "report.md").read_text()
    assert "![curves_val_knn_top1.png](curves_val_knn_top1.png)" in text
    assert "own y axis" in text and "not comparable on one axis" in text
    assert text.index("not comparable") < text.index("![curves_loss.png](curves_loss.png)")


def test_markdown_and_html_say_the_same(report):
    out, _ = report
    text, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for line in text.splitlines():
        pieces = [line[2:]] if line.startswith("- ") else line.strip("|").split(" | ") if line.startswith("|") else []
        for piece in pieces:
            piece = piece.strip().replace("\\|", "|")
            if piece and not piece.startswith("---"):
                rendered = re.sub(
                    r"`(.+?)`", r"<code>\1</code>", re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(piece))
                )
                assert rendered in page, piece
    assert page.count("data:image/png;base64,") == 4


def test_primary_metric_makes_the_other_exploratory(tmp_path):
    write_report(
        fixed_results(),
        tmp_path,
        reference="full",
        metrics=["linear_top1", "final_loss"],
        title="T",
        mode_note="fixed",
        design="leave_one_out",
        component_of=COMPONENTS,
        primary_metric="linear_top1",
        effect=0.02,
    )
    text = (tmp_path / "report.md").read_text()
    assert "Holm–Bonferroni over the 3 tests of the primary metric linear_top1" in text
    assert "final_loss exploratory, with unadjusted p" in text and "exploratory metrics at 95%" in text
    assert "- **final_loss** (exploratory): removing augment_a" in text
    assert "detecting 2.00 points" in text
    rows = {(r["metric"], r["variant"]): r for r in read_csv(tmp_path / "summary.csv")}
    assert rows[("final_loss", "no_a")]["family"] == "exploratory"
    assert rows[("final_loss", "no_a")]["p_adjusted"] == rows[("final_loss", "no_a")]["p"]


def factorial_results() -> tuple[list[dict], dict]:
    levels = {
        "full": {"a": True, "b": True},
        "no_a": {"a": False, "b": True},
        "no_b": {"a": True, "b": False},
        "no_a+no_b": {"a": False, "b": False},
    }
    rng = np.random.default_rng(0)
    results = []
    for seed in range(8):
        base = 0.70 + 0.01 * rng.standard_normal()
        for variant, settings in levels.items():
            value = base - 0.04 * (not settings["a"]) - 0.002 * (not settings["b"]) + 0.001 * rng.standard_normal()
            results.append(
                {"variant": variant, "seed": seed, "metrics": {"test/linear_top1": value, "val/linear_top1": value}}
            )
    return results, levels


def test_full_factorial_report_has_effects(tmp_path):
    results, levels = factorial_results()
    write_report(
        results,
        tmp_path,
        reference="full",
        metrics=["linear_top1"],
        title="F",
        mode_note="fixed",
        design="full_factorial",
        levels=levels,
    )
    text = (tmp_path / "report.md").read_text()
    assert "## Factorial effects (test split)" in text and "Smallest attainable p with 8 seeds: 0.0078" in text
    assert "over all 6 tests of the report (every comparison with the reference and every factorial effect" in text
    row = next(line for line in text.splitlines() if line.startswith("| main | a=false (vs true) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    by_seed = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["variant"]] = r["metrics"]["test/linear_top1"]
    effect = np.mean([(v["no_a"] + v["no_a+no_b"] - v["full"] - v["no_b"]) / 2 for v in by_seed.values()])
    assert cells[2] == "8" and cells[3].startswith(f"{effect * 100:+.2f} ±")
    assert cells[5] == "0.0078" and cells[6] == f"{6 * 2 / 2**8:.2g} (Holm)"
    assert any(line.startswith("| interaction | a=false × b=false |") for line in text.splitlines())
    assert "removing a costs" not in text and "no_a costs 4." in text  # compared with the reference too


def test_old_results_without_splits_are_missing_not_guessed(tmp_path):
    old = [
        {"variant": v, "seed": s, "metrics": {"linear_top1": 0.7}, "curves": {"knn_top1": [(1, 0.5), (2, 0.6)]}}
        for v in ("full", "no_a")
        for s in (0, 1)
    ]
    written = write_report(
        old, tmp_path, reference="full", metrics=["linear_top1"], title="Old", mode_note="fixed", design="leave_one_out"
    )
    text = (tmp_path / "report.md").read_text()
    assert "seed 0: no test/linear_top1" in text and "Runs: 0 of 4 complete" in text
    assert "nothing could be tested" in text
    # A bare accuracy curve is still an eval curve: one axis, no note about objectives.
    assert "curves_knn_top1.png" in written and "not comparable" not in text


def test_tuning_seeds_are_called_out(tmp_path):
    results = [
        {"variant": v, "seed": s, "metrics": {"test/m": 0.5 + 0.01 * s}} for v in ("full", "x") for s in (7, 1000)
    ]
    write_report(results, tmp_path, reference="full", metrics=["m"], title="S", mode_note="fixed", design="explicit")
    assert (
        "Seeds used: 7, 1000 (2; variants are paired by seed); **[1000] are ≥ 1000"
        in (tmp_path / "report.md").read_text()
    )


def test_save_and_load_round_trip_with_the_new_settings(tmp_path):
    results = fixed_results()
    results[0]["metrics"]["test/linear_top1"] = float("nan")  # stored as null, read back as missing
    meta = {
        "reference": "full",
        "metrics": ["linear_top1"],
        "design": "leave_one_out",
        "component_of": COMPONENTS,
        "title": "Again",
        "mode_note": "retuned per variant",
        "n_boot": 200,
        "test": "t",
        "anchors": ANCHORS,
        "levels": {"full": {"a": True}, "no_a": {"a": False}},
        "primary_metric": "linear_top1",
        "effect": 0.02,
    }
    save_results(results, tmp_path, meta=meta)
    loaded = load_results(tmp_path)
    assert loaded[0]["metrics"]["test/linear_top1"] is None
    assert loaded[1]["curves"]["val/knn_top1"][0] == pytest.approx((1, 0.72 / 3))
    assert load_results_meta(tmp_path) == meta
    text = report_from_run_dir(tmp_path)["report.md"].read_text()
    assert "retuned per variant" in text and "seed 0: no test/linear_top1" in text
    assert "paired t-test" in text and "## Anchors" in text and "detecting 2.00 points" in text


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ConfigError, match="reference"):
        analyse_results(fixed_results(), "nope", ["linear_top1"])
    with pytest.raises(ConfigError, match="repeats"):
        analyse_results(fixed_results() + fixed_results()[:1], "full", ["linear_top1"])
    with pytest.raises(ConfigError, match="test"):
        analyse_results(fixed_results(), "full", ["linear_top1"], test="wilcoxon")
    with pytest.raises(ConfigError, match="effect"):
        analyse_results(fixed_results(), "full", ["linear_top1"], effect=-1)
    save_results(fixed_results(), tmp_path)
    with pytest.raises(ConfigError, match="meta.reference"):
        report_from_run_dir(tmp_path)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"test": "wilcoxon"}, "report.test"),
        ({"interval": "percentile"}, "report.interval"),
        ({"confidence": 1.5}, "report.confidence"),
        ({"n_boot": 10}, "report.n_boot"),
        ({"primary_metric": ""}, "report.primary_metric"),
        ({"effect": 0}, "report.effect"),
        ({"effect": True}, "report.effect"),
        ({"alpha": 0.05}, "report"),
    ],
)
def test_report_settings_are_checked(raw, field):
    with pytest.raises(ConfigError) as caught:
        report_section(raw, "spec.yaml")
    assert caught.value.field == field and "\n" not in str(caught.value)


def test_report_settings_accept_the_new_keys():
    raw = {
        "test": "sign_flip",
        "interval": "bca",
        "confidence": 0.9,
        "n_boot": 500,
        "primary_metric": "knn_top1",
        "effect": 0.02,
    }
    assert report_section(raw, "spec.yaml") == raw
    assert report_section(None, "spec.yaml") == {}
