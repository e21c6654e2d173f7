"""Ablation specs without Ray: variant expansion for every design, bad specs, paired seeding,
the reuse decision (config hash + code version) and the run folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from contrastlab.ablation.cache import RunCache, code_version, source_digest
from contrastlab.ablation.report import save_results
from contrastlab.ablation.runner import PlannedRun, plan_runs, prepare_folder, report_meta
from contrastlab.ablation.spec import load_spec, spec_from_dict
from contrastlab.cli import main
from contrastlab.config import ConfigError
from contrastlab.engine.loop import Trainer, step_seed
from tests.helpers import ROOT, tiny_config_dict

SSCL = {"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16}


def spec_dict(**fields) -> dict:
    raw = {
        "name": "tiny",
        "base": tiny_config_dict(dict(SSCL)),
        "components": ["synthesis", "debias"],
        "seeds": 2,
        "metrics": ["linear_top1", "knn_top1"],
    }
    raw.update(fields)
    return raw


def write_spec(tmp_path: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def names(spec) -> list[str]:
    return [v.name for v in spec.variants]


# -- designs ------------------------------------------------------------------------------------
def test_leave_one_out_removes_each_component_from_the_full_method() -> None:
    raw = spec_dict(components=["synthesis", "debias", {"name": "mix_mode", "values": ["pair_mix", "duplicate"]}])
    spec = spec_from_dict(raw, "loo.yaml")
    assert names(spec) == ["full", "no_synthesis", "no_debias", "mix_mode=duplicate"]  # pair_mix is the full value
    assert spec.reference == "full"
    by_name = {v.name: v for v in spec.variants}
    assert by_name["full"].overrides == {}
    assert by_name["no_synthesis"].overrides == {"method.synthesis": False}
    assert by_name["no_synthesis"].config.method.synthesis is False
    assert by_name["no_synthesis"].config.method.debias is True
    assert by_name["mix_mode=duplicate"].config.method.mix_mode == "duplicate"
    assert spec.component_of()["no_debias"] == "debias"
    assert len({v.key for v in spec.variants}) == 4


def test_add_one_in_starts_from_the_baseline_with_every_component_off() -> None:
    spec = spec_from_dict(
        spec_dict(design="add_one_in", components=["synthesis", "hard_sampling", "debias"]), "aoi.yaml"
    )
    assert names(spec) == ["baseline", "with_synthesis", "with_hard_sampling", "with_debias", "full"]
    assert spec.reference == "baseline"
    by_name = {v.name: v.config.method for v in spec.variants}
    assert (by_name["baseline"].synthesis, by_name["baseline"].hard_sampling, by_name["baseline"].debias) == (
        False,
        False,
        False,
    )
    assert (by_name["with_debias"].synthesis, by_name["with_debias"].debias) == (False, True)
    assert by_name["full"].synthesis and by_name["full"].hard_sampling and by_name["full"].debias


def test_full_factorial_runs_every_combination_once() -> None:
    raw = spec_dict(
        design="full_factorial", components=["synthesis", "debias", {"name": "mix_mode", "values": ["anchor_mix"]}]
    )
    spec = spec_from_dict(raw, "ff.yaml")
    assert len(spec.variants) == 8
    assert "full" in names(spec) and "no_synthesis+no_debias+mix_mode=anchor_mix" in names(spec)
    settings = {(v.config.method.synthesis, v.config.method.debias, v.config.method.mix_mode) for v in spec.variants}
    assert len(settings) == 8
    assert spec.reference == "full"


def test_explicit_variants_set_components_and_may_switch_method() -> None:
    variants = [
        {"name": "sscl"},
        {"name": "hcl_like", "components": {"synthesis": "off"}},
        {"name": "simclr", "label": "SimCLR", "overrides": {"method": {"name": "simclr", "temperature": 0.5}}},
    ]
    spec = spec_from_dict(spec_dict(design="explicit", components=["synthesis"], variants=variants), "ex.yaml")
    assert names(spec) == ["sscl", "hcl_like", "simclr"]
    assert spec.reference == "sscl"  # the first variant by default
    assert spec.variant("hcl_like").config.method.synthesis is False
    assert spec.variant("simclr").config.method.name == "simclr"
    assert spec.variant("simclr").settings == {"synthesis": None}  # the component does not exist there
    assert spec.component_of()["simclr"] == "SimCLR"


def test_seeds_from_a_count_a_list_or_the_command_line() -> None:
    assert spec_from_dict(spec_dict(seeds=3), "s.yaml").seeds == [0, 1, 2]
    assert spec_from_dict(spec_dict(seeds=[5, 7]), "s.yaml").seeds == [5, 7]
    assert spec_from_dict(spec_dict(seeds=[5, 7]), "s.yaml", seeds=4).seeds == [0, 1, 2, 3]
    spec = spec_from_dict(spec_dict(), "s.yaml")
    run = spec.run_config(spec.variants[1], 7)
    assert run.seed == 7 and run.method.synthesis is False


def test_base_config_is_relative_to_the_spec_and_overrides_apply(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text(yaml.safe_dump(tiny_config_dict(dict(SSCL))))
    raw = spec_dict(
        base_config="../configs/base.yaml",
        overrides={"optim.epochs": 3},
        resources={"workers": 1, "cpus_per_worker": 1, "max_concurrent": 2},
    )
    del raw["base"]
    (tmp_path / "ablations").mkdir()
    spec = load_spec(write_spec(tmp_path / "ablations", raw), overrides=["optim.lr=0.2"])
    assert spec.full.optim.epochs == 3 and spec.full.optim.lr == 0.2
    assert spec.max_concurrent == 2 and all(v.config.optim.epochs == 3 for v in spec.variants)


def test_shipped_specs_are_valid() -> None:
    specs = sorted((ROOT / "ablations").glob("*.yaml"))
    assert {p.stem for p in specs} >= {"sscl", "slr", "mcl", "metaug", "baselines", "quickstart"}
    for path in specs:
        spec = load_spec(path)
        assert len(spec.variants) >= 2 and spec.reference in names(spec), path


# -- bad specs -------------------------------------------------------------------------------------
BAD = [
    ("unknown component", {"components": ["synthesis", "teleport"]}, "components[1]", "teleport"),
    (
        "value a choice does not accept",
        {"components": [{"name": "mix_mode", "values": ["blend"]}]},
        "components[0].values[0]",
        "blend",
    ),
    (
        "duplicate variant",
        {"design": "explicit", "variants": [{"name": "a"}, {"name": "b", "components": {"synthesis": "on"}}]},
        "variants[1]",
        "same config",
    ),
    (
        "duplicate value",
        {"components": [{"name": "mix_mode", "values": ["duplicate", "duplicate"]}]},
        "components[0].values[1]",
        "distinct",
    ),
    ("component already off", {"overrides": {"method.debias": False}}, "components[1]", "switched on"),
    ("choice without values", {"components": ["mix_mode"]}, "components[0].values", "values to compare"),
    ("unknown key", {"variant": []}, "variant", "no such field"),
    ("unknown reference", {"reference": "best"}, "reference", "one of the variants"),
    ("bad seeds", {"seeds": [1, 1]}, "seeds", "distinct"),
    ("probe on unlabelled attribute", {"metrics": ["probe_size"]}, "metrics[0]", "probe"),
    ("bad override", {"overrides": {"optim.epochs": "many"}}, "overrides: optim.epochs", "integer"),
    (
        "retune requires an unknown component",
        {
            "retune": {
                "parameters": {"method.beta": {"type": "float", "low": 0, "high": 2, "requires": "x"}},
                "metric": "knn_top1",
                "mode": "max",
            }
        },
        "retune.parameters.method.beta.requires",
        "component",
    ),
    (
        "retune of a toggled field",
        {
            "retune": {
                "parameters": {"method.debias": {"type": "categorical", "choices": [True, False]}},
                "metric": "knn_top1",
                "mode": "max",
            }
        },
        "retune.parameters.method.debias",
        "toggled",
    ),
]


@pytest.mark.parametrize(("case", "change", "field", "text"), BAD, ids=[case for case, *_ in BAD])
def test_bad_specs_fail_with_one_line_naming_file_and_field(tmp_path: Path, case, change, field, text) -> None:
    path = write_spec(tmp_path, spec_dict(**change))
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    err = caught.value
    assert err.source == str(path)
    assert err.field == field
    assert text in str(err) and "\n" not in str(err)


def test_missing_base_file_is_named(tmp_path: Path) -> None:
    raw = spec_dict(base_config="nowhere.yaml")
    del raw["base"]
    path = write_spec(tmp_path, raw)
    with pytest.raises(ConfigError, match="not found") as caught:
        load_spec(path)
    assert (caught.value.source, caught.value.field) == (str(path), "base_config")


def test_cli_exits_2_with_the_one_line_error(tmp_path: Path, capsys) -> None:
    path = write_spec(tmp_path, spec_dict(components=["teleport"]))
    assert main(["ablate", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"contrastlab: error: {path}: components[0]:") and "\n" not in err


# -- retune: what each variant still has ----------------------------------------------------------
def test_retune_searches_only_the_parameters_a_variant_still_has() -> None:
    retune = {
        "parameters": {
            "method.temperature": {"type": "float", "low": 0.2, "high": 0.8},
            "method.synthetic_count": {"type": "int", "low": 4, "high": 16, "requires": "synthesis"},
        },
        "samples": 3,
        "metric": "knn_top1",
        "mode": "max",
        "overrides": {"optim.epochs": 1},
    }
    variants = [
        {"name": "sscl"},
        {"name": "no_synth", "components": {"synthesis": "off"}},
        {"name": "simclr", "overrides": {"method": {"name": "simclr"}}},
    ]
    spec = spec_from_dict(
        spec_dict(design="explicit", components=["synthesis"], variants=variants, retune=retune), "r.yaml"
    )
    spaces = {name: space.paths if space else None for name, space in spec.retune.spaces.items()}
    assert spaces == {
        "sscl": ["method.temperature", "method.synthetic_count"],
        "no_synth": ["method.temperature"],
        "simclr": ["method.temperature"],
    }
    assert spec.retune.seed not in spec.seeds
    assert "retuned" in spec.retune.note() and "3 trials" in spec.retune.note()


# -- paired seeding ----------------------------------------------------------------------------------
def first_step(cfg, run_dir: Path) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict]:
    trainer = Trainer(cfg, run_dir)
    indices = next(iter(trainer.method.batch_sampler(trainer.ctx).epoch(0)))
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, 0, 0, 0))
    views = trainer.augment.two_views(trainer.train_images[indices], generator)
    encoder = {k: v.clone() for k, v in trainer.method.encoder.state_dict().items()}
    trainer.writer.close()
    return indices, views, encoder


def test_same_seed_gives_every_variant_the_same_batches_views_and_initial_encoder(tmp_path: Path) -> None:
    variants = [
        {"name": "sscl"},
        {"name": "no_synth", "components": {"synthesis": "off", "debias": "off"}},
        {"name": "simclr", "overrides": {"method": {"name": "simclr"}}},
    ]
    spec = spec_from_dict(spec_dict(design="explicit", variants=variants), "paired.yaml")
    steps = {v.name: first_step(spec.run_config(v, 1), tmp_path / v.name) for v in spec.variants}
    reference_indices, reference_views, reference_encoder = steps["sscl"]
    for name in ("no_synth", "simclr"):
        indices, views, encoder = steps[name]
        assert torch.equal(indices, reference_indices), name
        assert all(torch.equal(a, b) for a, b in zip(views, reference_views)), name
        assert encoder.keys() == reference_encoder.keys()
        assert all(torch.equal(encoder[k], reference_encoder[k]) for k in encoder), name
    other_indices, _, other_encoder = first_step(spec.run_config(spec.variants[0], 2), tmp_path / "seed2")
    assert not torch.equal(other_indices, reference_indices)
    assert not all(torch.equal(other_encoder[k], reference_encoder[k]) for k in other_encoder)


# -- reuse: config hash and code version --------------------------------------------------------------
def finished(cache: RunCache, run: PlannedRun, code: str) -> None:
    cache.put_run(
        run.key,
        code,
        {
            "variant": run.variant.name,
            "seed": run.seed,
            "metrics": {"linear_top1": 0.5},
            "curves": {"loss": [(1, 2.0), (2, 1.5)]},
        },
    )


def test_a_run_is_reused_only_for_the_same_config_and_code(tmp_path: Path) -> None:
    spec = spec_from_dict(spec_dict(), "reuse.yaml")
    cache = RunCache(tmp_path / "cache.json")
    for run in plan_runs(spec, tmp_path, "code-1", cache):
        finished(cache, run, "code-1")
    reloaded = RunCache(tmp_path / "cache.json")
    assert all(run.cached for run in plan_runs(spec, tmp_path, "code-1", reloaded))
    assert not any(run.cached for run in plan_runs(spec, tmp_path, "code-2", reloaded))
    changed = spec_from_dict(spec_dict(), "reuse.yaml", overrides=["optim.lr=0.05"])
    assert not any(run.cached for run in plan_runs(changed, tmp_path, "code-1", reloaded))
    more_seeds = spec_from_dict(spec_dict(seeds=3), "reuse.yaml")
    assert [bool(run.cached) for run in plan_runs(more_seeds, tmp_path, "code-1", reloaded)] == [True, True, False] * 3


def test_corrupt_cache_is_an_error_not_a_silent_recompute(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_text("{not json")
    with pytest.raises(ConfigError, match="valid JSON"):
        RunCache(tmp_path / "cache.json")


def test_code_version_follows_the_sources(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    before = source_digest(package)
    (package / "a.py").write_text("x = 2\n")
    assert source_digest(package) != before
    assert "+src." in code_version()


def test_run_folders_resume_or_move_aside(tmp_path: Path) -> None:
    spec = spec_from_dict(spec_dict(), "folders.yaml")
    run = plan_runs(spec, tmp_path, "code-1", RunCache(tmp_path / "cache.json"))[0]
    superseded = tmp_path / "superseded" / "t0"
    name = prepare_folder(run, "code-1", resume=False, superseded=superseded)
    (run.run_dir / "partial.txt").write_text("epoch 1")
    assert prepare_folder(run, "code-1", resume=True, superseded=superseded) == name
    assert (run.run_dir / "partial.txt").is_file()
    restarted = prepare_folder(run, "code-1", resume=False, superseded=superseded)
    assert restarted != name and not (run.run_dir / "partial.txt").exists()
    assert (superseded / "full" / "seed0" / "partial.txt").is_file()  # moved, not deleted
    other_code = prepare_folder(run, "code-2", resume=True, superseded=tmp_path / "superseded" / "t1")
    assert other_code not in (name, restarted)


# -- the report command -----------------------------------------------------------------------------
def test_report_command_remakes_the_report(tmp_path: Path, capsys) -> None:
    spec = spec_from_dict(spec_dict(), "report.yaml")
    results = []
    for index, run in enumerate(plan_runs(spec, tmp_path, "code", RunCache(tmp_path / "cache.json"))):
        value = 0.6 + 0.01 * index
        results.append(
            {
                "variant": run.variant.name,
                "seed": run.seed,
                "metrics": {"linear_top1": value, "knn_top1": value - 0.1},
                "curves": {"loss": [(1, 2.0), (2, 1.0 + value)]},
                "overrides": run.overrides,
                "reused": False,
            }
        )
    results[-1] = {**copy.deepcopy(results[-1]), "metrics": {}, "error": "RuntimeError: diverged"}
    save_results(results, tmp_path, report_meta(spec, "fixed"))
    assert main(["report", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| no_debias | debias |" in text and "diverged" in text
    assert {"report.html", "summary.csv", "runs.csv", "bar_linear_top1.png", "curves_loss.png"} <= {
        p.name for p in (tmp_path / "report").iterdir()
    }
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["design"] == "leave_one_out"


# -- the validation protocol ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"seeds": [0, 1000]}, "seeds", "kept for tuning"),
        ({"seeds": 1001}, "seeds", "between 1 and 1000"),
        ({"metrics": ["linear_top1", "loss"]}, "metrics[1]", "a metric the runs report"),
    ],
)
def test_ablation_seeds_and_metrics_stay_on_the_evaluation_side(tmp_path, fields, field, words):
    with pytest.raises(ConfigError) as err:
        spec_from_dict(spec_dict(**fields), write_spec(tmp_path, spec_dict(**fields)))
    assert err.value.field == field and words in err.value.expected


def test_ablation_needs_a_validation_split_and_accepts_split_names(tmp_path):
    raw = spec_dict()
    raw["base"]["data"]["val_size"] = 0
    with pytest.raises(ConfigError, match="data.val_size"):
        spec_from_dict(raw, write_spec(tmp_path, raw))
    named = spec_dict(metrics=["test/linear_top1", "val/knn_top1"])
    assert spec_from_dict(named, write_spec(tmp_path, named)).metrics == ["linear_top1", "knn_top1"]


def test_retune_searches_on_val_at_a_tuning_seed(tmp_path):
    retune = {
        "parameters": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}},
        "samples": 2,
        "metric": "knn_top1",
        "mode": "max",
    }
    raw = spec_dict(retune=retune)
    assert spec_from_dict(raw, write_spec(tmp_path, raw)).retune.metric == "val/knn_top1"
    for change, field in (({"metric": "test/knn_top1"}, "retune.metric"), ({"seed": 7}, "retune.seed")):
        raw = spec_dict(retune={**retune, **change})
        with pytest.raises(ConfigError) as err:
            spec_from_dict(raw, write_spec(tmp_path, raw))
        assert err.value.field == field


@pytest.mark.parametrize(
    ("sampler", "field", "words"),
    [
        ({"type": "grid"}, "retune.sampler.type", "'tpe' or 'random'"),
        ({"seedz": 1}, "retune.sampler.seedz", "no such field"),
        ({"n_startup_trials": -1}, "retune.sampler.n_startup_trials", "greater than or equal to 0"),
        ("tpe", "retune.sampler", "a mapping of type (tpe | random)"),
    ],
)
def test_retune_sampler_errors_name_the_field_on_one_line(tmp_path, sampler, field, words):
    retune = {
        "parameters": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.1}},
        "metric": "knn_top1",
        "mode": "max",
        "sampler": sampler,
    }
    raw = spec_dict(retune=retune)
    with pytest.raises(ConfigError) as err:
        spec_from_dict(raw, write_spec(tmp_path, raw))
    assert err.value.field == field and words in err.value.expected and "\n" not in str(err.value)
    sampled = spec_from_dict(spec_dict(retune={**retune, "sampler": {"type": "random"}}), "r.yaml").retune.sampler
    assert sampled == {"type": "random", "seed": 0, "n_startup_trials": 10}


def test_a_second_ablate_on_a_busy_folder_names_the_holder_and_changes_nothing(tmp_path):
    import subprocess
    import sys

    from contrastlab.ablation.runner import run_ablation
    from contrastlab.engine.runfolder import RunFolderError

    output = tmp_path / "out"
    output.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"handle = open({str(output / '.lock')!r}, 'a+')\n"
                "fcntl.flock(handle, fcntl.LOCK_EX); handle.write(str(os.getpid())); handle.flush()\n"
                "print('held', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        spec = spec_from_dict(spec_dict(), write_spec(tmp_path, spec_dict()))
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            run_ablation(spec, output)
        assert sorted(p.name for p in output.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
