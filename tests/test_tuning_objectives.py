"""Several objectives, growing a study and warm starts, without Ray.

The spec's `objectives` (good and bad, through the CLI as a user meets them), the Pareto
outputs of a study built by hand (its front recomputed here by brute force), the refusal
of a shrinking `--resume --samples N`, and the points `--warm-start` takes from a previous
study with an overlapping space.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from contrastlab.cli import main
from contrastlab.config import config_from_dict, config_hash
from contrastlab.errors import InputError
from contrastlab.tuning.grow import growth_target
from contrastlab.tuning.pareto import FRONT_DIR, FRONT_PLOT, PARETO_CSV, write_pareto_outputs
from contrastlab.tuning.sampler import make_sampler
from contrastlab.tuning.spec import spec_from_dict
from contrastlab.tuning.study import OVERRIDES, TUNE_TRIAL_ID, default_storage_url, open_storage
from contrastlab.tuning.warmstart import ranked_trials, warm_start_points
from tests.helpers import snapshot, tiny_config, tiny_config_dict, tiny_study_dict, write

OBJECTIVES = [{"metric": "knn_top1", "mode": "max"}, {"metric": "train_seconds", "mode": "min"}]


def multi_dict(samples: int = 3, **changes) -> dict:
    spec = tiny_study_dict(samples)
    for key in ("metric", "mode", "scheduler"):
        spec.pop(key)
    spec["objectives"] = OBJECTIVES
    spec.update(changes)
    return spec


# -- the spec ---------------------------------------------------------------------------------------------
def test_objectives_are_normalised_and_default_to_fifo():
    spec = spec_from_dict(multi_dict(), "multi.yaml")
    assert spec.metrics == ["val/knn_top1", "train_seconds"]
    assert spec.modes == ["max", "min"]
    assert spec.scheduler.type == "fifo"
    assert (spec.metric, spec.mode) == ("val/knn_top1", "max")  # the first, for what reads one
    assert spec.resolved()["objectives"] == [
        {"metric": "val/knn_top1", "mode": "max"},
        {"metric": "train_seconds", "mode": "min"},
    ]
    # The objectives are part of what the study measures: another order is another study.
    swapped = spec_from_dict(multi_dict(objectives=OBJECTIVES[::-1]), "multi.yaml")
    assert swapped.study_name != spec.study_name


def test_one_objective_spec_keeps_its_record_and_study_name():
    raw = tiny_study_dict(2)
    spec = spec_from_dict(raw, "one.yaml")
    assert spec.objectives == [] and spec.metrics == ["loss"] and spec.modes == ["min"]
    record = spec.resolved()
    assert "objectives" not in record and "warm_start" not in record
    # The name as it was computed before several objectives existed.
    blob = json.dumps(
        {"base": config_hash(spec.base), "space": spec.space.to_dict(), "metric": "loss", "mode": "min"},
        sort_keys=True,
        default=str,
    )
    assert spec.study_name == f"cluster-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


BAD_SPECS = [
    ("asha", {"scheduler": {"type": "asha"}}, "scheduler.type"),
    ("metric-beside", {"metric": "loss"}, "metric"),
    ("mode-beside", {"mode": "min"}, "mode"),
    ("one-objective", {"objectives": OBJECTIVES[:1]}, "objectives"),
    ("four-objectives", {"objectives": OBJECTIVES * 2}, "objectives"),
    ("not-a-list", {"objectives": {"metric": "loss", "mode": "min"}}, "objectives"),
    ("twice", {"objectives": [OBJECTIVES[0], {"metric": "val/knn_top1", "mode": "min"}]}, "objectives[1].metric"),
    ("bad-mode", {"objectives": [OBJECTIVES[0], {"metric": "train_seconds", "mode": "lowest"}]}, "objectives[1].mode"),
    ("test-split", {"objectives": [{"metric": "test/knn_top1", "mode": "max"}, OBJECTIVES[1]]}, "objectives[0].metric"),
    ("unknown", {"objectives": [OBJECTIVES[0], {"metric": "gpu_hours", "mode": "min"}]}, "objectives[1].metric"),
    ("extra-key", {"objectives": [OBJECTIVES[0], {**OBJECTIVES[1], "weight": 2}]}, "objectives[1].weight"),
]


@pytest.fixture
def nothing_runs(monkeypatch):
    def reached(*_args, **_kwargs):
        raise AssertionError("the command got past its input checks")

    monkeypatch.setattr("contrastlab.tuning.runner.run_study", reached)
    monkeypatch.setattr("contrastlab.raytrain.session.init_ray", reached)


@pytest.mark.parametrize(("case", "changes", "field"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_objectives_are_one_line_exit_2(case, changes, field, tmp_path, capsys, nothing_runs):
    spec = write(tmp_path / "spec.yaml", multi_dict(**changes))
    code = main(["tune", str(spec), "--output", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert str(spec) in lines[0] and f"{field}:" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_nsga2_needs_several_objectives(tmp_path, capsys, nothing_runs):
    spec = write(tmp_path / "spec.yaml", {**tiny_study_dict(2), "sampler": {"type": "nsga2"}})
    assert main(["tune", str(spec), "--output", str(tmp_path / "out")]) == 2
    assert "sampler.type" in capsys.readouterr().err
    capsys.readouterr()
    spec = write(tmp_path / "multi.yaml", multi_dict(sampler={"type": "grid"}))
    assert main(["tune", str(spec), "--output", str(tmp_path / "out")]) == 2
    assert "sampler.type: tpe, random or nsga2" in capsys.readouterr().err
    multi = spec_from_dict(multi_dict(sampler={"type": "nsga2", "seed": 3}), "m.yaml")
    assert multi.sampler.type == "nsga2" and multi.resolved()["sampler"]["type"] == "nsga2"
    assert isinstance(make_sampler(multi.sampler), optuna.samplers.NSGAIISampler)


# -- the Pareto outputs -------------------------------------------------------------------------------------
def hand_made_study(storage, name: str, directions: list[str], rows: list[tuple]) -> optuna.Study:
    """A study whose trials are (values or None, lr, width)."""
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    dists = {"optim.lr": FloatDistribution(1e-4, 1.0, log=True), "model.width": CategoricalDistribution([8, 16, 32])}
    for number, (values, lr, width) in enumerate(rows):
        params = {"optim.lr": lr, "model.width": width}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE if values is not None else TrialState.FAIL,
                values=values,
                params=params,
                distributions=dists,
                user_attrs={OVERRIDES: params, TUNE_TRIAL_ID: f"t{number}"},
            )
        )
    return study


def brute_force_front(points: dict[int, list[float]], signs: list[float]) -> set[int]:
    def beats(a, b):
        return all(s * x >= s * y for s, x, y in zip(signs, a, b)) and any(
            s * x > s * y for s, x, y in zip(signs, a, b)
        )

    return {n for n, v in points.items() if not any(beats(w, v) for m, w in points.items() if m != n)}


def test_pareto_outputs_list_exactly_the_front(tmp_path):
    rows = [
        ([0.80, 30.0], 0.01, 32),
        ([0.70, 10.0], 0.02, 8),
        ([0.60, 12.0], 0.03, 16),  # dominated by #1
        ([0.80, 40.0], 0.04, 32),  # dominated by #0
        ([0.50, 5.0], 0.05, 8),
        (None, 0.06, 8),  # failed
        ([0.75, 20.0], 0.07, 16),
    ]
    storage = open_storage(default_storage_url(tmp_path))
    study = hand_made_study(storage, "pareto", ["maximize", "minimize"], rows)
    base = config_from_dict(tiny_config_dict(), "<test>")
    metrics, modes = ["val/knn_top1", "train_seconds"], ["max", "min"]
    summary = write_pareto_outputs(study, base, tmp_path, "sqlite:///x", metrics, modes)

    expected = brute_force_front({n: r[0] for n, r in enumerate(rows) if r[0] is not None}, [1.0, -1.0])
    with (tmp_path / PARETO_CSV).open() as handle:
        front = list(csv.DictReader(handle))
    assert {int(r["number"]) for r in front} == expected == {0, 1, 4, 6}
    assert [float(r["val/knn_top1"]) for r in front] == sorted((rows[n][0][0] for n in expected), reverse=True)
    for row in front:
        number = int(row["number"])
        assert float(row["train_seconds"]) == rows[number][0][1]
        assert json.loads(row["param:optim.lr"]) == rows[number][1]
        config = yaml.safe_load((tmp_path / row["config"]).read_text())
        assert config["optim"]["lr"] == rows[number][1] and config["model"]["width"] == rows[number][2]
    assert {p.name for p in (tmp_path / FRONT_DIR).iterdir()} == {f"trial_{n}.yaml" for n in expected}
    assert (tmp_path / FRONT_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "trials.csv").open() as handle:
        table = {int(r["number"]): r for r in csv.DictReader(handle)}
    assert len(table) == len(rows) and table[5]["state"] == "FAIL" and table[5]["value:train_seconds"] == ""
    assert float(table[2]["value:train_seconds"]) == 12.0 and float(table[2]["value"]) == 0.60
    assert f"Pareto front: {len(expected)} trials" in summary
    for number in expected:
        assert f"#{number}: val/knn_top1" in summary
    # The objectives' names are recorded, and the study report shows them and the front.
    assert study.metric_names == metrics
    report = (tmp_path / "report.md").read_text()
    assert "objective: val/knn_top1 (max), train_seconds (min)" in report and "## Pareto front" in report

    # A later front without trial #4 (a new trial dominates it) removes its config.
    study.add_trial(
        create_trial(
            values=[0.55, 4.0],
            params={"optim.lr": 0.1, "model.width": 8},
            distributions=study.trials[0].distributions,
            user_attrs={OVERRIDES: {"optim.lr": 0.1, "model.width": 8}},
        )
    )
    write_pareto_outputs(study, base, tmp_path, "sqlite:///x", metrics, modes)
    assert {p.name for p in (tmp_path / FRONT_DIR).iterdir()} == {f"trial_{n}.yaml" for n in (0, 1, 6, 7)}


def test_ranked_trials_put_the_front_first():
    study = optuna.create_study(directions=["maximize", "minimize"])
    dists = {"x": FloatDistribution(0, 1)}
    for values in ([0.5, 5.0], [0.9, 9.0], [0.4, 6.0], [0.1, 1.0]):
        study.add_trial(create_trial(values=values, params={"x": 0.5}, distributions=dists))
    ranked = [t.number for t in ranked_trials(study.get_trials(), ["max", "min"])]
    assert ranked == [1, 0, 3, 2]  # the front by the first objective, then #2 (dominated by #0)


# -- growing: a shrink is refused before anything changes -------------------------------------------------
def finished_study_folder(tmp_path: Path, trials: int) -> tuple[Path, Path]:
    """A study folder as a finished run leaves it (record and database), `trials` complete."""
    spec_file = write(tmp_path / "spec.yaml", tiny_study_dict(trials))
    spec = spec_from_dict(tiny_study_dict(trials), spec_file)
    output = tmp_path / "out"
    url = default_storage_url(output)
    output.mkdir()
    study = optuna.create_study(storage=open_storage(url), study_name=spec.study_name, direction="minimize")
    dist = {"optim.lr": CategoricalDistribution([0.05, 0.1, 0.2])}
    for number in range(trials):
        study.add_trial(create_trial(value=1.0 + number, params={"optim.lr": 0.1}, distributions=dist))
    record = {**spec.resolved(), "study_storage": url, "ray_storage": str(output / "ray")}
    write(output / "study_spec.yaml", record)
    return spec_file, output


def test_growth_target(tmp_path):
    spec_file, output = finished_study_folder(tmp_path, 2)
    spec = spec_from_dict(tiny_study_dict(2), spec_file, num_samples=5)
    assert growth_target(spec, output, 5) == 5 and spec.num_samples == 2  # compared as it started
    assert growth_target(spec, output, 2) is None  # the same total: a plain resume
    with pytest.raises(InputError, match="--samples: at least the 2 trials"):
        growth_target(spec, output, 1)


def test_resume_with_fewer_samples_is_refused_and_changes_nothing(tmp_path, capsys, nothing_runs):
    spec_file, output = finished_study_folder(tmp_path, 2)
    before = snapshot(output)
    code = main(["tune", str(spec_file), "--output", str(output), "--resume", "--samples", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--samples" in lines[0] and "2 trials" in lines[0] and str(output) in lines[0]
    assert snapshot(output) == before


# -- warm start -------------------------------------------------------------------------------------------
def previous_folder(tmp_path: Path, metric: str = "loss") -> Path:
    """A finished study over lr and temperature (one objective, `metric` minimised)."""
    raw = {
        **tiny_study_dict(4),
        "metric": metric,
        "space": {
            "optim.lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True},
            "method.temperature": {"type": "float", "low": 0.05, "high": 1.0},
        },
    }
    spec = spec_from_dict(raw, write(tmp_path / "old.yaml", raw))
    folder = tmp_path / "previous"
    folder.mkdir()
    url = default_storage_url(folder)
    study = optuna.create_study(storage=open_storage(url), study_name=spec.study_name, direction="minimize")
    dists = {"optim.lr": FloatDistribution(0.001, 1.0, log=True), "method.temperature": FloatDistribution(0.05, 1.0)}
    # (loss, lr, temperature): the best three by loss are #2, #0, #3.
    for loss, lr, temperature in [(2.0, 0.01, 0.2), (5.0, 0.02, 0.3), (1.0, 0.5, 0.4), (3.0, 0.03, 0.5)]:
        params = {"optim.lr": lr, "method.temperature": temperature}
        study.add_trial(create_trial(value=loss, params=params, distributions=dists, user_attrs={OVERRIDES: params}))
    write(folder / "study_spec.yaml", {**spec.resolved(), "study_storage": url})
    return folder


def new_study_dict(**changes) -> dict:
    raw = tiny_study_dict(3)
    raw["space"] = {
        "optim.lr": {"type": "float", "low": 0.005, "high": 0.1, "log": True},  # 0.5 is now outside
        "model.width": {"type": "categorical", "choices": [8, 16]},
    }
    raw.update(changes)
    return raw


def test_warm_start_takes_the_best_trials_inside_the_new_space(tmp_path, caplog):
    folder = previous_folder(tmp_path)
    spec = spec_from_dict(new_study_dict(), write(tmp_path / "new.yaml", new_study_dict()))
    with caplog.at_level(logging.INFO, logger="contrastlab"):
        points = warm_start_points(folder, spec.space, spec.base, spec.metrics, spec.modes, top=3)
    # #2 keeps nothing (its lr is outside the new range), #0 and #3 keep their lr only.
    assert points == [{"optim.lr": 0.01}, {"optim.lr": 0.03}]
    logged = caplog.text
    assert "method.temperature" in logged and "not in the new space" in logged
    assert "optim.lr=0.5" in logged and "outside the new range" in logged
    assert warm_start_points(folder, spec.space, spec.base, spec.metrics, spec.modes, top=1) == []


def test_warm_start_reaches_the_searcher_through_the_command(tmp_path, monkeypatch):
    folder = previous_folder(tmp_path)
    seen = {}

    def capture(spec, output, **kwargs):
        seen["spec"] = spec
        raise InputError("stop here")

    monkeypatch.setattr("contrastlab.tuning.runner.run_study", capture)
    spec_file = write(tmp_path / "new.yaml", new_study_dict())
    argv = ["tune", str(spec_file), "--output", str(tmp_path / "out"), "--warm-start", str(folder)]
    assert main([*argv, "--warm-start-top", "4"]) == 2
    assert seen["spec"].warm_start == [{"optim.lr": 0.01}, {"optim.lr": 0.03}, {"optim.lr": 0.02}]
    assert seen["spec"].resolved()["warm_start"] == seen["spec"].warm_start  # saved with the study


@pytest.mark.parametrize("case", ["missing-folder", "other-metric", "no-overlap", "on-resume", "top-0"])
def test_incompatible_warm_start_is_one_line_exit_2(case, tmp_path, capsys, nothing_runs):
    folder = previous_folder(tmp_path, metric="knn_top1" if case == "other-metric" else "loss")
    raw = new_study_dict()
    extra: list[str] = []
    if case == "missing-folder":
        folder = tmp_path / "nowhere"
    elif case == "no-overlap":
        raw["space"] = {"model.width": {"type": "categorical", "choices": [8, 16]}}
    elif case == "on-resume":
        extra = ["--resume"]
    elif case == "top-0":
        extra = ["--warm-start-top", "0"]
    spec_file = write(tmp_path / "new.yaml", raw)
    before = snapshot(folder)
    code = main(["tune", str(spec_file), "--output", str(tmp_path / "out"), "--warm-start", str(folder), *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--warm-start" in lines[0]
    assert snapshot(folder) == before and not (tmp_path / "out").exists()


def test_growth_runs_the_missing_trials_in_a_new_experiment(tmp_path):
    from contrastlab.tuning.grow import grow
    from contrastlab.tuning.runner import StudyPaths

    spec_file, output = finished_study_folder(tmp_path, 2)
    spec = spec_from_dict({**tiny_study_dict(2), "points_to_evaluate": [{"optim.lr": 0.1}]}, spec_file)
    storage = open_storage(default_storage_url(output))
    asked = []

    class Tuner:
        def __init__(self, spec, paths, storage):
            asked.append((spec, paths))

        def fit(self):
            record = yaml.safe_load((output / "study_spec.yaml").read_text())
            asked.append(record)  # saved before the trials run

    paths = StudyPaths(output, str(output / "ray"))
    grown = grow(spec, paths, storage, 5, Tuner)
    (more, where), record = asked
    assert more.num_samples == 3 and more.points_to_evaluate == [] and more.study_name == spec.study_name
    assert where.experiment == f"{output / 'ray'}/tune-grow1" == grown.experiment
    assert record["num_samples"] == 5 and record["experiment_name"] == "tune-grow1"
    asked.clear()
    assert grow(spec, grown, storage, 7, Tuner).experiment_name == "tune-grow2"  # 2 trials told: 5 more
    assert asked[0][0].num_samples == 5


def test_a_plain_resume_after_a_growth_compares_equal(tmp_path):
    from contrastlab.tuning.grow import experiment_name, grow
    from contrastlab.tuning.runner import StudyPaths, spec_record
    from contrastlab.tuning.spec import diff_specs

    spec_file, output = finished_study_folder(tmp_path, 2)
    storage = open_storage(default_storage_url(output))

    class Tuner:
        def __init__(self, *args):
            pass

        def fit(self):
            pass

    grow(spec_from_dict(tiny_study_dict(2), spec_file), StudyPaths(output, str(output / "ray")), storage, 4, Tuner)
    spec = spec_from_dict(tiny_study_dict(2), spec_file)  # the spec file still says 2
    assert growth_target(spec, output, None) is None and spec.num_samples == 4
    paths = StudyPaths(output, str(output / "ray"), experiment_name(output, "tune"))
    assert paths.experiment.endswith("/tune-grow1")
    saved = yaml.safe_load((output / "study_spec.yaml").read_text())
    assert diff_specs(saved, spec_record(spec, default_storage_url(output), paths)) == []


def test_train_seconds_add_up_the_epochs_of_the_run(tmp_path):
    from contrastlab.engine.loop import Trainer

    cfg = tiny_config(optim={"epochs": 2}, eval={"knn_every": 0, "linear_probe": False, "align_uniform": False})
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()
    first, second = trainer.history
    assert first["train_seconds"] == first["epoch_seconds"] > 0
    assert second["train_seconds"] == pytest.approx(first["epoch_seconds"] + second["epoch_seconds"])
