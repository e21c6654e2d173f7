"""A study's report (report.md, report.html, PNGs), written from a study built without Ray,
and `contrastlab report` on a study folder."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from contrastlab.cli import main
from contrastlab.config import config_from_dict
from contrastlab.tuning.importance import rung_importances
from contrastlab.tuning.report import SPEC_FILE, report_from_study_dir, write_outputs
from contrastlab.tuning.report_render import FIGURES, write_study_report
from tests.helpers import pruned_study, tiny_config_dict

SECTIONS = (
    "Parameter importances",
    "Optimisation history",
    "Intermediate values",
    "Parallel coordinates",
    "Slice plots",
    "Trials",
)
PNG = b"\x89PNG\r\n\x1a\n"


def study_folder(folder: Path, trials: int = 30) -> Path:
    """A study folder as `contrastlab tune` leaves it: study.db and study_spec.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    study = pruned_study(trials=trials, storage=f"sqlite:///{folder / 'study.db'}", name="synthetic-0123")
    record = {"name": "synthetic", "study_name": study.study_name, "study_storage": "sqlite:///elsewhere/study.db"}
    (folder / SPEC_FILE).write_text(yaml.safe_dump(record))
    return folder


def images_of(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def check_report(folder: Path, sections=SECTIONS) -> str:
    text = (folder / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == list(sections)
    html = (folder / "report.html").read_text()
    for section in sections:
        assert f"<h2>{section}</h2>" in html
    shown = images_of(text)
    assert shown, text
    for name in shown:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000, name
        # The HTML embeds the same bytes, so it stands on its own.
        assert base64.b64encode(data).decode("ascii") in html
    return text


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    folder = study_folder(tmp_path_factory.mktemp("study") / "sscl")
    return folder, report_from_study_dir(folder)


def test_report_has_every_section_and_its_figures(rebuilt):
    folder, written = rebuilt
    text = check_report(folder)
    assert set(images_of(text)) == {FIGURES[k] for k in ("importances", "history", "intermediate", "parallel", "slice")}
    assert {"report.md", "report.html", "trials.csv", "importances.json"} <= set(written)
    assert all(path.is_file() for path in written.values())


def test_report_states_the_rung_and_trials_beside_the_importances(rebuilt):
    folder, _ = rebuilt
    payload = json.loads((folder / "importances.json").read_text())
    study = optuna.load_study(study_name="synthetic-0123", storage=f"sqlite:///{folder / 'study.db'}")
    again = rung_importances(study)
    assert [(b["branch"], b["rung"], b["trials"]) for b in payload["branches"]] == [
        (b["branch"], b["rung"], b["trials"]) for b in again["branches"]
    ]
    text = (folder / "report.md").read_text()
    for entry in payload["branches"]:
        top = max(entry["importances"], key=entry["importances"].get)
        pruned = sum(study.trials[n].state == optuna.trial.TrialState.PRUNED for n in entry["trial_numbers"])
        where = f"| {entry['branch']} | epoch {entry['rung']} | {entry['trials']} ({pruned} pruned) |"
        row = f"{where} {top} | {entry['importances'][top]:.3f} |"
        assert row in text
    assert "method.synthesis = True (method.synthetic_count)" in text
    # Every trial is in the table, pruned ones with their state.
    assert len(re.findall(r"^\| \d+ \| (PRUNED|COMPLETE) \|", text, flags=re.M)) == len(study.trials)


def test_cli_rebuilds_a_study_folder(rebuilt, tmp_path, capsys):
    folder = study_folder(tmp_path / "study", trials=24)
    for name in ("report.md", "report.html", "slice.png", "importances.json"):
        (folder / name).unlink(missing_ok=True)
    assert main(["report", str(folder), "--min-trials", "6"]) == 0
    assert "report.md" in capsys.readouterr().out
    check_report(folder)
    assert json.loads((folder / "importances.json").read_text())["min_trials"] == 6


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda d: None, "expected an ablation folder"),
        (lambda d: (d / SPEC_FILE).write_text("name: x\n"), "study_name"),
        (
            lambda d: (d / SPEC_FILE).write_text("study_name: absent\nstudy_storage: sqlite:///" + str(d / "x.db")),
            "no study",
        ),
    ],
)
def test_bad_folder_is_one_line_and_exit_2(tmp_path, capsys, setup, expected):
    folder = tmp_path / "folder"
    folder.mkdir()
    setup(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(folder) in err
    assert not (folder / "report.md").exists()


def test_missing_folder_is_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def two_objective_study() -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="two")
    dist = {"optim.lr": FloatDistribution(0, 1), "method.temperature": FloatDistribution(0, 1)}
    for i in range(10):
        x, y = i / 10, (i * 3 % 10) / 10
        params = {"optim.lr": x, "method.temperature": y}
        study.add_trial(create_trial(params=params, distributions=dist, values=[x + y, x * y]))
    return study


def test_multi_objective_study_gets_a_pareto_front(tmp_path):
    study = two_objective_study()
    written = write_study_report(study, tmp_path, rung_importances(study))
    check_report(tmp_path, ("Parameter importances", "Pareto front", "Trials"))
    assert "pareto_front.png" in written and not (tmp_path / FIGURES["history"]).exists()


def test_tune_outputs_of_a_multi_objective_study(tmp_path):
    summary = write_outputs(two_objective_study(), config_from_dict(tiny_config_dict()), tmp_path, "x", "loss", "min")
    check_report(tmp_path, ("Parameter importances", "Pareto front", "Trials"))
    assert "Pareto front" in summary and not (tmp_path / "best_config.yaml").exists()


def test_tune_outputs_include_the_report(tmp_path):
    study = pruned_study(trials=12)
    # A failed trial and one still running (an interrupted driver) are listed, never measured.
    for state in (TrialState.FAIL, TrialState.RUNNING):
        study.add_trial(
            create_trial(
                state=state, params={"optim.lr": 0.1}, distributions={"optim.lr": FloatDistribution(0.05, 1.0)}
            )
        )
    base = config_from_dict(tiny_config_dict())
    summary = write_outputs(study, base, tmp_path, "sqlite:///x.db", "val/knn_top1", "max")
    check_report(tmp_path)
    payload = json.loads((tmp_path / "importances.json").read_text())
    assert f"importances (epoch {payload['rung']}, {payload['trials']} trials)" in summary
    assert 12 not in payload["branches"][0]["trial_numbers"] and 13 not in payload["branches"][0]["trial_numbers"]
    text = (tmp_path / "report.md").read_text()
    assert "| 12 | FAIL |" in text and "| 13 | RUNNING |" in text


def test_a_rebuilt_multi_objective_folder_keeps_a_column_per_objective(tmp_path):
    import csv

    from contrastlab.tuning.objectives import name_objectives
    from contrastlab.tuning.report import report_from_study_dir

    folder = tmp_path / "two"
    folder.mkdir()
    study = optuna.create_study(
        directions=["maximize", "minimize"], study_name="two-0123", storage=f"sqlite:///{folder / 'study.db'}"
    )
    for trial in two_objective_study().trials:
        study.add_trial(trial)
    name_objectives(study, ["val/knn_top1", "train_seconds"])
    (folder / SPEC_FILE).write_text(yaml.safe_dump({"name": "two", "study_name": "two-0123"}))
    report_from_study_dir(folder)
    with (folder / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[3:6] == ["value", "value:val/knn_top1", "value:train_seconds"]
    for row, trial in zip(rows, study.trials, strict=True):
        assert [float(row["value:val/knn_top1"]), float(row["value:train_seconds"])] == trial.values
        assert float(row["value"]) == trial.values[0]
    assert "objective: val/knn_top1 (max), train_seconds (min)" in (folder / "report.md").read_text()
