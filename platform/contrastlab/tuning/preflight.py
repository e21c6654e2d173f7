"""Checks of a study against its resources, data and cluster, before anything is written.

A study that cannot run fails once, in one line that names the spec file and the field,
before the Optuna study, `study_spec.yaml` or any trial exists; the same checks as `train`
and `ablate` run, applied to the base experiment and to every resource or batch size the
space can sample. `check_study_request` needs no Ray; `check_study_cluster` runs once Ray
is connected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.tuning.spec import StudySpec

# Sampled fields that change what a trial asks of the cluster or of the data.
REQUEST_FIELDS = ("resources.", "optim.batch_size", "data.")


@contextmanager
def named(source: str, prefix: str = "") -> Iterator[None]:
    """A check that knew no file (Ray's resource checks) names the spec, and the space
    parameter whose value it judged."""
    try:
        yield
    except ConfigError as err:
        field = f"{prefix}{err.field}" if prefix else err.field
        raise ConfigError(source, field, err.expected) from None


def requests(spec: StudySpec) -> Iterator[tuple[str, ExperimentConfig]]:
    """The base experiment, then the base with each extreme value of every sampled field
    that changes resources, data or the batch (with the field's name for the message)."""
    yield "", spec.base
    for param in spec.space.parameters:
        if param.kind == "list" or not param.path.startswith(REQUEST_FIELDS):
            continue
        for value in param.extreme_values():
            cfg = spec.base.with_overrides({param.path: value}, str(spec.path))
            yield f"space.{param.path}={value!r}: ", cfg


def check_study_request(spec: StudySpec) -> None:
    """What no cluster can fix: the distributed settings, a batch larger than the train part."""
    from contrastlab.data.registry import known_train_part
    from contrastlab.engine.preflight import check_batch_fits
    from contrastlab.raytrain.cluster import check_distributed_config

    source = str(spec.path)
    for prefix, cfg in requests(spec):
        with named(source, prefix):
            check_distributed_config(cfg)
            images = known_train_part(cfg.data)
            if images is not None:
                check_batch_fits(cfg, images, source)


def check_study_cluster(spec: StudySpec, ray_storage: str, joins_cluster: bool) -> None:
    """Against the connected cluster: resources a trial can never get (on a local instance,
    or beyond every node type an autoscaler may start), GPUs that are not there, and storage
    that other hosts cannot see."""
    from contrastlab.raytrain.cluster import check_cluster_resources, check_node_fit, check_shared_storage
    from contrastlab.study.internals import autoscaler_node_types

    source = str(spec.path)
    node_types = autoscaler_node_types() if joins_cluster else None
    for prefix, cfg in requests(spec):
        with named(source, prefix):
            check_cluster_resources(cfg, strict=not joins_cluster)
            check_node_fit(cfg, strict=not joins_cluster, node_types=node_types)
    with named(source):
        check_shared_storage(ray_storage)


__all__ = ["check_study_cluster", "check_study_request", "requests"]
