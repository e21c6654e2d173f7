"""`ablate` refuses runs that can never fit the cluster once, before any run, as `tune` does."""

from __future__ import annotations

import pytest
import yaml

from contrastlab.cli import main
from contrastlab.study.preflight import distinct_requests
from tests.helpers import tiny_config, tiny_config_dict


def test_each_distinct_request_is_checked_once_under_its_first_label():
    small, large = tiny_config(), tiny_config(resources={"device": "cpu", "cpus_per_worker": 4})
    other_name = small.with_overrides({"name": "renamed"}, "<test>")
    kept = distinct_requests([("", small), ("variant a: ", other_name), ("variant b: ", large), ("variant c: ", large)])
    assert [prefix for prefix, _ in kept] == ["", "variant b: "]


@pytest.mark.ray
def test_ablate_refuses_a_run_larger_than_its_local_ray_before_any_run(tmp_path, capsys, ray_lock):
    spec = {
        "name": "toolarge",
        "base": tiny_config_dict({"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16}),
        "components": ["synthesis"],
        "design": "leave_one_out",
        "seeds": 1,
        "metrics": ["knn_top1"],
        "resources": {"workers": 1, "cpus_per_worker": 2},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    output = tmp_path / "out"
    code = main(["ablate", str(spec_file), "--output", str(output), "--num-cpus", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "spec.yaml: resources:" in lines[0] and "CPU: 2 needed, 1 in the cluster" in lines[0]
    # No run started and no run folder was prepared: no Tune experiment, no run's marker.
    assert not list(output.glob("ray/grid-*"))
    assert not [p for p in output.glob("runs/*/*/*") if p.is_file()]


@pytest.mark.parametrize(
    ("resources", "cpus", "fits"),
    [
        ({"workers": 2, "cpus_per_worker": 1}, 2.0, False),  # the driver's 0.01 CPU has no room
        ({"workers": 2, "cpus_per_worker": 0.5}, 2.0, True),
        ({"workers": 2, "cpus_per_worker": 1}, 3.0, True),
        ({"workers": 1, "cpus_per_worker": 2, "trial_path": "train"}, 2.0, False),
        ({"workers": 1, "cpus_per_worker": 2}, 2.0, True),  # the fast path has no driver
    ],
)
def test_a_train_path_trial_leaves_room_for_its_driver(resources, cpus, fits):
    from contrastlab.config import ConfigError
    from contrastlab.study.preflight import check_driver_fits, named

    cfg = tiny_config(resources={"device": "cpu", **resources})
    if fits:
        check_driver_fits(cfg, cpus)
        return
    with pytest.raises(ConfigError) as caught, named("spec.yaml", "variant a: "):
        check_driver_fits(cfg, cpus)
    assert caught.value.field == "variant a: resources.cpus_per_worker"
    suggested = float(str(caught.value).rsplit("cpus_per_worker: ", 1)[1])
    res = cfg.resources
    assert res.workers * suggested + 0.01 <= cpus + 1e-9 < res.workers * res.cpus_per_worker + 0.01
