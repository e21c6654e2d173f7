"""The shared floor of studies and ablations: value equality, merging, concurrency
arithmetic, safe names, and which Ray a session may shut down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contrastlab.errors import ConfigError
from contrastlab.raytrain import session as ray_session
from contrastlab.raytrain.session import RaySession, init_ray
from contrastlab.study.experiment import TUNING_SEED_FLOOR, base_experiment_dict, check_spec_keys, deep_merge
from contrastlab.study.metrics import hparam_value, numeric_metrics
from contrastlab.study.resources import DRIVER_RESOURCES, ClusterPace, trials_at_once
from contrastlab.study.trial import TrialFailed, one_line
from contrastlab.study.values import safe_name, same


# -- value equality ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (False, False, True),
        (1, 1.0, True),
        (0.5, 0.5, True),
        ("a", "a", True),
        (None, None, True),
        (None, False, False),
        ([1, 2], [1, 2], True),
        (2, 3, False),
    ],
)
def test_same_keeps_yaml_booleans_apart_from_numbers(a, b, expected) -> None:
    assert same(a, b) is expected
    assert same(b, a) is expected


# -- deep merge -------------------------------------------------------------------------------
def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"optim": {"lr": 0.1, "epochs": 3}, "method": {"name": "simclr", "views": [1, 2]}, "seed": 0}
    extra = {"optim": {"lr": 0.5}, "method": {"views": [3]}, "data": {"name": "x"}}
    merged = deep_merge(base, extra)
    assert merged == {
        "optim": {"lr": 0.5, "epochs": 3},
        "method": {"name": "simclr", "views": [3]},
        "seed": 0,
        "data": {"name": "x"},
    }
    # Neither input changes, and the result shares nothing with them.
    assert base["optim"] == {"lr": 0.1, "epochs": 3} and base["method"]["views"] == [1, 2]
    merged["data"]["name"] = "y"
    assert extra["data"]["name"] == "x"


def test_deep_merge_lets_a_value_replace_a_section() -> None:
    assert deep_merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}
    assert deep_merge({"a": 2}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_spec_keys_and_base_experiment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"spec.yaml: <top level>: a YAML mapping \(a study spec\)"):
        check_spec_keys([1], "spec.yaml", {"name"}, "a study spec")
    with pytest.raises(ConfigError, match=r"spec.yaml: nmae: no such field \(allowed: base, name\)"):
        check_spec_keys({"nmae": 1}, "spec.yaml", ("name", "base"), "a study spec")
    (tmp_path / "exp.yaml").write_text("optim:\n  lr: 0.1\n  epochs: 3\nseed: 5\n")
    spec = tmp_path / "spec.yaml"
    merged = base_experiment_dict({"base_config": "exp.yaml", "base": {"optim": {"epochs": 9}}}, spec)
    assert merged == {"optim": {"lr": 0.1, "epochs": 9}, "seed": 5}
    with pytest.raises(ConfigError, match="base_config: an existing experiment file"):
        base_experiment_dict({"base_config": "missing.yaml"}, spec)
    with pytest.raises(ConfigError, match="base: an experiment"):
        base_experiment_dict({}, spec)
    assert TUNING_SEED_FLOOR == 1000


# -- concurrency ------------------------------------------------------------------------------
def _with_resources(cfg, workers: int, cpus: float, gpus: float = 0):
    return cfg.with_overrides(
        {"resources.workers": workers, "resources.cpus_per_worker": cpus, "resources.gpus_per_worker": gpus}
    )


def test_trials_at_once_counts_cpus_and_the_driver(tiny_cfg) -> None:
    cfg = _with_resources(tiny_cfg, workers=2, cpus=1)
    # Each trial takes 2 CPUs plus the driver's share: 4 CPUs hold one trial, not two.
    assert trials_at_once(cfg, {"CPU": 4}, None, 10) == 1
    assert trials_at_once(cfg, {"CPU": 4 + 2 * DRIVER_RESOURCES["CPU"]}, None, 10) == 2
    assert trials_at_once(cfg, {"CPU": 64}, None, 10) == 10  # never more than there are trials
    assert trials_at_once(cfg, {"CPU": 1}, None, 10) == 1  # at least one (an autoscaler may add nodes)
    assert trials_at_once(cfg, {}, None, 10) == 1


def test_trials_at_once_counts_gpus_and_obeys_the_spec(tiny_cfg) -> None:
    cfg = _with_resources(tiny_cfg, workers=2, cpus=1, gpus=1)
    assert trials_at_once(cfg, {"CPU": 64, "GPU": 4}, None, 10) == 2
    assert trials_at_once(cfg, {"CPU": 64, "GPU": 3}, None, 10) == 1
    half = _with_resources(tiny_cfg, workers=2, cpus=1, gpus=0.5)
    assert trials_at_once(half, {"CPU": 64, "GPU": 3}, None, 10) == 3
    assert trials_at_once(cfg, {"CPU": 64, "GPU": 8}, 3, 10) == 3  # the spec's cap bounds what fits
    assert trials_at_once(cfg, {"CPU": 64, "GPU": 4}, 3, 10) == 2  # a small cluster queues the rest
    assert trials_at_once(cfg, {"CPU": 1}, 3, 2) == 1


def test_the_pace_follows_a_growing_cluster(tiny_cfg) -> None:
    """Concurrency is read from the cluster as it is now, not once: a head without GPUs runs
    one trial (its workers wait for a GPU node), and more start as GPU nodes join."""
    cfg = _with_resources(tiny_cfg, workers=1, cpus=1, gpus=1)
    cluster = {"CPU": 4.0}
    pace = ClusterPace(cfg, limit=None, refresh_s=0.0, resources=lambda: cluster)
    assert pace.allowed() == 1
    cluster.update(CPU=12.0, GPU=2.0)
    assert pace.allowed() == 2
    cluster.update(CPU=20.0, GPU=4.0)
    assert pace.allowed() == 4
    capped = ClusterPace(cfg, limit=3, refresh_s=0.0, resources=lambda: cluster)
    assert capped.allowed() == 3
    cluster.update(CPU=4.0, GPU=1.0)  # nodes gone: fewer trials start, the cap is no promise
    assert capped.allowed() == 1
    slow = ClusterPace(cfg, limit=None, refresh_s=3600.0, resources=lambda: cluster)
    assert slow.allowed() == 1
    cluster.update(CPU=20.0, GPU=4.0)
    assert slow.allowed() == 1  # one reading stands for `refresh_s`


def test_paced_search_algorithms_ask_the_pace(tiny_cfg) -> None:
    from ray.tune.search import Searcher

    from contrastlab.study.pacing import PacedGrid, PacedSearcher

    class Counting(Searcher):
        def __init__(self):
            super().__init__(metric="loss", mode="min")
            self.asked = 0

        def suggest(self, trial_id):
            self.asked += 1
            return {"x": self.asked}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    cluster = {"CPU": 1.0}
    pace = ClusterPace(
        _with_resources(tiny_cfg, workers=1, cpus=1), limit=None, refresh_s=0.0, resources=lambda: cluster
    )
    searcher = PacedSearcher(Counting(), pace)
    assert searcher.suggest("a") == {"x": 1}
    assert searcher.suggest("b") is None  # one alive already fills a 1-CPU cluster
    cluster["CPU"] = 2.5  # a node joins: room for two trials (with or without a 0.01-CPU driver each)
    assert searcher.suggest("b") == {"x": 2}
    assert searcher.suggest("c") is None
    searcher.on_trial_complete("a", {"loss": 0.0})
    assert searcher.suggest("c") == {"x": 3}
    grid = PacedGrid(pace)
    grid.max_concurrent = 100  # what Tune may set does not replace the pace
    assert grid.max_concurrent == 2


# -- names and metrics ------------------------------------------------------------------------
def test_safe_name() -> None:
    assert safe_name("no_hard=0.5") == "no_hard_0.5"
    assert safe_name("a b/c") == "a_b_c"
    assert safe_name("a  //b") == "a_b"
    assert safe_name("keep-this_1.2") == "keep-this_1.2"


def test_metric_helpers() -> None:
    result = {"loss": 1, "val/knn_top1": 0.5, "done": False, "training_iteration": 3, "flag": True, "x": "s"}
    assert numeric_metrics(result) == {"loss": 1.0, "val/knn_top1": 0.5}
    assert hparam_value(True) is True and hparam_value(2) == 2 and hparam_value([1, 2]) == "[1, 2]"


def test_one_line_follows_the_chain() -> None:
    try:
        try:
            raise ValueError("the real reason\nand more")
        except ValueError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as err:
        assert one_line(err) == "ValueError: the real reason"
    assert issubclass(TrialFailed, RuntimeError)


# -- Ray session ownership --------------------------------------------------------------------
class FakeRay:
    def __init__(self, up: bool):
        self.up, self.inits, self.shutdowns = up, [], 0

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs):
        self.inits.append(kwargs)
        self.up = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.up = False


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    def install(up: bool) -> FakeRay:
        fake = FakeRay(up)
        monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        monkeypatch.setattr(ray_session, "secure_token_file", lambda: None)
        return fake

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return install


def test_a_session_shuts_down_the_ray_it_started(fake_ray) -> None:
    fake = fake_ray(up=False)
    with RaySession(None, num_cpus=2) as session:
        session.ensure()
        session.ensure()  # connected already: no second start
        assert session.owned
    assert len(fake.inits) == 1 and fake.shutdowns == 1


def test_a_session_leaves_a_callers_ray_running(fake_ray) -> None:
    fake = fake_ray(up=True)
    with RaySession("ray://head:10001") as session:
        session.ensure()
        assert not session.owned
    assert fake.inits == [] and fake.shutdowns == 0


def test_a_session_that_never_needed_ray_starts_nothing(fake_ray) -> None:
    fake = fake_ray(up=False)
    with RaySession(None):
        pass
    assert fake.inits == [] and fake.shutdowns == 0


def test_a_session_shuts_down_on_an_exception(fake_ray) -> None:
    fake = fake_ray(up=False)
    with pytest.raises(KeyboardInterrupt), RaySession(None) as session:
        session.ensure()
        raise KeyboardInterrupt
    assert fake.shutdowns == 1 and not fake.up


def test_nested_sessions_leave_ray_to_the_outer_one(fake_ray) -> None:
    fake = fake_ray(up=False)
    with RaySession(None) as outer:
        outer.ensure()
        with RaySession(None) as inner:  # a study run inside an ablation
            inner.ensure()
        assert fake.shutdowns == 0 and fake.up
    assert fake.shutdowns == 1


def test_joins_cluster(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not RaySession(None).joins_cluster
    assert RaySession("auto").joins_cluster
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert RaySession(None).joins_cluster


def test_init_ray_keeps_the_dashboard_local_and_joins_clusters(monkeypatch) -> None:
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert init_ray(None, num_cpus=2) is True
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # as inside `ray job submit`
    init_ray(None)
    init_ray("10.0.0.2:6379")
    with pytest.raises(ConfigError, match="ray job submit"):  # Ray Client: refused, Ray not called
        init_ray("ray://head:10001")
    local, in_job, joined = calls
    # A new instance even if another cluster on this host left its address in /tmp/ray.
    assert local["address"] == "local" and local["num_cpus"] == 2
    assert local["include_dashboard"] and local["dashboard_host"] == "127.0.0.1"
    assert in_job == {"address": "10.0.0.1:6379"} and joined == {"address": "10.0.0.2:6379"}
    assert os.environ.get("RAY_AUTH_MODE") != "disabled"
