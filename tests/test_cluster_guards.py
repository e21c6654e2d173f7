"""Guards of a study against the cluster it runs on (no Ray started here): Ray Client
addresses, worker requests no node can hold, and secrets kept out of pickled state."""

from __future__ import annotations

import pytest

from contrastlab.errors import ConfigError
from contrastlab.raytrain.session import check_address, init_ray


@pytest.mark.parametrize("address", ["ray://head:10001", " RAY://head:10001"])
def test_a_ray_client_address_is_refused_naming_ray_job_submit(address):
    with pytest.raises(ConfigError) as caught:
        check_address(address, "tune")
    line = str(caught.value)
    assert "--address" in line and "ray job submit" in line and "contrastlab tune ... --address auto" in line
    assert len(line.splitlines()) == 1


@pytest.mark.parametrize("address", [None, "", "auto", "10.0.0.1:6379", "local"])
def test_addresses_ray_joins_directly_pass(address):
    assert check_address(address, "train") is None  # returns, where a client address raises
    with pytest.raises(ConfigError):
        check_address(f"ray://{address or 'head'}:10001", "train")


def test_ray_address_variable_with_a_client_address_is_refused_before_ray_starts(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(ConfigError, match="RAY_ADDRESS"):
        init_ray(None)
    assert not ray.is_initialized()


# -- a worker no node can hold --------------------------------------------------------------------
def gpu_worker_cfg(cpus: float = 4, gpus: float = 1):
    from tests.helpers import tiny_config

    return tiny_config(resources={"device": "auto", "workers": 2, "cpus_per_worker": cpus, "gpus_per_worker": gpus})


NODES = [{"CPU": 8.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 4.0}]


def test_a_worker_must_fit_one_node_not_the_sum_of_nodes():
    from contrastlab.raytrain.cluster import node_fit_problem

    # 10 CPUs and 4 GPUs in all, but no node has 4 CPUs and a GPU together.
    problem = node_fit_problem(gpu_worker_cfg(cpus=4, gpus=1), NODES, "of this cluster")
    assert problem is not None
    assert "asks 4 CPUs and 1 GPUs" in problem and "largest node has 8 CPUs, 4 GPUs" in problem
    assert node_fit_problem(gpu_worker_cfg(cpus=2, gpus=1), NODES, "of this cluster") is None
    assert node_fit_problem(gpu_worker_cfg(cpus=8, gpus=0.0), NODES, "of this cluster") is None


@pytest.fixture
def two_nodes(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": n} for n in NODES] + [{"Alive": False}])


def test_node_fit_on_a_fixed_cluster_is_refused(two_nodes):
    from contrastlab.raytrain.cluster import check_node_fit

    with pytest.raises(ConfigError, match="a worker that fits one node of this cluster"):
        check_node_fit(gpu_worker_cfg(), strict=True)
    check_node_fit(gpu_worker_cfg(cpus=2), strict=True)


def test_an_autoscaling_cluster_is_judged_by_its_largest_node_types(two_nodes, caplog):
    from contrastlab.raytrain.cluster import check_node_fit

    # Node types the autoscaler may start: refused when none holds a worker ...
    with pytest.raises(ConfigError, match="type the autoscaler can start"):
        check_node_fit(gpu_worker_cfg(), strict=False, node_types=[{"CPU": 16.0}, {"CPU": 2.0, "GPU": 8.0}])
    # ... a warning when one does, and a warning when the cluster says nothing about its types.
    with caplog.at_level("WARNING", logger="contrastlab"):
        check_node_fit(gpu_worker_cfg(), strict=False, node_types=[{"CPU": 8.0, "GPU": 1.0}])
        check_node_fit(gpu_worker_cfg(), strict=False, node_types=None)
    assert len([r for r in caplog.records if "no node holds one worker yet" in r.getMessage()]) == 2


@pytest.mark.ray
def test_tune_refuses_a_trial_larger_than_its_local_ray_before_anything_exists(tmp_path, capsys, ray_lock):
    """A local instance cannot grow: the study is refused once, before the Optuna study,
    study_spec.yaml or any trial exists (measured: 8 s on two shared cores, one Ray start)."""
    import yaml

    from contrastlab.cli import main
    from tests.helpers import tiny_config_dict

    spec = {
        "name": "toolarge",
        "base": tiny_config_dict(),
        "metric": "loss",
        "mode": "min",
        "num_samples": 2,
        "space": {"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
        "resources": {"workers": 1, "cpus_per_worker": 2},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    output = tmp_path / "out"
    code = main(["tune", str(spec_file), "--output", str(output), "--num-cpus", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "spec.yaml: resources:" in lines[0] and "CPU: 2 needed, 1 in the cluster" in lines[0]
    assert not output.exists()  # no study.db, no study_spec.yaml, no ray/, no trials/
