"""Running an ablation: variants × seeds as Ray Train runs through one Ray Tune grid.

Output folder layout:
    ablation.yaml            the resolved spec and the code version of the last invocation
    cache.json               (config hash, code version) -> final metrics and curves of each run
    results.json             one result per (variant, seed): what the report is made from
    anchors.json             raw pixels and the untrained encoder on the same val and test splits
    runs/<variant>/seed<k>/  each run's folder: manifest, config, tensorboard/, checkpoints/
    runs/                    also the ablation's TensorBoard files (`tensorboard --logdir OUTPUT/runs`)
    retune/<variant>-<key>/  each variant's own study (with `retune:`)
    ray/                     Tune experiments and the Train runs' checkpoints (unless --storage)
    superseded/<time>/       run folders moved aside, never deleted (changed config or code, restarts)
    report/                  report.md, report.html, summary.csv, runs.csv, plots
    logs/ray.log             Ray's own output (its workers' lines, Tune's driver messages)

The grid has one Tune trial per (variant, seed) that still needs computing, no searcher and
no scheduler; the seed sets the data order and the initialisation, so variants are paired.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contrastlab.ablation.cache import CACHE_FILE, RunCache, code_version
from contrastlab.ablation.report import load_results, report_from_run_dir, save_results
from contrastlab.ablation.spec import AblationSpec
from contrastlab.ablation.tensorboard import label_runs, write_ablation_tensorboard
from contrastlab.ablation.variants import Variant
from contrastlab.config import ConfigError, ExperimentConfig, config_hash
from contrastlab.engine.anchors import ANCHORS, ANCHORS_FILE, cached_anchors
from contrastlab.engine.runfolder import claim_run_folder
from contrastlab.raytrain.session import RaySession
from contrastlab.study.preflight import check_cluster_fit, distinct_requests
from contrastlab.study.resources import ClusterPace
from contrastlab.study.trial import trial_resources, uses_fast_path
from contrastlab.study.values import safe_name

log = logging.getLogger("contrastlab")
MARKER_FILE = "ablation_run.json"
SPEC_RECORD = "ablation.yaml"
FIXED_NOTE = "fixed hyperparameters: every variant runs at the base experiment's values (no per-variant tuning)"


class AblationError(ValueError):
    """The output folder does not allow what was asked (exit code 2)."""


@dataclass
class PlannedRun:
    variant: Variant
    seed: int
    config: ExperimentConfig
    run_dir: Path
    params: dict[str, Any] = field(default_factory=dict)
    cached: dict[str, Any] | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return config_hash(self.config)

    @property
    def run_id(self) -> str:
        return f"{self.variant.name}/seed{self.seed}"

    @property
    def overrides(self) -> dict[str, Any]:
        return {**self.variant.overrides, **self.params}

    def hparams(self) -> dict[str, Any]:
        values: dict[str, Any] = {"variant": self.variant.name, "seed": self.seed}
        values.update({f"component/{name}": value for name, value in self.variant.settings.items()})
        values.update({f"tuned/{path}": value for path, value in self.params.items()})
        return values


@dataclass
class AblationOutcome:
    output: Path
    results: list[dict[str, Any]]
    report: dict[str, Path]
    reused: int
    computed: int
    failed: int

    def summary(self) -> str:
        return "\n".join(
            [
                f"runs: {len(self.results)} ({self.reused} reused, {self.computed} computed, {self.failed} failed)",
                f"report: {self.output / 'report' / 'report.md'} (also report.html, summary.csv, runs.csv)",
                f"tensorboard --logdir {self.output / 'runs'}",
            ]
        )


# -- planning (no Ray) -------------------------------------------------------------------------
def plan_runs(
    spec: AblationSpec, output: Path, code: str, cache: RunCache, tuned: dict[str, dict[str, Any] | None] | None = None
) -> list[PlannedRun]:
    """Every (variant, seed) run, with its cache entry when it was computed before by this code.

    `tuned[variant]` holds the variant's retuned values; None marks a variant whose search
    found nothing, whose runs are then recorded as failed without running.
    """
    plan = []
    for variant in spec.variants:
        params = (tuned or {}).get(variant.name, {})
        for seed in spec.seeds:
            run_dir = output / "runs" / safe_name(variant.name) / f"seed{seed}"
            if params is None:
                run = PlannedRun(
                    variant,
                    seed,
                    spec.run_config(variant, seed),
                    run_dir,
                    error="retune: the variant's search had no complete trial",
                )
            else:
                run = PlannedRun(variant, seed, spec.run_config(variant, seed, params), run_dir, dict(params))
                run.cached = cache.run(run.key, code)
            plan.append(run)
    return plan


def check_runs(spec: AblationSpec, plan: list[PlannedRun]) -> None:
    """Resource settings that cannot work on any cluster, before anything starts."""
    from contrastlab.raytrain.cluster import check_distributed_config

    for run in plan:
        try:
            check_distributed_config(run.config)
        except ConfigError as err:
            raise ConfigError(spec.source, f"variant {run.variant.name!r}: {err.field}", err.expected) from None


def cached_result(run: PlannedRun) -> dict[str, Any]:
    entry = run.cached or {}
    return {
        "variant": run.variant.name,
        "seed": run.seed,
        "metrics": dict(entry.get("metrics") or {}),
        "curves": {k: [tuple(p) for p in v] for k, v in (entry.get("curves") or {}).items()},
        "overrides": run.overrides,
        "reused": True,
    }


def failed_result(run: PlannedRun, error: str) -> dict[str, Any]:
    return {
        "variant": run.variant.name,
        "seed": run.seed,
        "metrics": {},
        "curves": {},
        "overrides": run.overrides,
        "reused": False,
        "error": error,
    }


def report_meta(spec: AblationSpec, mode_note: str, anchors: dict[str, Any] | None = None) -> dict[str, Any]:
    """write_report's settings, saved in results.json so `contrastlab report` remakes the same report."""
    meta = {
        "reference": spec.reference,
        "metrics": list(spec.metrics),
        "design": spec.design,
        "title": spec.title,
        "mode_note": mode_note,
        "component_of": spec.component_of(),
        "seeds": list(spec.seeds),
        "levels": {v.name: dict(v.settings) for v in spec.variants},
        **spec.report,
    }
    if anchors is not None:
        meta["anchors"] = {name: dict(anchors[name]) for name in ANCHORS if name in anchors}
    return meta


def ablation_anchors(spec: AblationSpec, output: Path) -> dict[str, Any]:
    """Raw pixels and the untrained encoder of the reference variant, averaged over the
    study's seeds, on the same val and test splits (anchors.json)."""
    return cached_anchors(spec.variant(spec.reference).config, spec.seeds, output / ANCHORS_FILE)


# -- run folders --------------------------------------------------------------------------------
def read_marker(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / MARKER_FILE
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None


def prepare_folder(run: PlannedRun, code: str, resume: bool, superseded: Path) -> str:
    """The Train run name of `run`: the previous one when resuming the same run, else a new one
    (a folder from another config, code or attempt is moved aside, not deleted)."""
    marker = read_marker(run.run_dir)
    same = marker is not None and marker.get("config_hash") == run.key and marker.get("code_version") == code
    if same and resume:
        log.info("%s: continuing from its last checkpoint", run.run_id)
        return str(marker["train_name"])
    if run.run_dir.exists() and any(run.run_dir.iterdir()):
        target = superseded / safe_name(run.variant.name) / f"seed{run.seed}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run.run_dir, target)
        why = "an unfinished attempt (restarted; --resume continues instead)" if same else "another config or code"
        log.info("%s: moved the old folder (%s) to %s", run.run_id, why, target)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    name = f"{safe_name(run.variant.name)}-seed{run.seed}-{run.key[:8]}-{uuid.uuid4().hex[:6]}"
    marker = {
        "variant": run.variant.name,
        "seed": run.seed,
        "config_hash": run.key,
        "code_version": code,
        "train_name": name,
    }
    (run.run_dir / MARKER_FILE).write_text(yaml.safe_dump(marker, sort_keys=False))
    return name


def descriptor(run: PlannedRun, train_name: str, train_storage: str) -> dict[str, Any]:
    """What the trial driver needs for one run (plain data, shipped through Ray's object store)."""
    from contrastlab.raytrain.trainer import forwarded_environment

    return {
        "config": run.config.to_dict(),
        "run_dir": str(run.run_dir.resolve()),
        "train_name": train_name,
        "storage": train_storage,
        "env": forwarded_environment(),
        "variant": run.variant.name,
        "seed": run.seed,
        "key": run.key,
        "epochs": run.config.optim.epochs,
        "overrides": run.overrides,
        "hparams": run.hparams(),
    }


# -- Ray --------------------------------------------------------------------------------------------
def concurrency(spec: AblationSpec) -> ClusterPace:
    """Runs at once: what the cluster holds now of the full experiment's resources (read again
    as the grid runs), at most the spec's `max_concurrent`, at least one."""
    return ClusterPace(spec.full, spec.max_concurrent)


def run_grid(
    spec: AblationSpec,
    pending: list[PlannedRun],
    runs: dict[str, dict[str, Any]],
    results: list[dict[str, Any]],
    output: Path,
    ray_storage: str,
    meta: dict[str, Any],
    code: str,
) -> None:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from contrastlab.ablation.console import RunConsole
    from contrastlab.ablation.retention import RunCheckpointRetention
    from contrastlab.ablation.trial import RUN_KEY, RunRecorder, run_ablation_trial, trial_dirname, trial_name
    from contrastlab.study.checkpoints import tune_checkpoint_config
    from contrastlab.study.pacing import PacedGrid

    # The runs write their own TensorBoard; CSV and JSON stay (Tune's result grid reads them).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    pace = concurrency(spec)
    log.info("running %d runs, %d at once on the cluster as it is now", len(pending), pace.allowed())
    total = len(spec.variants) * len(spec.seeds)
    recorder = RunRecorder(runs, results, str(output / CACHE_FILE), str(output), meta, code, total=total)
    callbacks = [recorder, RunCheckpointRetention(runs, RUN_KEY), RunConsole(spec, runs, output)]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_ablation_trial, runs=runs), trial_resources(spec.full)),
        param_space={RUN_KEY: tune.grid_search([run.run_id for run in pending])},
        tune_config=tune.TuneConfig(
            search_alg=PacedGrid(pace),
            num_samples=1,
            reuse_actors=uses_fast_path(spec.full),  # a reused actor keeps its dataset (study.fast)
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=ray_storage,
            callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()],
            checkpoint_config=tune_checkpoint_config(),  # fast-path runs: Tune keeps one copy each
            # Lost actors and nodes are relaunched; the run's own errors are not (study.trial).
            failure_config=tune.FailureConfig(max_failures=spec.full.resources.trial_retries),
            verbose=0,
        ),
    )
    tuner.fit()


# -- the whole study -------------------------------------------------------------------------------
def _order(results: list[dict[str, Any]], plan: list[PlannedRun]) -> list[dict[str, Any]]:
    position = {(run.variant.name, run.seed): index for index, run in enumerate(plan)}
    return sorted(results, key=lambda r: position.get((r["variant"], r["seed"]), len(position)))


def _write_record(spec: AblationSpec, output: Path, code: str, mode_note: str) -> None:
    record = {**spec.resolved(), "code_version": code, "mode": mode_note, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    (output / SPEC_RECORD).write_text(yaml.safe_dump(record, sort_keys=False, allow_unicode=True))


def _compute(
    spec: AblationSpec,
    plan: list[PlannedRun],
    output: Path,
    ray_storage: str,
    meta: dict[str, Any],
    code: str,
    resume: bool,
    session: RaySession,
) -> list[dict[str, Any]]:
    """Reuse what the cache holds, run the rest; results.json is rewritten after every run."""
    results = [cached_result(r) if r.cached else failed_result(r, str(r.error)) for r in plan if r.cached or r.error]
    pending = [r for r in plan if r.cached is None and r.error is None]
    log.info(
        "ablation %s: %d variants × %d seeds = %d runs; %d reused, %d to run",
        spec.name,
        len(spec.variants),
        len(spec.seeds),
        len(plan),
        sum(bool(r.cached) for r in plan),
        len(pending),
    )
    save_results(_order(results, plan), output, meta)
    if pending:
        session.ensure()
        # A run no node can ever hold fails once, before any run or folder move (as in `tune`).
        labelled = [("", spec.full)] + [(f"variant {r.variant.name}: ", r.config) for r in pending]
        check_cluster_fit(str(spec.path), distinct_requests(labelled), ray_storage, session.joins_cluster)
        superseded = output / "superseded" / time.strftime("%Y%m%d-%H%M%S")
        runs = {
            r.run_id: descriptor(r, prepare_folder(r, code, resume, superseded), f"{ray_storage}/train")
            for r in pending
        }
        label_runs(pending, plan)  # each run's HParams session leads with variant, seed, components
        run_grid(spec, pending, runs, results, output, ray_storage, meta, code)
        # The recorder rewrote results.json after every run; the file is the record.
        results = load_results(output)
    done = {(r["variant"], r["seed"]) for r in results}
    results += [
        failed_result(r, "the run never reported (interrupted before it finished)")
        for r in pending
        if (r.variant.name, r.seed) not in done
    ]
    results = _order(results, plan)
    save_results(results, output, meta)
    return results


def run_ablation(
    spec: AblationSpec,
    output: str | Path,
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    num_cpus: int | None = None,
    code: str | None = None,
) -> AblationOutcome:
    """Run (or complete) the study of `spec` in `output`, then write its report."""
    from contrastlab.raytrain.cluster import resolve_storage

    output = Path(output).resolve()
    code = code or code_version()
    ray_storage = resolve_storage(storage, output)
    # One owner per output folder (the lock names its PID): two ablates would race on the cache.
    with claim_run_folder(output):
        cache = RunCache(output / CACHE_FILE)
        mode_note = spec.retune.note() if spec.retune else FIXED_NOTE
        _write_record(spec, output, code, mode_note)
        meta = report_meta(spec, mode_note, ablation_anchors(spec, output))
        # Ray is started (or joined) only when something needs computing.
        with RaySession(address, num_cpus, log_dir=output / "logs") as session:  # Ray's output: logs/ray.log
            tuned = None
            if spec.retune:
                from contrastlab.ablation.retune_run import tuned_parameters

                tuned = tuned_parameters(spec, output, code, cache, session)
            plan = plan_runs(spec, output, code, cache, tuned)
            check_runs(spec, plan)
            results = _compute(spec, plan, output, ray_storage, meta, code, resume, session)
        files = report_from_run_dir(output)
        write_ablation_tensorboard(output, spec, plan, results)
    failed = sum(bool(r.get("error")) for r in results)
    reused = sum(bool(r.get("reused")) for r in results)
    return AblationOutcome(output, results, files, reused, len(results) - reused - failed, failed)


__all__ = ["AblationError", "AblationOutcome", "PlannedRun", "plan_runs", "prepare_folder", "run_ablation"]
