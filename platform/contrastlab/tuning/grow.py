"""Growing a study: `contrastlab tune SPEC --resume --samples N` continues it to N trials in all.

Tune fixes an experiment's number of samples when it starts, so a study grows by a new Tune
experiment (`tune-grow1`, `tune-grow2`, ...) on the same Optuna study: the sampler sees
every trial already told, the trial folders and TensorBoard runs sit beside the first
ones. The first experiment is resumed before (its unfinished trials finish first). The
saved spec records the study's new total and the experiment a later `--resume` restores;
N below the trials already run, or below the study's total, is refused before anything
changes.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml

from contrastlab.errors import InputError
from contrastlab.tuning.spec import StudySpec
from contrastlab.tuning.study import default_storage_url, existing_study, open_storage

log = logging.getLogger("contrastlab")
OPTION = "--samples"
GROWN = "experiment_name"  # key of the saved spec: the Tune experiment of the latest growth
SPEC_FILE = "study_spec.yaml"


def saved_record(output: Path) -> dict[str, Any]:
    path = Path(output) / SPEC_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def experiment_name(output: Path, default: str) -> str:
    """The Tune experiment a resume restores: the latest growth's, else the first one."""
    return saved_record(output).get(GROWN, default)


def trials_run(spec: StudySpec, output: Path) -> int:
    """Trials the study's database holds (every state: a failed trial was run too)."""
    url = spec.study_storage or default_storage_url(output)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return 0
    study = existing_study(open_storage(url), spec.study_name)
    return 0 if study is None else len(study.get_trials(deepcopy=False))


def growth_target(spec: StudySpec, output: Path, samples: int | None) -> int | None:
    """On --resume: the total the study grows to (None: a plain resume). Sets the spec's
    `num_samples` to the saved total, so that the resume compares the spec as it started."""
    saved = saved_record(output)
    total = saved.get("num_samples")
    if not isinstance(total, int):
        return None
    if samples is None:
        if GROWN in saved:  # grown before: the spec file still names the first total
            spec.num_samples = total
        return None
    done = trials_run(spec, output)
    if samples < done:
        raise InputError(
            f"{output}: {OPTION}: at least the {done} trials this study already ran (got {samples}); "
            "nothing was changed"
        )
    if samples < total:
        raise InputError(
            f"{output}: {OPTION}: at least the study's num_samples {total} (got {samples}): a study grows, "
            "it does not shrink; nothing was changed"
        )
    spec.num_samples = total
    return samples if samples > total else None


def grow(
    spec: StudySpec,
    paths,
    storage: optuna.storages.BaseStorage,
    target: int,
    build_tuner: Callable[..., Any],
):
    """Run the trials that take the study to `target` in a new Tune experiment; returns its paths."""
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    remaining = target - len(study.get_trials(deepcopy=False))
    record = saved_record(paths.output)
    record["num_samples"] = target
    if remaining <= 0:
        paths.spec_file.write_text(yaml.safe_dump(record, sort_keys=False))
        return paths
    previous = record.get(GROWN, "")
    index = int(previous.rpartition("grow")[2]) + 1 if "grow" in previous else 1
    grown = dataclasses.replace(paths, experiment_name=f"{paths.experiment_name.split('-grow')[0]}-grow{index}")
    record[GROWN] = grown.experiment_name
    # Saved first: an interrupted growth resumes this experiment with --resume.
    paths.spec_file.write_text(yaml.safe_dump(record, sort_keys=False))
    log.info("study %s grows to %d trials: %d more in %s", spec.study_name, target, remaining, grown.experiment)
    more = dataclasses.replace(spec, num_samples=remaining, points_to_evaluate=[], warm_start=[])
    build_tuner(more, grown, storage).fit()
    return grown


__all__ = ["experiment_name", "grow", "growth_target", "saved_record", "trials_run"]
