"""`StudyConsole`: the Tune callback that feeds a study's console (`contrastlab.study.console`).

It prints the study's start line when Tune sets it up, keeps one `RunTable` row per run from
the trials' results (the Tune-reported metric keys, e.g. `val/knn_top1`), prints one line
per finished or failed run with its reason, and the table as it is at the end. A study
subclasses it to name its rows (`cells`), plan them (`planned`), and give each run's epochs
and failure reason; `tuning.callbacks.TrialConsole` and `ablation.console.RunConsole` do.

Tune pickles its callbacks with the experiment; the table and the stream are not pickled
(a resumed study starts a new table).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from contrastlab.progress import format_duration
from contrastlab.raytrain.ray_logs import console_stream, verbose
from contrastlab.study.console import FINAL, ClearBeforeLog, RunTable, TableWriter, console_handlers, format_value


def reported_epoch(result: dict[str, Any]) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)) or 0)


def metric_value(result: dict[str, Any], name: str) -> float | None:
    value = result.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class StudyConsole(Callback):
    """The console of one study: `start_line`, a table on `metric` (`mode`), one line per run.

    `total` is how many runs this Tune experiment will have; `shown` the metrics a finished
    run's line adds (when its last result has them).
    """

    columns: tuple[str, ...] = ("trial",)
    stopped = "STOPPED"  # a run that ended before its planned epochs without an error

    def __init__(self, start_line: str, metric: str, mode: str = "max", total: int | None = None, shown=()):
        self.start_line, self.metric, self.mode, self.total = start_line, metric, mode, total
        self.shown: Sequence[str] = tuple(shown)
        self.table: RunTable | None = None
        self.writer: TableWriter | None = None
        self._filter: ClearBeforeLog | None = None
        self._shown: dict[str, tuple[str, int]] = {}  # the rows' states when last shown

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(table=None, writer=None, _filter=None, _shown={})
        return state

    # -- what a study says about its runs (overridden) ---------------------------------------
    def key(self, trial) -> str:
        return str(trial.trial_id)

    def cells(self, trial) -> tuple[str, ...]:
        return (str(trial.trial_id),)

    def epochs(self, trial) -> int | None:
        return None

    def reason(self, trial) -> str:
        return "the trial failed"

    def planned(self) -> list[tuple[str, tuple[str, ...], int | None]]:
        """Rows known before their trials exist: (key, cells, epochs)."""
        return []

    # -- output ------------------------------------------------------------------------------
    @staticmethod
    def quiet() -> bool:
        return not logging.getLogger("contrastlab").isEnabledFor(logging.INFO)

    def open(self) -> tuple[RunTable, TableWriter]:
        if self.table is None or self.writer is None:
            stream = console_stream()
            # With --verbose Ray prints among the table's lines: plain lines, never redrawn.
            self.writer = TableWriter(stream, tty=False if verbose() else None)
            self.table = RunTable(self.columns, self.metric, self.mode, self.total)
            for key, cells, epochs in self.planned():
                self.table.add(key, cells, epochs)
            if self.writer.tty:
                self._filter = ClearBeforeLog(self.writer)
                for handler in console_handlers():
                    handler.addFilter(self._filter)
        return self.table, self.writer

    def close(self) -> None:
        if self._filter is not None:
            for handler in console_handlers():
                handler.removeFilter(self._filter)
            self._filter = None

    def refresh(self, force: bool = False) -> None:
        """Show the table if due: whole on a terminal, at the first rows and at the end;
        elsewhere only the rows that changed since the last plain table."""
        table, writer = self.open()
        if self.quiet() or not (table.rows or force):
            return
        states = table.states()
        if writer.tty or force or not self._shown:
            shown = writer.table(table.lines(), table.signature(), force=force or not self._shown)
        else:
            changed = [key for key, state in states.items() if self._shown.get(key) != state]
            shown = bool(changed) and writer.table(table.lines(keys=changed), table.signature())
        if shown:
            self._shown = states

    def _row(self, trial):
        table, _ = self.open()
        key = self.key(trial)
        table.add(key, self.cells(trial), self.epochs(trial))
        return table, key

    # -- Tune's hooks ------------------------------------------------------------------------
    def setup(self, **info) -> None:
        _, writer = self.open()
        if not self.quiet():
            writer.line(self.start_line)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        for trial in trials:
            self._row(trial)
        self.refresh()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        table, key = self._row(trial)
        table.start(key)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        table, key = self._row(trial)
        table.rows[key].status = "PENDING"  # Tune relaunches it (a lost actor or node)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        table, key = self._row(trial)
        table.result(key, reported_epoch(result), metric_value(result, self.metric))
        self.refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        table, key = self._row(trial)
        row = table.rows[key]
        complete = row.epochs is None or row.epoch >= row.epochs
        self.finished(trial, "DONE" if complete else self.stopped)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._row(trial)
        self.finished(trial, "FAILED", self.reason(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self.refresh(force=True)
        if self.writer is not None:
            self.writer.drawn = 0  # the last table stays on the terminal
        self.close()

    # -- the lines ---------------------------------------------------------------------------
    def finished(self, trial, status: str, reason: str | None = None) -> None:
        table, writer = self.open()
        key = self.key(trial)
        row = table.finish(key, status)
        if self.quiet() and status != "FAILED":
            return
        done = sum(r.status in FINAL for r in table.rows.values())
        total = max(table.total or 0, len(table.rows))
        epochs = f"{row.epoch}/{row.epochs}" if row.epochs is not None else str(row.epoch)
        took = format_duration(row.elapsed(table.clock()) or 0.0)
        label = " ".join(row.cells)
        if status == "FAILED":
            text = f"FAILED at epoch {epochs} after {took}: {reason}"
        else:
            values = [f"{self.metric} {format_value(row.value)} (best {format_value(row.best)})"]
            last = getattr(trial, "last_result", None) or {}
            values += [
                f"{name} {format_value(metric_value(last, name))}"
                for name in self.shown
                if name != self.metric and metric_value(last, name) is not None
            ]
            what = "done" if status == "DONE" else status.lower()
            text = f"{what}, epoch {epochs} in {took}: " + ", ".join(values)
        writer.line(f"[{done}/{total}] {label}: {text}")
        self.refresh(force=writer.tty)


__all__ = ["StudyConsole", "metric_value", "reported_epoch"]
