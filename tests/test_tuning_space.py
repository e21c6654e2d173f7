"""Study specs: every kind of parameter, conditions, derived lists, and each bad-spec error."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.config import ConfigError, load_config
from contrastlab.tuning.space_spec import parse_space
from contrastlab.tuning.spec import diff_specs, load_spec, spec_from_dict
from tests.helpers import ROOT, tiny_config_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "method.temperature": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
    "optim.weight_decay": {"type": "float", "low": 0.0, "high": "1e-3", "step": 1.0e-4},
    "optim.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
    "model.projector_out": {"type": "int", "low": 8, "high": 64, "log": True},
    "augment.crop_scale": {"type": "categorical", "choices": [[0.2, 1.0], [0.5, 1.0]]},
    "model.projector_bn": {"type": "categorical", "choices": [True, False]},
    "optim.grad_clip": {
        "type": "categorical",
        "choices": [None, 1.0, 5.0],
        "condition": {"param": "model.projector_bn", "equals": True},
    },
    "optim.optimizer": {"type": "categorical", "choices": ["sgd", "adamw", "lars"]},
    "optim.momentum": {
        "type": "float",
        "low": 0.8,
        "high": 0.99,
        "condition": {"param": "optim.optimizer", "in": ["sgd", "lars"]},
    },
}


def spec_dict(**changes) -> dict:
    raw = {
        "name": "unit",
        "base": tiny_config_dict(),
        "metric": "knn_top1",
        "mode": "max",
        "num_samples": 4,
        "space": copy.deepcopy(SPACE),
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    }
    raw.update(changes)
    return raw


def make_spec(tmp_path: Path, **changes):
    return spec_from_dict(spec_dict(**changes), tmp_path / "unit.yaml")


def sample_many(space, count: int = 40, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    samples = []
    for _ in range(count):
        trial = study.ask()
        samples.append((space(trial)["params"], trial.params))
        study.tell(trial, 0.0)
    return samples


def test_every_kind_samples_within_its_range_and_type(tmp_path):
    spec = make_spec(tmp_path)
    for params, _ in sample_many(spec.space):
        assert 0.05 <= params["method.temperature"] <= 1.0
        assert params["optim.weight_decay"] == pytest.approx(round(params["optim.weight_decay"] / 1e-4) * 1e-4)
        assert params["optim.batch_size"] in (16, 32, 48, 64)
        assert isinstance(params["model.projector_out"], int) and 8 <= params["model.projector_out"] <= 64
        assert params["augment.crop_scale"] in ([0.2, 1.0], [0.5, 1.0])
        assert isinstance(params["model.projector_bn"], bool)
        spec.base.with_overrides(params)  # every sample is a valid experiment


def test_conditions_decide_which_parameters_exist(tmp_path):
    spec = make_spec(tmp_path)
    seen_on = seen_off = 0
    for params, optuna_params in sample_many(spec.space):
        has_clip = "optim.grad_clip" in params
        assert has_clip == params["model.projector_bn"]
        assert ("optim.grad_clip" in optuna_params) == has_clip  # Optuna never sees an inactive parameter
        assert ("optim.momentum" in params) == (params["optim.optimizer"] in ("sgd", "lars"))
        seen_on += has_clip
        seen_off += not has_clip
    assert seen_on and seen_off


def test_a_condition_may_name_a_parameter_defined_later(tmp_path):
    space = {
        "optim.momentum": {
            "type": "float",
            "low": 0.8,
            "high": 0.9,
            "condition": {"param": "optim.optimizer", "equals": "sgd"},
        },
        "optim.optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
    }
    spec = make_spec(tmp_path, space=space)
    assert spec.space.paths == ["optim.optimizer", "optim.momentum"]


def test_list_parameter_length_follows_another_parameter():
    space = parse_space(
        {
            "method.stages": {"type": "int", "low": 0, "high": 3},
            "method.stage_epochs": {
                "type": "list",
                "length": {"param": "method.stages", "add": 1},
                "item": {"type": "int", "low": 1, "high": 5},
            },
            "method.fixed": {"type": "list", "length": 2, "item": {"type": "categorical", "choices": [4, 8]}},
        },
        "<test>",
    )
    lengths = set()
    for params, optuna_params in sample_many(space, 30):
        stages = params["method.stages"]
        assert len(params["method.stage_epochs"]) == stages + 1
        assert all(1 <= e <= 5 for e in params["method.stage_epochs"])
        assert {f"method.stage_epochs[{i}]" for i in range(stages + 1)} <= set(optuna_params)
        assert f"method.stage_epochs[{stages + 1}]" not in optuna_params
        assert len(params["method.fixed"]) == 2
        lengths.add(stages)
    assert len(lengths) > 1
    assert space.optuna_names()[1:5] == [f"method.stage_epochs[{i}]" for i in range(4)]


def test_points_to_evaluate_are_tried_first(tmp_path):
    spec = make_spec(tmp_path, points_to_evaluate=[{"method.temperature": 0.1, "optim.optimizer": "adamw"}])
    assert spec.points_to_evaluate == [{"method.temperature": 0.1, "optim.optimizer": "adamw"}]


@pytest.mark.parametrize(
    "change, field, words",
    [
        (
            {"space": {"method.temprature": {"type": "float", "low": 0.1, "high": 1.0}}},
            "space.method.temprature",
            "unknown field",
        ),
        (
            {"space": {"method.temperature": {"type": "float", "low": 1.0, "high": 0.1}}},
            "space.method.temperature",
            "low <= high",
        ),
        (
            {"space": {"optim.weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
            "space.optim.weight_decay.low",
            "positive bound on a log scale",
        ),
        (
            {
                "space": {
                    "optim.momentum": {
                        "type": "float",
                        "low": 0.8,
                        "high": 0.9,
                        "condition": {"param": "optim.optimizer", "equals": "sgd"},
                    }
                }
            },
            "space.optim.momentum.condition.param",
            "no parameter 'optim.optimizer'",
        ),
        (
            {"space": {"optim.optimizer": {"type": "categorical", "choices": []}}},
            "space.optim.optimizer.choices",
            "non-empty list",
        ),
        ({"mode": "maximise"}, "mode", "'min' or 'max'"),
        ({"space": {"optim.lr": {"type": "uniform", "low": 0.1, "high": 1.0}}}, "space.optim.lr.type", "one of float"),
        ({"space": {"optim.epochs": {"type": "int", "low": 1.5, "high": 4}}}, "space.optim.epochs.low", "an integer"),
        (
            {"space": {"optim.momentum": {"type": "float", "low": 0.5, "high": 1.0}}},
            "space.optim.momentum",
            "1.0 fails: optim.momentum",
        ),
        (
            {"space": {"optim.lr": {"type": "float", "low": 0.1, "high": 1.0, "lg": True}}},
            "space.optim.lr.lg",
            "no such key",
        ),
        (
            {
                "space": {
                    "optim.optimizer": {
                        "type": "categorical",
                        "choices": ["sgd", "adamw"],
                        "condition": {"param": "optim.lr", "equals": 0.1},
                    },
                    "optim.lr": {
                        "type": "float",
                        "low": 0.1,
                        "high": 1.0,
                        "condition": {"param": "optim.optimizer", "equals": "sgd"},
                    },
                }
            },
            "space.optim.optimizer",
            "circular",
        ),
        (
            {
                "space": {
                    "optim.momentum": {
                        "type": "float",
                        "low": 0.5,
                        "high": 0.9,
                        "condition": {"param": "optim.optimizer", "equals": "adam"},
                    },
                    "optim.optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
                }
            },
            "space.optim.momentum.condition",
            "never chosen",
        ),
        ({"space": {}}, "space", "non-empty mapping"),
        ({"metric": "linear_top1"}, "metric", "reported every epoch"),
        ({"scheduler": {"type": "asha", "grace_period": 5}}, "scheduler.grace_period", "at most max_t"),
        ({"num_samples": 0}, "num_samples", "greater than or equal to 1"),
        ({"sampler": {"type": "grid"}}, "sampler.type", "'tpe' or 'random'"),
        ({"trials": 3}, "trials", "no such field"),
        ({"points_to_evaluate": [{"optim.batch_size": 80}]}, "points_to_evaluate[0].optim.batch_size", "range"),
        ({"points_to_evaluate": [{"optim.lr": 0.1}]}, "points_to_evaluate[0].optim.lr", "scalar parameter"),
    ],
)
def test_bad_specs_fail_with_one_line_naming_file_and_field(tmp_path, change, field, words):
    with pytest.raises(ConfigError) as caught:
        make_spec(tmp_path, **change)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "unit.yaml")), message
    assert caught.value.field == field, message
    assert words in message, message


def test_base_config_file_plus_overrides(tmp_path):
    base_file = tmp_path / "experiment.yaml"
    base_file.write_text(yaml.safe_dump(tiny_config_dict()))
    raw = spec_dict(base_config="experiment.yaml", base={"optim": {"epochs": 3}})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_file, overrides=["eval.knn_k=7"], num_samples=9)
    assert spec.base.optim.epochs == 3 and spec.max_t == 3
    assert spec.base.eval.knn_k == 7 and spec.base.optim.batch_size == 32
    assert spec.num_samples == 9
    assert spec.study_name.startswith("unit-")
    changed = load_spec(spec_file, overrides=["eval.knn_k=8"])
    assert changed.study_name != spec.study_name  # a different experiment is a different study


def test_missing_base_config_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="base_config: an existing experiment file"):
        spec_from_dict(spec_dict(base_config="nope.yaml"), tmp_path / "unit.yaml")


def test_diff_lists_each_changed_field(tmp_path):
    old = make_spec(tmp_path).resolved()
    new = make_spec(tmp_path, metric="loss", mode="min").resolved()
    lines = diff_specs(old, new)
    assert "metric: 'val/knn_top1' -> 'loss'" in lines and "mode: 'max' -> 'min'" in lines
    assert any(line.startswith("study_name:") for line in lines)
    assert diff_specs(old, make_spec(tmp_path).resolved()) == []


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_search_spaces_are_valid(path):
    spec = load_spec(path)
    assert spec.study_name.startswith(spec.name)
    for params, _ in sample_many(spec.space, 15):
        spec.base.with_overrides(params)


def test_cli_rejects_a_bad_spec_with_exit_code_2(tmp_path, capsys):
    raw = spec_dict(space={"method.temperature": {"type": "float", "low": -1.0, "high": 1.0, "log": True}})
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(spec_file), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{spec_file}: space.method.temperature.low: a positive bound on a log scale" in err
    assert not (tmp_path / "out").exists()  # nothing is created before the spec is valid


def test_best_config_format_is_what_train_loads(tmp_path):
    # The report writes `base.with_overrides(...)` dumped as YAML; `train` reads it back.
    spec = make_spec(tmp_path)
    params = sample_many(spec.space, 1)[0][0]
    path = tmp_path / "best.yaml"
    path.write_text("# header\n" + yaml.safe_dump(spec.base.with_overrides(params).to_dict(), sort_keys=False))
    assert load_config(path).method.temperature == pytest.approx(params["method.temperature"])


# -- ASHA after a resume ---------------------------------------------------------------------------
@pytest.mark.parametrize("rebuilt", [True, False])
def test_asha_rungs_are_rebuilt_from_the_study(tmp_path, rebuilt):
    """A resumed study prunes as the uninterrupted one would: the rungs hold the earlier trials."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from contrastlab.study.internals import asha_bracket
    from contrastlab.tuning.scheduler import StudyASHA
    from contrastlab.tuning.study import TUNE_TRIAL_ID

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="minimize")
    for index, loss in enumerate([1.0, 2.0, 3.0, 4.0]):
        trial = study.ask()
        trial.set_user_attr(TUNE_TRIAL_ID, f"t{index}")
        trial.report(loss, step=1)
        if index < 3:  # the last one was interrupted: still RUNNING, its value counts all the same
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    unattributed = study.ask()  # a trial Tune never ran: no id, no values; ignored
    del unattributed
    scheduler = StudyASHA("s", storage, metric="loss", mode="min", max_t=4, grace_period=1, reduction_factor=2)
    if rebuilt:
        assert scheduler.rebuild_rungs() == 4
    bracket = asha_bracket(scheduler)
    # Loss 10 at the first rung: worse than the median of 1..4, stopped only if the rungs know them.
    action = bracket.on_result(SimpleNamespace(trial_id="late"), 1, -10.0)
    assert action == (TrialScheduler.STOP if rebuilt else TrialScheduler.CONTINUE)


# -- the validation protocol ----------------------------------------------------------------------
def test_objective_is_a_val_metric_and_trials_run_at_a_tuning_seed(tmp_path):
    spec = make_spec(tmp_path)
    assert spec.metric == "val/knn_top1" and spec.base.seed == 1000
    assert make_spec(tmp_path, metric="val/knn_top1", seed=1234).base.seed == 1234
    assert make_spec(tmp_path, metric="loss", mode="min").metric == "loss"


def base_with(**data) -> dict:
    base = tiny_config_dict()
    base["data"].update(data)
    return base


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"metric": "test/knn_top1"}, "metric", "the test split is measured once at the end and is never an objective"),
        ({"metric": "val/probe_stripes"}, "metric", "a metric the runs report"),
        ({"metric": "train_samples"}, "metric", "a metric the runs report"),
        ({"seed": 999}, "seed", "seeds below it are the ones ablations evaluate on"),
        ({"base": base_with(val_size=0)}, "data.val_size", "selection reads only val"),
        ({"base": base_with(val_size=256)}, "data.val_size", "fewer validation images than the 256"),
        ({"base": base_with(val_size=32, subset=250)}, "data.subset", "at most the 224 training images"),
    ],
)
def test_studies_refuse_what_would_let_selection_see_test(tmp_path, changes, field, words):
    with pytest.raises(ConfigError) as err:
        make_spec(tmp_path, **changes)
    assert err.value.field == field and words in err.value.expected and "\n" not in str(err.value)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_scheduler_settings_are_refused(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        make_spec(tmp_path, scheduler={"type": "asha", "grace_period": 1, "reduction_factor": value})
    assert err.value.field == "scheduler.reduction_factor"


@pytest.mark.parametrize(
    "definition, field, words",
    [
        (
            {"type": "list", "length": 2, "item": {"type": "int", "low": 1.5, "high": 4}},
            "space.p.item.low",
            "an integer",
        ),
        (
            {"type": "list", "length": 2, "item": {"type": "float", "low": 1, "hgh": 4}},
            "space.p.item.hgh",
            "no such key",
        ),
        (
            {"type": "list", "length": {"param": "q", "add": 0.5}, "item": {"type": "int", "low": 1, "high": 2}},
            "space.p.length.add",
            "an integer",
        ),
        ({"type": "list", "length": 0, "item": {"type": "int", "low": 1, "high": 2}}, "space.p.length", "at least 1"),
        ({"type": "list", "length": 2}, "space.p.item", "the parameter of each element"),
        ({"type": "list", "length": 2, "item": None}, "space.p.item", "a mapping with a 'type'"),
        ({"type": "float", "low": 0.1, "high": 1, "condition": None}, "space.p.condition", "a mapping {param"),
        ({"type": "float", "low": 0.1, "high": 1, "condition": {"param": "q"}}, "space.p.condition", "exactly one"),
        (
            {"type": "float", "low": 0.1, "high": 1, "condition": {"param": "q", "in": []}},
            "space.p.condition.in",
            "non-empty list",
        ),
        ({"type": "float", "low": "abc", "high": 1}, "space.p.low", "a number (got 'abc')"),
        ({"type": "float", "low": 0.1, "high": 1, "log": "yes"}, "space.p.log", "true or false"),
        ({"type": "float", "high": 1}, "space.p.low", "required for float and int"),
        ({"type": "int", "low": 1, "high": 8, "log": True, "step": 2}, "space.p.step", "no step on a log scale"),
        ({"type": "categorical", "choices": [1, 1.0]}, "space.p.choices", "distinct values"),
        ({"low": 1}, "space.p.type", "one of float, int, categorical, list, composition (got None)"),
        ([1], "space.p", "a mapping with a 'type'"),
    ],
)
def test_parameter_errors_name_the_nested_key(definition, field, words):
    with pytest.raises(ConfigError) as caught:
        parse_space({"p": definition}, "unit.yaml")
    assert caught.value.field == field, str(caught.value)
    assert words in caught.value.expected, str(caught.value)


def test_parsed_values_keep_their_yaml_types():
    space = parse_space(
        {
            "a": {"type": "float", "low": 1, "high": "1e1", "log": True},
            "b": {"type": "int", "low": 1.0, "high": 4, "step": 1.0},
            "c": {"type": "list", "length": "b", "item": {"type": "categorical", "choices": [[1, 2], "x"]}},
        },
        "unit.yaml",
    )
    a, b, c = space.parameters
    assert (a.low, type(a.low), a.high, type(a.high)) == (1, int, 10.0, float)
    assert (b.low, type(b.low), b.step, type(b.step)) == (1, int, 1, int)
    assert c.length.param == "b" and c.item.choices == ([1, 2], "x") and c.item.path == "c"
