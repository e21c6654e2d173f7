"""Progress lines for long work, through `logging` (logger `contrastlab.progress`).

    from contrastlab.progress import Progress, track

    with Progress("extracting features (val)", total=5000, unit="images", rate_unit="img") as progress:
        for batch in batches:
            ...
            progress.update(len(batch))

    for path in track(paths, "reading files", unit="files"):   # the same, around an iterable
        ...

prints, at INFO, at most one line every `EVERY_S` seconds once the work has run for
`THRESHOLD_S` seconds, and a final line with the total time:

    extracting features (val): 3072/5000 images, 2100 img/s, eta 1 s
    extracting features (val): done, 5000 images in 2.4 s, 2083 img/s

A `Progress` that counts nothing times a step as a whole (`with Progress("loading cifar10"):`
logs `loading cifar10: done in 3.1 s`).

Work that ends within `THRESHOLD_S` prints only the final line, at DEBUG, so short steps
stay quiet (`contrastlab --debug` shows them). The lines are plain log records: they go
wherever logging goes (the terminal, CI logs, Ray's worker log capture) and are never
rewritten in place. `show=False` (or the block `quiet_progress()`) turns every line into
DEBUG, for example on the workers of a multi-worker run other than the first.

This module imports nothing from the rest of the package.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["EVERY_S", "THRESHOLD_S", "Progress", "format_duration", "quiet_progress", "track"]

log = logging.getLogger("contrastlab.progress")

# Read when a `Progress` starts (tests set them to 0 to see every site's lines).
THRESHOLD_S = 2.0  # work that ends sooner prints only its final line, at DEBUG
EVERY_S = 5.0  # at most one progress line per this many seconds

_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("contrastlab_progress_quiet", default=False)

T = TypeVar("T")


@contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """Within the block, every `Progress` started logs at DEBUG only (when `quiet`)."""
    token = _quiet.set(quiet or _quiet.get())
    try:
        yield
    finally:
        _quiet.reset(token)


def format_duration(seconds: float) -> str:
    """`0.4 s`, `12 s`, `3 min 05 s`, `2 h 07 min`."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    return f"{rate:.2f}"


class Progress:
    """Counts the work done of one step and logs throttled progress lines about it.

    `what` says what is being done; `total` how many units the step has (None when unknown:
    the lines then show the count and rate, without an ETA); `unit` names the units in the
    count (`images`) and `rate_unit` in the rate (`img` gives `img/s`; `unit` by default).
    `update(n)` adds `n` done units; `close()` (or leaving the `with` block) logs the final
    line. `clock`, `threshold` and `every` are for tests; by default the clock is
    `time.monotonic` and the others are the module's `THRESHOLD_S` and `EVERY_S`.
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        *,
        rate_unit: str | None = None,
        show: bool = True,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        threshold: float | None = None,
        every: float | None = None,
    ):
        self.what, self.total, self.unit = what, total, unit
        self.rate_unit = rate_unit or unit
        self.show = show and not _quiet.get()
        self.logger = logger or log
        self.clock = clock
        self.threshold = THRESHOLD_S if threshold is None else threshold
        self.every = EVERY_S if every is None else every
        self.done = 0
        self.lines = 0  # progress lines logged so far (the final line not counted)
        self.closed = False
        self.started = clock()
        self._last_line = -math.inf

    # -- counting ---------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """`n` more units are done; logs a line when one is due."""
        self.done += n
        if self.total is not None and self.done >= self.total:
            return  # the final line says it
        now = self.clock()
        if now - self.started >= self.threshold and now - self._last_line >= self.every:
            self._last_line = now
            self.lines += 1
            self.logger.log(self._level(), "%s", self.line(now))

    def close(self, failed: bool = False) -> None:
        """Log the final line (once): the count and the total time; DEBUG for short work."""
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        elapsed = now - self.started
        long = self.lines > 0 or elapsed >= self.threshold
        self.logger.log(self._level() if long else logging.DEBUG, "%s", self.final_line(now, failed))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # -- the lines --------------------------------------------------------------------------
    def _level(self) -> int:
        return logging.INFO if self.show else logging.DEBUG

    def rate(self, now: float) -> float:
        """Units per second since the start (0 before any time has passed)."""
        elapsed = now - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate so far; None when the total or the rate is unknown."""
        rate = self.rate(now)
        if self.total is None or rate <= 0:
            return None
        return max(0, self.total - self.done) / rate

    def line(self, now: float) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{count} {self.unit}", f"{_format_rate(self.rate(now))} {self.rate_unit}/s"]
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"eta {format_duration(eta)}")
        return f"{self.what}: " + ", ".join(parts)

    def final_line(self, now: float, failed: bool = False) -> str:
        elapsed = now - self.started
        if not self.done and self.total is None:  # a step timed as a whole
            return f"{self.what}: {'stopped after' if failed else 'done in'} {format_duration(elapsed)}"
        count = f"{self.done}/{self.total}" if failed and self.total is not None else f"{self.done}"
        verb = "stopped after" if failed else "done,"
        text = f"{self.what}: {verb} {count} {self.unit} in {format_duration(elapsed)}"
        if self.done and elapsed > 0:
            text += f", {_format_rate(self.rate(now))} {self.rate_unit}/s"
        return text


def track(
    items: Iterable[T],
    what: str,
    total: int | None = None,
    unit: str = "items",
    **options,
) -> Iterator[T]:
    """Yield `items`, counting one unit per item (`total` defaults to `len(items)`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(what, total, unit, **options) as progress:
        for item in items:
            yield item
            progress.update()
