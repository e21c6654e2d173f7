"""Where Ray's own output goes while a study runs: a file in the output folder, not the console.

A study started from a terminal would otherwise print every line its Ray workers write (Ray
Train's "Checkpoint successfully created", "Reporting training result" with whole metric
dicts, Tune's own tables, Ray's C++ error lines that the user can do nothing about).
`RayOutput(log_dir)` sends all of it to `log_dir/ray.log`:

- the workers' stdout and stderr (Tune trials, Train workers and controllers), followed in
  Ray's session folder while the command runs (Ray is started with `log_to_driver=False`);
  each line is prefixed with the actor's name and PID, as Ray itself shows them;
- the driver's `ray` logger (Tune's and Train's driver-side messages); the console keeps
  its warnings and errors, less the known-harmless ones (`HARMLESS`);
- what Tune prints on stdout (its experiment box and status tables).

Error lines of the workers (Ray's C++ `E`/`F` lines, Python `ERROR` records) that are not
known to be harmless are also shown on stderr. With `contrastlab --verbose` (the
`CONTRASTLAB_VERBOSE` variable) nothing is routed: Ray prints as it does by default.
On a cluster of several machines only the workers of this machine are followed; the
others' logs stay in Ray's session folder on their machines (`ray logs`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import TextIO

LOG_FILE = "ray.log"
VERBOSE_ENV = "CONTRASTLAB_VERBOSE"

# Ray lines that say nothing a user can act on; hidden on the console, kept in ray.log.
HARMLESS = (
    # Ray Train's PreemptionWatcher actor is restartable and has constructor arguments in the
    # object store: Ray's core worker logs it at error level for every Train run.
    "has constructor arguments in the object store and max_restarts > 0",
    # Printed by every ray.init of a new local instance.
    "Token authentication is enabled for this Ray cluster",
    # Tune's traceback of a failed trial: the study's console gives its reason in one line,
    # and the traceback stays in ray.log and in the trial's error.txt.
    "Trial task failed for trial ",
)
# Ray's C++ error and fatal lines (`[2026-11-26 17:01:28,639 E 6308 6366] core_worker.cc:...`)
# and the `ERROR` records of its Python loggers in the workers.
ERROR_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:.,]+ [EF] \d+ \d+\]|\bERROR \S+\.py:\d+ --")
MARKER = re.compile(r"^:(\w+):(.*)$")  # Ray's own markers in worker logs (:job_id:, :actor_name:)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FOLLOW_EVERY_S = 1.0

_console_streams: list[TextIO] = []


def verbose() -> bool:
    """Whether Ray's output goes to the console as Ray prints it (`contrastlab --verbose`)."""
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


def harmless(line: str) -> bool:
    return any(text in line for text in HARMLESS)


def shown_on_console(line: str) -> bool:
    """A worker line the console shows even by default: an error line not known to be harmless."""
    return bool(ERROR_LINE.search(line)) and not harmless(line)


def console_stream() -> TextIO:
    """The stream a study's console writes to: the command's stdout, even while Tune's prints
    go to ray.log."""
    return _console_streams[-1] if _console_streams else sys.stdout


class LogSink:
    """Appends whole lines to one file, from several threads.

    The file is created only once `root` (the command's output folder) holds something of the
    command (anything but its lock file and this log): a command refused before it wrote its
    output leaves nothing behind. Lines written before are kept in memory (at most
    `MAX_PENDING`) and written first.
    """

    MAX_PENDING = 10_000

    def __init__(self, path: Path, root: Path | None = None):
        self.path, self.root = path, root
        self._file: TextIO | None = None
        self._pending: list[str] = []
        self._closed = False
        self._lock = threading.Lock()

    def _open(self) -> TextIO | None:
        if self._file is None and (self.root is None or self._started(self.root)):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", errors="replace")
            self._file.write("".join(self._pending))
            self._pending = []
        return self._file

    def _started(self, root: Path) -> bool:
        try:
            return any(entry.name not in (".lock", self.path.parent.name) for entry in root.iterdir())
        except OSError:
            return False

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        text = [f"{ANSI.sub('', line)}\n" for line in lines]
        with self._lock:
            if self._closed:
                return
            handle = self._open()
            if handle is None:
                self._pending = (self._pending + text)[-self.MAX_PENDING :]
                return
            handle.write("".join(text))
            handle.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._pending:
                    self._open()
                if self._file is not None:
                    self._file.close()


class SinkStream(io.TextIOBase):
    """A text stream (for `sys.stdout`) whose lines go to a `LogSink`."""

    def __init__(self, sink: LogSink):
        self.sink, self._partial = sink, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self.sink.write_lines(lines)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.sink.write_lines([self._partial])
            self._partial = ""


class SinkHandler(logging.Handler):
    """The driver's `ray` log records, into the sink."""

    def __init__(self, sink: LogSink):
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write_lines(self.format(record).splitlines())
        except Exception:  # noqa: BLE001 - a log line must never stop the study
            self.handleError(record)


class ConsoleRayFilter(logging.Filter):
    """On Ray's own console handler: warnings and errors only, less the known-harmless ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not harmless(record.getMessage())


class _FileState:
    def __init__(self, pid: str):
        self.pid, self.name, self.job = pid, "worker", None
        self.offset, self.partial = 0, ""


class WorkerLogFollower:
    """Copies new lines of the workers' log files (`worker-*.out`, `worker-*.err` in Ray's
    session log folder) into the sink every `every` seconds, on a daemon thread."""

    def __init__(
        self, logs_dir: Path, sink: LogSink, job: str | None, echo: TextIO | None, every: float = FOLLOW_EVERY_S
    ):
        self.logs_dir, self.sink, self.job, self.echo, self.every = logs_dir, sink, job, echo, every
        self.files: dict[Path, _FileState] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="contrastlab-ray-logs", daemon=True)

    def start(self) -> WorkerLogFollower:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sweep()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.sweep()  # what the workers wrote last (the files outlive Ray's shutdown)

    def sweep(self) -> None:
        try:
            paths = sorted([*self.logs_dir.glob("worker-*.out"), *self.logs_dir.glob("worker-*.err")])
        except OSError:
            return
        for path in paths:
            try:
                self._read(path)
            except OSError:
                continue

    def _read(self, path: Path) -> None:
        state = self.files.setdefault(path, _FileState(path.stem.rsplit("-", 1)[-1]))
        with path.open("rb") as handle:
            handle.seek(state.offset)
            data = handle.read()
        if not data:
            return
        state.offset += len(data)
        lines = (state.partial + data.decode("utf-8", errors="replace")).split("\n")
        state.partial = lines.pop()
        kept = []
        for line in lines:
            marker = MARKER.match(line)
            if marker:
                key, value = marker.groups()
                if key == "actor_name":
                    state.name = value
                elif key == "job_id":
                    state.job = value
                continue
            if self.job and state.job not in (None, self.job):
                continue  # another job's worker on a shared cluster
            kept.append(f"({state.name} pid={state.pid}) {line}")
        self.sink.write_lines(kept)
        if self.echo is not None:
            for line in kept:
                if shown_on_console(line):
                    print(ANSI.sub("", line), file=self.echo, flush=True)


class RayOutput:
    """Routes Ray's output to `log_dir/ray.log` between `start()` and `stop()` (see the module)."""

    def __init__(self, log_dir: str | Path):
        self.path = Path(log_dir) / LOG_FILE
        self.sink: LogSink | None = None
        self.follower: WorkerLogFollower | None = None
        self._handler: SinkHandler | None = None
        self._filter = ConsoleRayFilter()
        self._stdout: TextIO | None = None

    def start(self) -> RayOutput:
        """Before `ray.init`: the driver's `ray` logger and stdout go to the file."""
        self.sink = LogSink(self.path, root=self.path.parent.parent)  # OUTPUT/logs/ray.log: OUTPUT
        ray_logger = logging.getLogger("ray")
        for handler in ray_logger.handlers:
            handler.addFilter(self._filter)
        self._handler = SinkHandler(self.sink)
        ray_logger.addHandler(self._handler)
        self._stdout = sys.stdout
        _console_streams.append(self._stdout)
        sys.stdout = SinkStream(self.sink)
        return self

    def follow(self, session_dir: str | None, job: str | None) -> None:
        """After `ray.init`: follow the workers' logs of the session on this machine."""
        if self.sink is None or not session_dir:
            return
        echo = sys.stderr
        self.follower = WorkerLogFollower(Path(session_dir) / "logs", self.sink, job, echo).start()

    def stop(self) -> None:
        """After `ray.shutdown`: the last worker lines, then everything back as it was."""
        if self.sink is None:
            return
        if self.follower is not None:
            self.follower.stop()
        if isinstance(sys.stdout, SinkStream):
            sys.stdout.flush()
        if self._stdout is not None:
            sys.stdout = self._stdout
            if self._stdout in _console_streams:
                _console_streams.remove(self._stdout)
        ray_logger = logging.getLogger("ray")
        for handler in ray_logger.handlers:
            handler.removeFilter(self._filter)
        if self._handler is not None:
            ray_logger.removeHandler(self._handler)
        self.sink.close()
        self.sink = None


__all__ = [
    "HARMLESS",
    "LOG_FILE",
    "VERBOSE_ENV",
    "RayOutput",
    "console_stream",
    "harmless",
    "shown_on_console",
    "verbose",
]
