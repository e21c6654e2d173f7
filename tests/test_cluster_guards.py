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
    check_address(address, "train")


def test_ray_address_variable_with_a_client_address_is_refused_before_ray_starts(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(ConfigError, match="RAY_ADDRESS"):
        init_ray(None)
    assert not ray.is_initialized()
