"""Running the per-variant searches of a retuned ablation with the tuning package.

Each search is a complete tuning study (`contrastlab.tuning.run_study`: OptunaSearch over
Ray Train trials, FIFO, its study in `retune/<variant>-<key>/study.db`, its trials in
TensorBoard), keyed like a run by what it measures and the code version: a search that
finished before is not repeated, an interrupted one is resumed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from contrastlab.ablation.cache import RunCache
from contrastlab.ablation.spec import AblationSpec
from contrastlab.ablation.variants import Variant
from contrastlab.config import ExperimentConfig
from contrastlab.raytrain.session import RaySession
from contrastlab.study.values import safe_name
from contrastlab.tuning.space import SearchSpace

log = logging.getLogger("contrastlab")


def study_spec(spec: AblationSpec, variant: Variant, config: ExperimentConfig, space: SearchSpace):
    from contrastlab.tuning.spec import SamplerSpec, SchedulerSpec, StudySpec

    retune = spec.retune
    # FIFO: a handful of trials per variant, each trained to the end (no early stopping), so
    # the objective may be a final-only metric such as linear_top1.
    return StudySpec(
        path=spec.path,
        name=safe_name(f"{spec.name}-{variant.name}"),
        base=config,
        metric=retune.metric,
        mode=retune.mode,
        space=space,
        num_samples=retune.samples,
        scheduler=SchedulerSpec(type="fifo"),
        sampler=SamplerSpec(**retune.sampler),
        max_concurrent_trials=spec.max_concurrent,
        study_storage=None,
        points_to_evaluate=[],
    )


def run_search(
    spec: AblationSpec,
    variant: Variant,
    config: ExperimentConfig,
    space: SearchSpace,
    folder: Path,
    address: str | None,
) -> tuple[dict[str, Any] | None, float | None]:
    """The best trial's parameters and value, or (None, None) when no trial completed."""
    from ray import tune

    from contrastlab.tuning.report import best_trial
    from contrastlab.tuning.runner import SPEC_FILE, StudyPaths, run_study
    from contrastlab.tuning.study import OVERRIDES

    experiment = StudyPaths(folder, str(folder / "ray")).experiment
    resume = (folder / SPEC_FILE).is_file() and tune.Tuner.can_restore(experiment)
    if folder.exists() and not resume:
        target = folder.parent.parent / "superseded" / time.strftime("%Y%m%d-%H%M%S") / "retune" / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)
    log.info(
        "retune %s: %d trials over %s%s",
        variant.name,
        spec.retune.samples,
        ", ".join(space.paths),
        " (resumed)" if resume else "",
    )
    outcome = run_study(study_spec(spec, variant, config, space), folder, address=address, resume=resume)
    best = best_trial(outcome.study)
    if best is None:
        return None, None
    return dict(best.user_attrs.get(OVERRIDES) or {}), best.value


def tuned_parameters(
    spec: AblationSpec, output: Path, code: str, cache: RunCache, session: RaySession
) -> dict[str, Any]:
    """Each variant's retuned values ({} when it has nothing to tune, None when its search failed)."""
    retune = spec.retune
    tuned: dict[str, Any] = {}
    for variant in spec.variants:
        space = retune.spaces.get(variant.name)
        if space is None:
            tuned[variant.name] = {}
            continue
        config = retune.search_config(spec.run_config(variant, retune.seed))
        key = retune.search_key(config, space)
        hit = cache.search(key, code)
        if hit is not None:
            log.info("retune %s: reusing the earlier search (%s)", variant.name, hit.get("params"))
            tuned[variant.name] = dict(hit["params"])
            continue
        session.ensure()
        folder = output / "retune" / f"{safe_name(variant.name)}-{key[:8]}"
        params, value = run_search(spec, variant, config, space, folder, session.address)
        tuned[variant.name] = params
        if params is not None:
            cache.put_search(
                key, code, {"variant": variant.name, "params": params, "value": value, "study": str(folder)}
            )
            log.info("retune %s: best %s = %.4f at %s", variant.name, retune.metric, value, params)
        else:
            log.warning("retune %s: no trial completed; its runs are recorded as failed", variant.name)
    return tuned


__all__ = ["run_search", "study_spec", "tuned_parameters"]
