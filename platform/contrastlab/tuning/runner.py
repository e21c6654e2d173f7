"""Running a study: Ray Tune (OptunaSearch + ASHA) over its trials, fresh or resumed.

Output folder layout:
    study_spec.yaml     the resolved spec of the first run (a resume must match it)
    study.db            the Optuna study (SQLite, unless a database URL was given)
    trials/<trial id>/  each trial's run folder (manifest, engine TensorBoard, checkpoints)
    tensorboard/        one run per trial and the hparams table of the study
    logs/ray.log        Ray's own output: its workers' lines, Tune's driver messages
    ray/                Tune's experiment and the Train runs (unless --storage moves them)
    trials.csv, importances.json, best_config.yaml
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import FIFOScheduler

from contrastlab.config import ConfigError
from contrastlab.raytrain.ray_logs import verbose
from contrastlab.raytrain.session import RaySession
from contrastlab.study.checkpoints import tune_checkpoint_config
from contrastlab.study.pacing import PacedSearcher
from contrastlab.study.resources import ClusterPace
from contrastlab.study.trial import trial_resources, uses_fast_path
from contrastlab.tuning.callbacks import StudyCallback, TrialConsole, write_experiment_summary
from contrastlab.tuning.grow import GROWN, experiment_name, grow
from contrastlab.tuning.multisearch import multi_searcher
from contrastlab.tuning.objectives import name_objectives, study_directions
from contrastlab.tuning.pareto import write_pareto_outputs
from contrastlab.tuning.preflight import check_study_cluster
from contrastlab.tuning.report import write_outputs
from contrastlab.tuning.retention import CheckpointRetention
from contrastlab.tuning.sampler import make_sampler
from contrastlab.tuning.scheduler import StudyASHA
from contrastlab.tuning.spec import StudySpec, diff_specs
from contrastlab.tuning.study import (
    StudySearcher,
    default_storage_url,
    end_orphans,
    existing_study,
    open_storage,
    redact,
)
from contrastlab.tuning.tensorboard import log_study_figures
from contrastlab.tuning.trial import run_trial, trial_context

log = logging.getLogger("contrastlab")
SPEC_FILE = "study_spec.yaml"
EXPERIMENT_NAME = "tune"


class StudyError(ValueError):
    """The output folder or the database does not allow what was asked (exit code 2)."""


@dataclass
class StudyPaths:
    output: Path
    ray_storage: str
    experiment_name: str = EXPERIMENT_NAME  # another after the study grew (tuning.grow)

    @property
    def spec_file(self) -> Path:
        return self.output / SPEC_FILE

    @property
    def experiment(self) -> str:
        return f"{self.ray_storage}/{self.experiment_name}"

    @property
    def train_storage(self) -> str:
        return f"{self.ray_storage}/train"


@dataclass
class StudyOutcome:
    study: optuna.Study
    summary: str
    output: Path


def short_trial_dirname(trial) -> str:
    """Tune's default folder name repeats every parameter; the trial id is enough."""
    return trial.trial_id


# -- output folder and saved spec -------------------------------------------------------------
def saved_spec(paths: StudyPaths) -> dict[str, Any] | None:
    if not paths.spec_file.is_file():
        return None
    return yaml.safe_load(paths.spec_file.read_text())


def spec_record(spec: StudySpec, storage_url: str, paths: StudyPaths) -> dict[str, Any]:
    record = {**spec.resolved(), "study_storage": redact(storage_url), "ray_storage": paths.ray_storage}
    if paths.experiment_name != EXPERIMENT_NAME:
        record[GROWN] = paths.experiment_name
    return record


def check_fresh(spec: StudySpec, paths: StudyPaths, storage: optuna.storages.BaseStorage, url: str) -> None:
    if saved_spec(paths) is not None:
        raise StudyError(
            f"{paths.output}: already holds a study ({SPEC_FILE}); continue it with --resume, "
            "or choose another --output"
        )
    found = existing_study(storage, spec.study_name)
    if found is not None and found.get_trials(deepcopy=False):
        where = found.user_attrs.get("output_dir", "another output folder")
        raise StudyError(
            f"{redact(url)} already holds study {spec.study_name!r} with "
            f"{len(found.get_trials(deepcopy=False))} trials (output {where}); continue it with "
            f"--resume --output {where}, or use another database"
        )


def check_resume(spec: StudySpec, paths: StudyPaths, url: str) -> None:
    saved = saved_spec(paths)
    if saved is None or not Tuner_can_restore(paths.experiment):
        raise StudyError(
            f"{paths.output}: no study to resume here (needs {SPEC_FILE} and the Tune experiment "
            f"in {paths.experiment}); start one without --resume"
        )
    changes = diff_specs(saved, spec_record(spec, url, paths))
    if changes:
        shown = "; ".join(changes[:8]) + (f"; ... ({len(changes) - 8} more)" if len(changes) > 8 else "")
        raise StudyError(
            f"{spec.path}: the spec changed since this study started, so it cannot be resumed "
            f"({shown}); restore the spec or start a new study in another --output"
        )


def Tuner_can_restore(path: str) -> bool:  # noqa: N802 - reads as the Tuner method it wraps
    return tune.Tuner.can_restore(path)


def resume_defaults(spec: StudySpec, output: Path, ray_storage: str | None) -> tuple[StudySpec, str | None]:
    """On --resume, the study's database and Ray's storage default to the saved locations
    (everything else comes from the spec file and the flags, and must match)."""
    saved = saved_spec(StudyPaths(output, "")) or {}
    saved_url = saved.get("study_storage")
    if spec.study_storage is None and saved_url and saved_url != default_storage_url(output):
        if "***" in saved_url:
            raise StudyError(
                f"{output}: the study's database URL holds a password that was not saved; "
                "pass it again with --storage-db or in the CONTRASTLAB_STUDY_STORAGE environment variable"
            )
        spec.study_storage = saved_url
    return spec, ray_storage or saved.get("ray_storage")


# -- Ray Tune pieces ------------------------------------------------------------------------------
def study_pace(spec: StudySpec) -> ClusterPace:
    """Trials alive at once: what the cluster holds now (read again as it runs), at most the
    spec's `max_concurrent_trials`, at least one."""
    return ClusterPace(spec.base, spec.max_concurrent_trials)


def make_scheduler(spec: StudySpec, storage: optuna.storages.BaseStorage):
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    # The time axis is the engine's own epoch count, which survives trial relaunches.
    return StudyASHA(
        spec.study_name,
        storage,
        metric=spec.metric,
        mode=spec.mode,
        max_t=spec.max_t,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def make_searcher(spec: StudySpec, storage: optuna.storages.BaseStorage) -> StudySearcher:
    if spec.objectives:
        return multi_searcher(spec, storage, spec.points_to_evaluate + spec.warm_start)
    return StudySearcher(
        spec.space,
        spec.metric,
        spec.mode,
        spec.study_name,
        storage,
        make_sampler(spec.sampler, spec.space),
        base_epochs=spec.base.optim.epochs,
        max_t=spec.max_t,
        points_to_evaluate=spec.points_to_evaluate + spec.warm_start,
    )


def trainable(spec: StudySpec, paths: StudyPaths):
    context = trial_context(spec.base, paths.output / "trials", paths.train_storage)
    # One-worker trials hold their run's CPUs and GPU share; Train-path trials only a driver's.
    return tune.with_resources(tune.with_parameters(run_trial, context=context), trial_resources(spec.base))


def checkpoint_retention(spec: StudySpec, paths: StudyPaths, storage) -> CheckpointRetention:
    trials = paths.output / "trials"
    return CheckpointRetention(
        trials, paths.train_storage, spec.study_name, storage, spec.mode, spec.keep_checkpoints, paths.experiment
    )


def build_tuner(spec: StudySpec, paths: StudyPaths, storage: optuna.storages.BaseStorage) -> tune.Tuner:
    pace = study_pace(spec)
    log.info(
        "study %s: %d trials, %d at once on the cluster as it is now", spec.study_name, spec.num_samples, pace.allowed()
    )
    callback = StudyCallback(paths.output / "tensorboard", spec.metric, spec.base.optim.epochs, spec.max_t, spec.space)
    retention = checkpoint_retention(spec, paths, storage)
    console = TrialConsole(
        spec.study_name, paths.output, spec.metric, spec.mode, spec.num_samples, spec.base.optim.epochs, spec.max_t
    )
    return tune.Tuner(
        trainable(spec, paths),
        tune_config=tune.TuneConfig(
            search_alg=PacedSearcher(make_searcher(spec, storage), pace),
            scheduler=make_scheduler(spec, storage),
            num_samples=spec.num_samples,
            # A reused fast-path actor keeps its loaded dataset (contrastlab.study.fast).
            reuse_actors=uses_fast_path(spec.base),
            trial_dirname_creator=short_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=paths.experiment_name,
            storage_path=paths.ray_storage,
            callbacks=[callback, retention, console, CSVLoggerCallback(), JsonLoggerCallback()],
            # Fast-path trials: Tune keeps one copy each, and saves its state at each new one.
            checkpoint_config=tune_checkpoint_config(),
            # Lost actors and nodes are relaunched; the run's own errors are not (study.trial).
            failure_config=tune.FailureConfig(max_failures=spec.base.resources.trial_retries),
            verbose=1 if verbose() else 0,  # the study's console shows the trials (study.console)
        ),
    )


def restore_tuner(spec: StudySpec, paths: StudyPaths) -> tune.Tuner:
    # Unfinished trials continue (their Train runs resume from checkpoints); failed ones keep
    # their FAIL record: re-running them would need a second Optuna trial for one Tune trial.
    return tune.Tuner.restore(
        paths.experiment,
        trainable=trainable(spec, paths),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
    )


# -- the whole run -----------------------------------------------------------------------------------
def prepare_study(spec: StudySpec, paths: StudyPaths, resume: bool) -> tuple[optuna.storages.BaseStorage, str]:
    """Check the folder and database, create the study (fresh run); nothing runs on Ray yet."""
    url = spec.study_storage or default_storage_url(paths.output)
    paths.output.mkdir(parents=True, exist_ok=True)
    try:
        storage = open_storage(url)
    except Exception as err:
        raise ConfigError(
            str(spec.path), "study_storage", f"a database Optuna can open ({redact(url)}: {type(err).__name__}: {err})"
        ) from None
    if resume:
        check_resume(spec, paths, url)
        if existing_study(storage, spec.study_name) is None:
            raise StudyError(f"{redact(url)} has no study {spec.study_name!r} to resume")
        return storage, url
    check_fresh(spec, paths, storage, url)
    study = optuna.create_study(
        storage=storage,
        study_name=spec.study_name,
        load_if_exists=True,
        **study_directions(spec.objectives, spec.mode),
    )
    for key, value in {
        "output_dir": str(paths.output.resolve()),
        "spec_file": str(spec.path.resolve()),
        "metric": spec.metric,
        "ray_experiment": paths.experiment,
    }.items():
        study.set_user_attr(key, value)
    name_objectives(study, spec.metrics)  # the objectives' names in the report and optuna-dashboard
    paths.spec_file.write_text(yaml.safe_dump(spec_record(spec, url, paths), sort_keys=False))
    write_experiment_summary(paths.output / "tensorboard", spec.space, spec.metric)
    return storage, url


def run_study(
    spec: StudySpec,
    output: str | Path,
    address: str | None = None,
    ray_storage: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    grow_to: int | None = None,
) -> StudyOutcome:
    """Run (or resume) the study of `spec` into `output` and write its reports."""
    output = Path(output).resolve()
    paths = StudyPaths(output, ray_storage or str(output / "ray"), experiment_name(output, EXPERIMENT_NAME))
    # Tune's own TensorBoard logger would write the whole base config as hparams of every
    # trial; the study writes its own table (callbacks.py). CSV/JSON loggers are passed
    # explicitly in `build_tuner`.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # A metric computed only after the last epoch (linear_top1, probe_*) or every N epochs
    # is missing from some results. The searcher skips those epochs and ASHA is refused such
    # metrics by the spec check, so Tune's strict check would only stop a valid FIFO study.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    with RaySession(address, num_cpus, log_dir=output / "logs") as session:
        session.ensure()
        # Before the study exists: a study that cannot run is refused before any trial.
        check_study_cluster(spec, paths.ray_storage, session.joins_cluster)
        storage, url = prepare_study(spec, paths, resume)
        tuner = restore_tuner(spec, paths) if resume else build_tuner(spec, paths, storage)
        grid = tuner.fit()
        # Trial folders are named by the trial id; an orphan no trial resumed is not left RUNNING.
        end_orphans(storage, spec.study_name, {Path(result.path).name for result in grid})
        if grow_to is not None:  # --resume --samples N: more trials in the same study
            paths = grow(spec, paths, storage, grow_to, build_tuner)
    checkpoint_retention(spec, paths, storage).sweep_study()  # the spec's rule, also on a resume
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    if spec.objectives:
        summary = write_pareto_outputs(study, spec.base, output, redact(url), spec.metrics, spec.modes)
        log_study_figures(output)
        return StudyOutcome(study, summary, output)
    anchors = study_anchors(spec, output)
    summary = write_outputs(study, spec.base, output, redact(url), spec.metric, spec.mode, anchors)
    log_study_figures(output)  # the report's figures, in TensorBoard's Images dashboard
    return StudyOutcome(study, summary, output)


def study_anchors(spec: StudySpec, output: Path) -> dict[str, Any]:
    """Raw pixels and the untrained encoder of the base experiment at the trials' seed, on the
    same val and test splits (anchors.json)."""
    from contrastlab.engine.anchors import ANCHORS_FILE, cached_anchors

    return cached_anchors(spec.base, [spec.base.seed], output / ANCHORS_FILE)


__all__ = ["StudyError", "StudyOutcome", "StudyPaths", "run_study", "study_pace"]
