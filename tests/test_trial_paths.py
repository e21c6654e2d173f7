"""How a study trial picks its path and what it reserves, without starting Ray."""

from __future__ import annotations

import pytest
import torch

from contrastlab.config import ConfigError, config_hash
from contrastlab.engine.loop import NonFiniteLossError
from contrastlab.study import fast
from contrastlab.study.resources import DRIVER_RESOURCES, trials_at_once
from contrastlab.study.trial import (
    TrialFailed,
    final_error,
    is_final,
    record_final_error,
    trial_resources,
    uses_fast_path,
)
from tests.helpers import tiny_config


def test_one_worker_takes_the_fast_path_unless_forced_onto_ray_train():
    assert uses_fast_path(tiny_config(resources={"workers": 1}))
    assert not uses_fast_path(tiny_config(resources={"workers": 1, "trial_path": "train"}))
    assert not uses_fast_path(tiny_config(resources={"workers": 2}))


def test_a_fast_trial_reserves_its_runs_cpus_and_gpu_share():
    cfg = tiny_config(resources={"cpus_per_worker": 2, "gpus_per_worker": 0.25})
    assert trial_resources(cfg) == {"CPU": 2, "GPU": 0.25}
    assert trial_resources(tiny_config()) == {"CPU": 1}
    assert trial_resources(tiny_config(resources={"workers": 2})) == DRIVER_RESOURCES
    assert fast.trial_threads(cfg) == 2
    assert fast.trial_threads(tiny_config(resources={"cpus_per_worker": 0.5})) == 1


def test_two_one_cpu_trials_fit_two_cpus():
    assert trials_at_once(tiny_config(), {"CPU": 2}, None, 8) == 2


def test_how_a_trial_runs_is_outside_the_config_hash():
    cfg = tiny_config()
    assert config_hash(cfg.with_overrides({"resources.trial_path": "train", "resources.trial_retries": 0})) == (
        config_hash(cfg)
    )
    assert config_hash(cfg.with_overrides({"resources.workers": 2})) != config_hash(cfg)


def test_only_the_runs_own_errors_are_final():
    assert is_final(NonFiniteLossError("loss became NaN"))
    assert is_final(ConfigError("a.yaml", "optim.lr", "a number"))
    assert is_final(torch.OutOfMemoryError("CUDA out of memory"))
    try:
        raise TrialFailed("NonFiniteLossError: loss") from NonFiniteLossError("loss")
    except TrialFailed as err:
        assert is_final(err)
    assert not is_final(RuntimeError("worker died"))
    assert not is_final(TrialFailed("RayActorError: the actor died"))


def test_a_final_error_binds_only_its_own_tune_trial(tmp_path):
    assert final_error(tmp_path, "a") is None
    record_final_error(tmp_path, "a", "NonFiniteLossError: loss became NaN")
    assert final_error(tmp_path, "a") == "NonFiniteLossError: loss became NaN"
    assert final_error(tmp_path, "b") is None  # a later trial on the same run folder starts afresh


def test_an_actor_loads_a_dataset_once_per_data_config_and_seed(monkeypatch):
    loads = []

    def load(data_cfg, seed, source):
        loads.append((data_cfg.trifeature_train, seed))
        return object()

    monkeypatch.setattr(fast, "load_dataset", load)
    monkeypatch.setattr(fast, "_BUNDLES", {})
    cfg = tiny_config()
    first = fast.cached_bundle(cfg)
    assert fast.cached_bundle(cfg.with_overrides({"optim.lr": 0.3, "name": "other"})) is first
    assert loads == [(256, 0)]
    fast.cached_bundle(cfg.with_overrides({"seed": 1}))
    fast.cached_bundle(cfg.with_overrides({"data.trifeature_train": 300}))
    assert loads == [(256, 0), (256, 1), (300, 0)]


@pytest.mark.parametrize("use_ray", [False, True])
def test_train_says_which_path_runs(use_ray):
    from contrastlab.commands.train import path_line

    line = path_line(tiny_config(), use_ray)
    assert ("Ray Train" in line and "in this process" not in line) if use_ray else "without Ray" in line
