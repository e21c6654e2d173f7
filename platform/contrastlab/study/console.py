"""What a study shows while it runs: one start line, a live table of its runs, one line per
finished or failed run. `contrastlab tune` shows one row per trial, `contrastlab ablate` one
per variant × seed.

    trial        status   epoch  val/knn_top1  best    elapsed  eta
    1a2b_00000   DONE     8/8    0.6120        0.6250  2 min 05 s  -
    1a2b_00001   RUNNING  3/8    0.4410        0.4410  48 s     1 min 20 s
    runs: 1 done, 1 running, 4 pending; elapsed 2 min 53 s; eta ~6 min 10 s; best 1a2b_00000 0.6250

On a terminal the table is redrawn in place (at most once a second); elsewhere (CI, files,
`ray job submit` logs) it is printed as plain lines: whole when the first rows appear and at
the end, and in between at most once every `PLAIN_EVERY_S` seconds with only the rows that
changed since (a status or an epoch) and the footer. The lines go to the command's
stdout (`contrastlab.raytrain.ray_logs.console_stream`); `-q` shows only failed runs.

`RunTable` holds the rows and renders them (no Ray); `TableWriter` writes them to a stream;
`StudyConsole` is the Tune callback that feeds both from the trials' results.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from contrastlab.progress import format_duration

LIVE_EVERY_S = 1.0  # a terminal's table is redrawn at most this often
PLAIN_EVERY_S = 60.0  # plain tables at most this often (and only when a row changed)
FINAL = ("DONE", "PRUNED", "STOPPED", "FAILED")


@dataclass
class Row:
    cells: tuple[str, ...]
    epochs: int | None = None  # the run's planned epochs, when known
    status: str = "PENDING"
    epoch: int = 0
    value: float | None = None  # the metric's last value
    best: float | None = None
    started: float | None = None
    ended: float | None = None
    first_epoch: int = 0  # the epoch this attempt started at (a resumed run starts later)

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    def eta(self, now: float) -> float | None:
        """Seconds left at this attempt's pace so far; None unless running with a known plan."""
        elapsed = self.elapsed(now)
        done = self.epoch - self.first_epoch
        if self.status != "RUNNING" or self.epochs is None or elapsed is None or done <= 0:
            return None
        return max(0, self.epochs - self.epoch) * elapsed / done


def format_value(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


class RunTable:
    """The runs of a study and their progress on `metric` (`mode` max or min for "best")."""

    def __init__(
        self, columns: Sequence[str], metric: str, mode: str = "max", total: int | None = None, clock=time.monotonic
    ):
        self.columns, self.metric, self.mode = tuple(columns), metric, mode
        self.total = total  # runs the study will have (rows not created yet count as pending)
        self.clock = clock
        self.rows: dict[str, Row] = {}
        self.started = clock()

    # -- updates --------------------------------------------------------------------------
    def add(self, key: str, cells: Sequence[str], epochs: int | None = None) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(tuple(str(c) for c in cells), epochs)
        return self.rows[key]

    def start(self, key: str) -> None:
        row = self.rows[key]
        row.status, row.started, row.ended = "RUNNING", self.clock(), None
        row.first_epoch = row.epoch

    def result(self, key: str, epoch: int, value: float | None) -> None:
        row = self.rows[key]
        if row.status == "PENDING":
            self.start(key)
        row.epoch = epoch
        if value is not None and math.isfinite(value):
            row.value = value
            row.best = value if row.best is None else (max if self.mode == "max" else min)(row.best, value)

    def finish(self, key: str, status: str) -> Row:
        row = self.rows[key]
        if row.started is None:
            row.started = self.clock()
        row.status, row.ended = status, self.clock()
        return row

    # -- rendering ------------------------------------------------------------------------
    def header(self) -> list[str]:
        return [*self.columns, "status", "epoch", self.metric, "best", "elapsed", "eta"]

    def cells(self, row: Row, now: float) -> list[str]:
        epoch = f"{row.epoch}/{row.epochs}" if row.epochs is not None else str(row.epoch)
        elapsed = row.elapsed(now)
        return [
            *row.cells,
            row.status,
            epoch if row.started is not None else "-",
            format_value(row.value),
            format_value(row.best),
            "-" if elapsed is None else format_duration(elapsed),
            "-" if row.eta(now) is None else format_duration(row.eta(now)),
        ]

    def lines(self, now: float | None = None, keys: Iterable[str] | None = None) -> list[str]:
        """The header, one line per row (those of `keys` only, if given), and the footer."""
        now = self.clock() if now is None else now
        shown = self.rows if keys is None else {k: self.rows[k] for k in keys if k in self.rows}
        table = [self.header()] + [self.cells(row, now) for row in shown.values()]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
        return [*text, self.footer(now)]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        missing = (self.total or 0) - len(self.rows)
        if missing > 0:
            counts["PENDING"] = counts.get("PENDING", 0) + missing
        return counts

    def best_row(self) -> tuple[str, float] | None:
        scored = [(k, r.best) for k, r in self.rows.items() if r.best is not None]
        if not scored:
            return None
        return (max if self.mode == "max" else min)(scored, key=lambda kv: kv[1])

    def eta(self, now: float) -> float | None:
        """The whole study: epochs left × the mean seconds an epoch took so far ÷ runs at once."""
        rates = [
            r.elapsed(now) / (r.epoch - r.first_epoch)
            for r in self.rows.values()
            if r.elapsed(now) and r.epoch > r.first_epoch
        ]
        if not rates:
            return None
        left = 0
        for row in self.rows.values():
            if row.status in ("PENDING", "RUNNING"):
                if row.epochs is None:
                    return None
                left += max(0, row.epochs - row.epoch)
        missing = (self.total or 0) - len(self.rows)
        if missing > 0:
            planned = [r.epochs for r in self.rows.values() if r.epochs is not None]
            if not planned:
                return None
            left += missing * max(planned)
        running = max(1, sum(r.status == "RUNNING" for r in self.rows.values()))
        return left * (sum(rates) / len(rates)) / running

    def footer(self, now: float) -> str:
        counts = self.counts()
        order = ["DONE", "PRUNED", "STOPPED", "FAILED", "RUNNING", "PENDING"]
        shown = ", ".join(f"{counts[s]} {s.lower()}" for s in order if counts.get(s))
        parts = [f"runs: {shown or 'none yet'}", f"elapsed {format_duration(now - self.started)}"]
        eta = self.eta(now)
        if eta is not None and (counts.get("RUNNING") or counts.get("PENDING")):
            parts.append(f"eta ~{format_duration(eta)}")
        best = self.best_row()
        if best is not None:
            parts.append(f"best {' '.join(self.rows[best[0]].cells)} {format_value(best[1])}")
        return "; ".join(parts)

    def states(self) -> dict[str, tuple[str, int]]:
        """Each row's status and epoch: what a plain table is printed again for."""
        return {k: (r.status, r.epoch) for k, r in self.rows.items()}

    def signature(self) -> tuple:
        return tuple(self.states().items())


class TableWriter:
    """Writes the table and the event lines to `stream`: in place on a terminal, plain elsewhere."""

    def __init__(
        self,
        stream: TextIO,
        tty: bool | None = None,
        live_every: float = LIVE_EVERY_S,
        plain_every: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream
        self.tty = _isatty(stream) if tty is None else tty
        self.live_every, self.plain_every, self.clock = live_every, plain_every, clock
        self.drawn = 0  # lines of the table on the terminal now, below the cursor's line start
        self._last = -math.inf
        self._signature: Any = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def clear(self) -> None:
        """Erase the table drawn on the terminal (before another line is printed)."""
        if self.tty and self.drawn:
            self._write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def line(self, text: str) -> None:
        """A line that stays (a run finished, the study started)."""
        self.clear()
        self._write(text + "\n")

    def table(self, lines: list[str], signature: Any = None, force: bool = False) -> bool:
        """Show the table if it is due; True when it was written."""
        now = self.clock()
        if self.tty:
            if not force and self.drawn and now - self._last < self.live_every:
                return False
            self.clear()
            self._write("".join(f"{line}\x1b[K\n" for line in lines))
            self.drawn = len(lines)
        else:
            changed = signature is None or signature != self._signature
            if not force and (now - self._last < self.plain_every or not changed):
                return False
            self._write("".join(f"{line}\n" for line in lines))
            self._signature = signature
        self._last = now
        return True


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ClearBeforeLog(logging.Filter):
    """On the console's log handlers: a log line first erases the live table (redrawn after)."""

    def __init__(self, writer: TableWriter):
        super().__init__()
        self.writer = writer

    def filter(self, record: logging.LogRecord) -> bool:
        self.writer.clear()
        return True


def console_handlers() -> Iterable[logging.Handler]:
    """The handlers that print on a terminal: the root logger's and Ray's own."""
    for name in (None, "ray"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and _isatty(handler.stream):
                yield handler


__all__ = ["FINAL", "PLAIN_EVERY_S", "ClearBeforeLog", "Row", "RunTable", "TableWriter", "console_handlers"]
