"""The shipped search spaces, composition parameters and the conditional TPE sampler.

Every file in search_spaces/ is loaded and sampled by its own sampler (TPE past its random
start); every sampled configuration must be an experiment the platform accepts. The
composition's integers are checked against the definition (exact sum, minimum, nearest
apportionment) and its proportions against the uniform distribution over all splits. The
sampler of a space with conditions is checked through what it does: the relative (jointly
modelled) search space it infers and the parameters it samples jointly.
"""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path

import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.config import ConfigError, read_yaml
from contrastlab.methods.mcl_config import resolve_stage_epochs
from contrastlab.methods.sscl import check_pool_size
from contrastlab.tuning.composition import cut_name, cuts_for, integer_parts, parts_from_cuts, proportions
from contrastlab.tuning.runner import make_searcher
from contrastlab.tuning.sampler import make_sampler, tpe_settings
from contrastlab.tuning.space_spec import parse_space
from contrastlab.tuning.spec import load_spec, spec_from_dict
from tests.helpers import ROOT, write

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
MCL = ROOT / "search_spaces" / "mcl.yaml"


def run_asks(space, sampler, count: int, seed: int = 0) -> list[tuple[dict, optuna.Trial]]:
    """`count` asks on an in-memory study, as the searcher does them (define-by-run), each told
    a value that depends on its parameters, so that TPE has something to model."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    rng = random.Random(seed)
    asked = []
    for _ in range(count):
        trial = study.ask()
        params = space(trial)["params"]
        asked.append((params, trial))
        study.tell(trial, rng.random() + len(str(sorted(params.items()))) % 7)
    return asked


def raw_spec(path: Path) -> dict:
    raw = read_yaml(path)
    raw["base_config"] = str((path.parent / raw["base_config"]).resolve())
    return raw


# -- every shipped space -----------------------------------------------------------------------------
def test_the_expected_spaces_are_shipped():
    names = {p.stem for p in SPACES}
    assert {"simclr", "moco", "mochi", "sscl", "slr", "mcl", "metaug", "dcl", "hcl"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_every_sample_of_every_space_is_a_valid_experiment(path):
    spec = load_spec(path)
    assert spec.base.method.name == spec.name  # each file tunes the method it is named after
    sampler = make_sampler(spec.sampler, spec.space)
    seen = set()
    for params, trial in run_asks(spec.space, sampler, 30):
        cfg = spec.base.with_overrides(params, str(path))  # raises on anything the experiment refuses
        seen.update(params)
        applied = cfg.to_dict()
        for dotted, value in params.items():
            section, _, field = dotted.partition(".")
            assert applied[section][field] == value, dotted
        # Optuna's record holds the active parameters only (a composition as its cuts).
        assert {name.partition("[")[0] for name in trial.params} == set(params)
        method = cfg.method
        if cfg.method.name == "sscl":
            check_pool_size(method, cfg.optim.batch_size)  # checked when a run starts
            assert not method.synthesis or method.synthetic_count > 0
            assert not method.debias or method.tau_plus > 0
            assert not method.hard_sampling or method.beta > 0
        if cfg.method.name == "slr":
            assert not method.slr or method.alpha > 0
        if cfg.method.name == "mcl":  # the sum is checked when a run starts
            assert resolve_stage_epochs(method, cfg.optim.epochs) == method.stage_epochs
    assert seen == set(spec.space.paths)  # every parameter was active in some trial


def test_the_sscl_switch_values_stay_apart_from_their_switches():
    raw = read_yaml(ROOT / "search_spaces" / "sscl.yaml")["space"]
    for value, switch in (("synthetic_count", "synthesis"), ("tau_plus", "debias"), ("beta", "hard_sampling")):
        definition = raw[f"method.{value}"]
        assert definition["low"] > 0, value
        assert definition["condition"] == {"param": f"method.{switch}", "equals": True}


# -- compositions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("total, minimum", [(9, 1), (12, 2), (8, 2), (40, 0)])
def test_composition_sums_to_the_total_with_every_part_at_least_the_minimum(parts, total, minimum):
    if parts * minimum > total:
        pytest.skip("impossible")
    rng = random.Random(parts * 1000 + total)
    edges = [list(c) for c in itertools.product([0.0, 1.0, 0.5], repeat=parts - 1)]
    for cuts in edges + [[rng.random() for _ in range(parts - 1)] for _ in range(300)]:
        result = parts_from_cuts(cuts, total, minimum)
        assert len(result) == parts and sum(result) == total
        assert all(isinstance(p, int) and p >= minimum for p in result)
        # Nearest apportionment: each part's free units are the floor or the ceiling of its quota.
        quota = [(total - parts * minimum) * s for s in proportions(cuts)]
        assert all(abs((p - minimum) - q) < 1 for p, q in zip(result, quota, strict=True)), (cuts, result, quota)


def test_every_composition_has_cuts_that_give_it_back():
    for parts in (2, 3, 4):
        for combo in itertools.product(range(1, 10), repeat=parts):
            if sum(combo) == 9:
                assert parts_from_cuts(cuts_for(list(combo), 1), 9, 1) == list(combo)


def test_uniform_cuts_are_uniform_over_all_splits():
    # Proportions of n parts uniform on the simplex (Dirichlet(1, ..., 1)): mean 1/n and
    # E[p^2] = 2 / (n (n + 1)) for every part; plain stick breaking with uniform fractions
    # would give the first part a mean of 1/2.
    rng = random.Random(7)
    for parts in (2, 3, 4):
        draws = [proportions([rng.random() for _ in range(parts - 1)]) for _ in range(20000)]
        for index in range(parts):
            column = [d[index] for d in draws]
            assert sum(column) / len(column) == pytest.approx(1 / parts, abs=0.01)
            second = sum(p * p for p in column) / len(column)
            assert second == pytest.approx(2 / (parts * (parts + 1)), abs=0.01)


def test_integer_parts_refuses_an_impossible_minimum():
    with pytest.raises(ValueError, match="exceed the total"):
        integer_parts([0.5, 0.5, 0.0], 5, 2)


@pytest.mark.parametrize("epochs", [None, 12])
def test_mcl_schedules_of_2_3_and_4_stages_sum_to_optim_epochs(tmp_path, epochs):
    raw = raw_spec(MCL)
    raw.pop("points_to_evaluate")  # its schedule sums to the shipped 9 epochs
    spec = spec_from_dict(raw, tmp_path / "mcl.yaml", [f"optim.epochs={epochs}"] if epochs else [])
    expected = epochs or yaml.safe_load((ROOT / "configs" / "mcl_trifeature.yaml").read_text())["optim"]["epochs"]
    counts = set()
    for params, trial in run_asks(spec.space, make_sampler(spec.sampler, spec.space), 40):
        schedule, stages = params["method.stage_epochs"], params["method.stages"]
        assert len(schedule) == stages + 1 and sum(schedule) == expected and min(schedule) >= 1
        cuts = {name for name in trial.params if name.startswith("method.stage_epochs")}
        assert cuts == {cut_name("method.stage_epochs", i, stages + 1) for i in range(stages)}
        counts.add(len(schedule))
    assert counts == {2, 3, 4}


def test_a_composition_total_may_be_a_sampled_parameter():
    space = parse_space(
        {
            "optim.epochs": {"type": "int", "low": 6, "high": 12},
            "method.stage_epochs": {"type": "composition", "length": 3, "total": "optim.epochs", "min": 2},
        },
        "unit.yaml",
    )
    assert space.paths == ["optim.epochs", "method.stage_epochs"]
    for params, _ in run_asks(space, optuna.samplers.RandomSampler(seed=3), 30):
        assert sum(params["method.stage_epochs"]) == params["optim.epochs"]
        assert min(params["method.stage_epochs"]) >= 2


def test_a_schedule_given_by_hand_is_tried_as_it_is(tmp_path):
    spec = load_spec(MCL)
    point = spec.points_to_evaluate[0]
    assert point["method.stage_epochs"] == [3, 3, 3]
    study = optuna.create_study()
    study.enqueue_trial(spec.space.optuna_point(point))
    params = spec.space(study.ask())["params"]
    assert params["method.stage_epochs"] == [3, 3, 3] and params["method.stages"] == 2


# -- the conditional TPE sampler -------------------------------------------------------------------
def sampler_spec(tmp_path: Path, path: Path, **sampler):
    raw = raw_spec(path)
    raw["sampler"] = {**raw["sampler"], **sampler}
    return spec_from_dict(raw, tmp_path / path.name)


def test_tpe_groups_conditional_spaces_and_leaves_others_to_optuna(tmp_path):
    metaug = sampler_spec(tmp_path, ROOT / "search_spaces" / "metaug.yaml")
    assert metaug.space.has_conditional_parameters
    assert tpe_settings(metaug.sampler, metaug.space) == {
        "seed": 0,
        "n_startup_trials": 10,
        "multivariate": True,
        "group": True,
    }
    off = sampler_spec(tmp_path, ROOT / "search_spaces" / "metaug.yaml", multivariate=False)
    assert tpe_settings(off.sampler, off.space) == {"seed": 0, "n_startup_trials": 10, "multivariate": False}
    ungrouped = sampler_spec(tmp_path, ROOT / "search_spaces" / "metaug.yaml", group=False)
    assert tpe_settings(ungrouped.sampler, ungrouped.space)["multivariate"] is True
    assert "group" not in tpe_settings(ungrouped.sampler, ungrouped.space)
    simclr = load_spec(ROOT / "search_spaces" / "simclr.yaml")
    assert not simclr.space.has_conditional_parameters
    assert tpe_settings(simclr.sampler, simclr.space) == {"seed": 0, "n_startup_trials": 8}
    # The saved spec of a study is unchanged where the options are not given (resume compares it).
    assert set(simclr.resolved()["sampler"]) == {"type", "seed", "n_startup_trials"}
    assert off.resolved()["sampler"]["multivariate"] is False


@pytest.mark.parametrize(
    "options, expected", [({}, "union"), ({"group": False}, "intersection"), ({"multivariate": False}, "none")]
)
def test_the_sampler_models_the_conditional_parameters_by_group(tmp_path, options, expected):
    spec = sampler_spec(tmp_path, ROOT / "search_spaces" / "metaug.yaml", **options)
    sampler = make_searcher(spec, optuna.storages.InMemoryStorage()).study_sampler
    asked = run_asks(spec.space, sampler, 14)
    study = asked[-1][1].study
    names = [set(trial.params) for _, trial in asked]
    union, intersection = set.union(*names), set.intersection(*names)
    assert union > intersection  # the space has parameters that only some trials have
    following = study.ask()
    relative = set(sampler.infer_relative_search_space(study, study.get_trials(deepcopy=False)[-1]))
    assert relative == {"union": union, "intersection": intersection, "none": set()}[expected]
    # The next trial takes its conditional values from the joint model, not one by one.
    spec.space(following)
    conditional = (set(following.params) & union) - intersection
    jointly = set(following.relative_params) & set(following.params)
    if expected == "union":
        assert conditional and conditional <= jointly
        assert all(following.params[n] == following.relative_params[n] for n in jointly)
    else:
        assert not conditional & jointly


# -- bad specs: one line naming the file and the field, exit code 2 -----------------------------------
def composition(**changes) -> dict:
    base = {"type": "composition", "length": {"param": "method.stages", "add": 1}, "total": "optim.epochs", "min": 1}
    return {**base, **changes}


BAD = [
    ("impossible-minimum", "mcl", {"space.method.stage_epochs": composition(min=3)}, "space.method.stage_epochs.min"),
    (
        "total-not-an-integer-field",
        "mcl",
        {"space.method.stage_epochs": composition(total="optim.lr")},
        "space.method.stage_epochs.total",
    ),
    (
        "total-missing",
        "mcl",
        {"space.method.stage_epochs": {"type": "composition", "length": 3}},
        "space.method.stage_epochs.total",
    ),
    ("negative-minimum", "mcl", {"space.method.stage_epochs": composition(min=-1)}, "space.method.stage_epochs.min"),
    (
        "fixed-total-too-small",
        "mcl",
        {"space.method.stage_epochs": composition(total=3)},
        "space.method.stage_epochs.min",
    ),
    (
        "condition-on-composition",
        "mcl",
        {
            "space.method.labels": {
                "type": "categorical",
                "choices": ["cumulative"],
                "condition": {"param": "method.stage_epochs", "equals": 1},
            }
        },
        "space.method.labels.condition.param",
    ),
    (
        "point-schedule-wrong-sum",
        "mcl",
        {"points_to_evaluate": [{"method.stages": 2, "method.stage_epochs": [3, 3, 2]}]},
        "points_to_evaluate[0].method.stage_epochs",
    ),
    ("unknown-sampler-option", "metaug", {"sampler": {"type": "tpe", "multivarate": False}}, "sampler.multivarate"),
    ("sampler-option-not-a-bool", "metaug", {"sampler": {"type": "tpe", "multivariate": "no"}}, "sampler.multivariate"),
    ("multivariate-on-random", "metaug", {"sampler": {"type": "random", "multivariate": True}}, "sampler.multivariate"),
    (
        "group-without-multivariate",
        "metaug",
        {"sampler": {"type": "tpe", "multivariate": False, "group": True}},
        "sampler.group",
    ),
    (
        "sscl-k-0-with-synthesis",
        "sscl",
        {
            "space.method.synthetic_count": {
                "type": "int",
                "low": 0,
                "high": 256,
                "step": 16,
                "condition": {"param": "method.synthesis", "equals": True},
            }
        },
        "space.method.synthetic_count",
    ),
    (
        "sscl-tau-plus-0-with-debias",
        "sscl",
        {
            "space.method.tau_plus": {
                "type": "float",
                "low": 0.0,
                "high": 0.1,
                "condition": {"param": "method.debias", "equals": True},
            }
        },
        "space.method.tau_plus",
    ),
    (
        "sscl-k-0-switch-fixed-on",
        "sscl",
        {"space": {"method.synthetic_count": {"type": "int", "low": 0, "high": 64}}},
        "space.method.synthetic_count",
    ),
    (
        "slr-alpha-0-with-slr",
        "slr",
        {"space.method.alpha": {"type": "float", "low": 0.0, "high": 0.9}},
        "space.method.alpha",
    ),
]


def bad_spec(tmp_path: Path, name: str, changes: dict) -> Path:
    raw = raw_spec(ROOT / "search_spaces" / f"{name}.yaml")
    for key, value in changes.items():
        if key.startswith("space."):
            path = key.removeprefix("space.")
            raw["space"][path] = value
        else:
            raw[key] = copy.deepcopy(value)
    if name == "mcl" and "points_to_evaluate" not in changes:
        raw.pop("points_to_evaluate")
    return write(tmp_path / "bad.yaml", raw)


@pytest.mark.parametrize("case, name, changes, field", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_one_line_exit_2_naming_file_and_field(tmp_path, capsys, monkeypatch, case, name, changes, field):
    def reached(*_args, **_kwargs):
        raise AssertionError("the study got past its spec check")

    monkeypatch.setattr("contrastlab.tuning.runner.run_study", reached)
    monkeypatch.setattr("contrastlab.raytrain.session.init_ray", reached)
    spec_file = bad_spec(tmp_path, name, changes)
    capsys.readouterr()
    assert main(["tune", str(spec_file), "--output", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{spec_file}: {field}: " in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError) as caught:  # the same refusal from the library
        load_spec(spec_file)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "space, field, words",
    [
        (
            {
                "method.stages": {"type": "int", "low": 0, "high": 2},
                "method.stage_epochs": {"type": "composition", "length": "method.stages", "total": 9},
            },
            "space.method.stage_epochs.length",
            "at least one part",
        ),
        (
            {"method.stage_epochs": {"type": "composition", "length": 3, "total": 9, "min": True}},
            "space.method.stage_epochs.min",
            "an integer of at least 0",
        ),
        (
            {"method.stage_epochs": {"type": "composition", "length": 3, "total": "optim.", "min": 1}},
            "space.method.stage_epochs.total",
            "a dotted config path",
        ),
        (
            {
                "optim.epochs": {"type": "categorical", "choices": [4.5, 9]},
                "method.stage_epochs": {"type": "composition", "length": 2, "total": "optim.epochs"},
            },
            "space.method.stage_epochs.total",
            "an integer parameter",
        ),
    ],
)
def test_composition_definitions_are_checked_on_their_own(tmp_path, space, field, words):
    with pytest.raises(ConfigError) as caught:
        spec_from_dict({**raw_spec(MCL), "space": space, "points_to_evaluate": None}, tmp_path / "unit.yaml")
    assert caught.value.field == field, str(caught.value)
    assert words in caught.value.expected and "\n" not in str(caught.value)
