"""Leaving nothing behind: every process a command starts is gone when it exits.

SIGTERM is turned into an exception (`Terminated`) in the main thread, like SIGINT is into
KeyboardInterrupt, so the commands' `finally` blocks run (`ray.shutdown()`, checkpoint
staging cleanup, lock release). Whatever a command started and is still alive at exit
(Ray's raylet, GCS, workers, the dashboard) is then terminated, and killed after a short
grace. SIGKILL cannot be caught: the kernel releases the run folder's lock and the
checkpoint on disk stays whole (see engine/checkpoint.py), but Ray's processes only stop
when Ray's own reaper notices the driver is gone, a few seconds later.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("contrastlab")
GRACE_SECONDS = 5.0


class Terminated(BaseException):  # noqa: N818 - reads like KeyboardInterrupt, which it mirrors
    """SIGTERM arrived; raised in the main thread so that cleanup code runs."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _raise_terminated(signum: int, _frame) -> None:
    raise Terminated(signum)


def _psutil():
    """psutil, which Ray vendors and puts on sys.path when it is imported (None before that)."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _proc_parents() -> dict[int, int]:
    """pid -> parent pid from /proc (Linux), for when psutil is not importable yet."""
    parents = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int | None = None, recursive: bool = True) -> set[int]:
    """The processes below `root` (default: this one); only its children without `recursive`."""
    root = os.getpid() if root is None else root
    psutil = _psutil()
    if psutil is not None:
        try:
            return {child.pid for child in psutil.Process(root).children(recursive=recursive)}
        except psutil.Error:
            return set()
    parents, found, frontier = _proc_parents(), set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
        if not recursive:
            break
    return found


def stop_processes(pids: set[int], grace: float = GRACE_SECONDS) -> list[int]:
    """Terminate `pids`, kill what is left after `grace` seconds; the pids that survived."""
    psutil = _psutil()
    if psutil is None:
        return _stop_without_psutil(pids, grace)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    return [proc.pid for proc in alive]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_without_psutil(pids: set[int], grace: float) -> list[int]:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


_BEFORE: set[int] = set()
_RAY_WAS_UP = False


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")  # not imported: nothing to stop (and no slow import for it)
    return bool(ray is not None and ray.is_initialized())


@contextmanager
def handle_termination() -> Iterator[None]:
    """SIGTERM raises `Terminated` for the block (main thread only); the children that exist
    already are noted, so that only what the block starts is stopped at its end."""
    global _BEFORE, _RAY_WAS_UP
    _BEFORE, _RAY_WAS_UP = descendants(recursive=False), _ray_is_up()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_children() -> None:
    """Stop the processes started since `handle_termination` began (not the caller's own)."""
    try:
        if _ray_is_up() and not _RAY_WAS_UP:  # a command left Ray connected (an exception path)
            sys.modules["ray"].shutdown()
    except Exception as err:  # noqa: BLE001 - shutting down; a failure here must not hide the real one
        log.warning("ray.shutdown failed: %s", err)
    # Only what this command started: the subtrees of its new children. A Ray instance that
    # was already running (a caller's) keeps its workers, even those started meanwhile.
    started: set[int] = set()
    for child in descendants(recursive=False) - _BEFORE:
        started |= {child} | descendants(child)
    if not started:
        return
    survivors = stop_processes(started)
    if survivors:
        log.warning("processes %s did not stop; pid %d started them", survivors, os.getpid())


__all__ = ["GRACE_SECONDS", "Terminated", "descendants", "handle_termination", "stop_children", "stop_processes"]
