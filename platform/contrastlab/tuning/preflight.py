"""Checks of a study against its resources, data and cluster, before anything is written.

A study that cannot run fails once, in one line that names the spec file and the field,
before the Optuna study, `study_spec.yaml` or any trial exists; the same checks as `train`
and `ablate` run, applied to the base experiment and to every resource or batch size the
space can sample. `check_study_request` needs no Ray; `check_study_cluster` runs once Ray
is connected.
"""

from __future__ import annotations

from collections.abc import Iterator

from contrastlab.config import ExperimentConfig
from contrastlab.study.preflight import check_cluster_fit, named
from contrastlab.tuning.spec import StudySpec

# Sampled fields that change what a trial asks of the cluster or of the data.
REQUEST_FIELDS = ("resources.", "optim.batch_size", "data.")


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
    that other hosts cannot see (`contrastlab.study.preflight.check_cluster_fit`)."""
    check_cluster_fit(str(spec.path), requests(spec), ray_storage, joins_cluster)


__all__ = ["check_study_cluster", "check_study_request", "requests"]
