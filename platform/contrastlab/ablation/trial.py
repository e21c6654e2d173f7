"""The Tune side of an ablation: the trial driver of one (variant, seed) run, and the
callback that records each run the moment it ends.

The driver is a Tune function trainable (in an importable module, so Tune can pickle it)
that runs the run through `contrastlab.study.trial.run_in_trial`, as the tuning package
does (one worker: in the trial itself; several: a `TorchTrainer`), but with the ablation's
own run folder (`runs/<variant>/seed<k>`) and a Train run name that stays the same when the
run is resumed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from ray import tune

from contrastlab.ablation.cache import RunCache
from contrastlab.ablation.report import save_results
from contrastlab.config import config_from_dict
from contrastlab.study.metrics import numeric_metrics
from contrastlab.study.trial import TrialFailed, run_in_trial

log = logging.getLogger("contrastlab")
RUN_KEY = "run"
CURVE_METRICS = ("loss", "val/knn_top1")


def held_out_names(metrics: list[str]) -> list[str]:
    """`val/m` and `test/m` for each of the spec's metrics, val first."""
    return [f"{split}/{metric}" for metric in metrics for split in ("val", "test")]


def run_ablation_trial(config: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """Tune function trainable: train the run named by `config["run"]` (in the trial, or on Ray Train)."""
    run = runs[config[RUN_KEY]]
    # The ablate command's CONTRASTLAB_* settings (data cache, test hooks) reach the Train
    # workers through make_trainer, even on a cluster started from another shell.
    os.environ.update(run["env"])
    cfg = config_from_dict(run["config"], f"<ablation run {config[RUN_KEY]}>")
    run_in_trial(cfg, Path(run["run_dir"]), run["train_name"], run["storage"])


def trial_name(trial) -> str:
    return str(trial.config[RUN_KEY])


def trial_dirname(trial) -> str:
    return f"{trial.trial_id}-{str(trial.config[RUN_KEY]).replace('/', '-')}"[:120]


def error_text(trial) -> str:
    """The last meaningful line of the trial's error file.

    When Tune calls back, the error is only in the driver's local copy of the trial folder
    (`error_file`); the storage copy that `get_error()` reads is synced later.
    """
    try:
        local = trial.error_file
        text = Path(local).read_text() if local and Path(local).is_file() else trial.get_error()
    except Exception as err:  # unreadable storage: keep the failure, say why the text is missing
        return f"the trial failed; its error file is unreadable ({err})"
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(text or ""))
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.startswith(("Failure #", "Traceback", "File ", "^"))]
    last = (meaningful or lines or ["the trial failed without an error text"])[-1]
    # The driver's own wrapper adds nothing to the reason it carries.
    return last.removeprefix(f"{TrialFailed.__module__}.{TrialFailed.__name__}: ")[:1000]


class RunRecorder(tune.Callback):
    """Keeps each run's curves while it trains; when it ends, writes its result to the cache,
    to results.json, and prints a progress line.

    Only plain data is held, so Tune can pickle it with the experiment state.
    """

    def __init__(
        self,
        runs: dict[str, dict[str, Any]],
        results: list[dict[str, Any]],
        cache_path: str,
        output: str,
        meta: dict[str, Any],
        code: str,
        total: int,
    ):
        self.runs, self.results, self.cache_path = runs, results, cache_path
        self.output, self.meta, self.code, self.total = output, meta, code, total
        self.curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.started: dict[str, float] = {}

    def _curves(self, run_id: str, earlier: dict[str, Any] | None) -> dict[str, list[tuple[int, float]]]:
        """This attempt's points, after those of an earlier failed attempt (a resumed run reports
        only the epochs after its checkpoint). A metric measured only at the end is no curve."""
        merged: dict[str, dict[int, float]] = {}
        for source in ((earlier or {}).get("curves") or {}, self.curves.get(run_id, {})):
            for name, points in source.items():
                merged.setdefault(name, {}).update({int(epoch): float(value) for epoch, value in points})
        return {
            name: sorted(points.items()) for name, points in merged.items() if name in CURVE_METRICS or len(points) > 1
        }

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.started[trial_name(trial)] = time.time()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        run_id = trial_name(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        curves = self.curves.setdefault(run_id, {})
        # The objective and its terms (`aug_loss`, `margin_loss`, …) become the report's small
        # multiples; the spec's metrics on val are overlaid.
        terms = [k for k in result if k.endswith("loss") and "/" not in k]
        for name in dict.fromkeys((*CURVE_METRICS, *terms, *(f"val/{m}" for m in self.meta["metrics"]))):
            value = result.get(name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                points = curves.setdefault(name, [])
                points[:] = [p for p in points if p[0] != epoch] + [(epoch, float(value))]

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = trial_name(trial)
        run = self.runs[run_id]
        metrics = numeric_metrics(trial.last_result or {})
        epochs = int(metrics.get("epoch", 0))
        if epochs < run["epochs"]:
            self._record(run_id, error=f"stopped after {epochs} of {run['epochs']} epochs", metrics=metrics)
            return
        self._record(run_id, metrics=metrics)
        cache = RunCache(self.cache_path)
        cache.put_run(
            run["key"],
            self.code,
            {**self.results[-1], "run_dir": run["run_dir"], "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")},
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._record(trial_name(trial), error=error_text(trial), metrics=numeric_metrics(trial.last_result or {}))

    def _record(self, run_id: str, metrics: dict[str, float], error: str | None = None) -> None:
        run = self.runs[run_id]
        key = (run["variant"], run["seed"])
        earlier = next((r for r in self.results if (r["variant"], r["seed"]) == key), None)
        result: dict[str, Any] = {
            "variant": run["variant"],
            "seed": run["seed"],
            "metrics": metrics,
            "curves": self._curves(run_id, earlier),
            "overrides": run["overrides"],
            "reused": False,
        }
        if error:
            result["error"] = error
        self.results[:] = [r for r in self.results if (r["variant"], r["seed"]) != key]
        self.results.append(result)
        save_results(self.results, self.output, self.meta)
        seconds = time.time() - self.started.get(run_id, time.time())
        shown = ", ".join(f"{m} {metrics[m]:.4f}" for m in held_out_names(self.meta["metrics"]) if m in metrics)
        outcome = f"FAILED: {error}" if error else f"done in {seconds:.0f} s: {shown}"
        # The console's line (ablation.console) says it on stdout; this one is for --debug.
        log.debug("[%d/%d] %s %s", len(self.results), self.total, run_id, outcome)


__all__ = [
    "RUN_KEY",
    "RunRecorder",
    "run_ablation_trial",
    "trial_dirname",
    "trial_name",
]
