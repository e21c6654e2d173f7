"""Checkpoints that hold everything needed to resume a run exactly, and survive a crash.

Saved with `torch.save` and loaded with `torch.load(weights_only=True)`: a checkpoint
holds only tensors, numbers, strings, lists and dicts, so loading one runs no code.

A save never leaves the run without a complete checkpoint. The new state is written and
fsynced into a staging folder `.last-XXXX`, then swapped in with renames:

    1. last      -> .last-old     (the previous checkpoint, complete)
    2. .last-XXX -> last          (the new checkpoint, complete)
    3. remove .last-old

A crash before 1 leaves `last` as it was (and a stale staging folder, removed by the
next save); between 1 and 2 only `.last-old` exists, and `recover_checkpoint` renames it
back; after 2 `last` is the new checkpoint and `.last-old` is a leftover. Every reader
goes through `recover_checkpoint` first, so the next run resumes from the old or the new
checkpoint, never from epoch 1 when one existed.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from contrastlab.errors import UserError, free_space

STATE_FILE = "state.pt"
REQUIRED_KEYS = ("method", "epoch", "step", "config_hash")


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written (one line naming the path)."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the swap -----------------------------------------------------------------------------
def old_path(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}-old")


def _staging_folders(directory: Path) -> list[Path]:
    old = old_path(directory)
    return [p for p in directory.parent.glob(f".{directory.name}-*") if p != old and p.is_dir()]


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a power cut after it must not undo it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_checkpoint(directory: str | Path) -> Path | None:
    """Finish or undo a swap a crash interrupted; the complete checkpoint folder, or None."""
    directory = Path(directory)
    old = old_path(directory)
    if (directory / STATE_FILE).is_file():
        if old.exists():  # the crash came after step 2: the old copy is a leftover
            shutil.rmtree(old, ignore_errors=True)
        return directory
    if (old / STATE_FILE).is_file():  # the crash came between steps 1 and 2
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(old, directory)
        _fsync_dir(directory.parent)
        return directory
    return None


def _write_staging(state: dict[str, Any], directory: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        with open(staging / STATE_FILE, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap_in(staging: Path, directory: Path) -> None:
    old = old_path(directory)
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(staging, directory)
    _fsync_dir(directory.parent)
    if old.exists():
        shutil.rmtree(old)


def _write_failure(err: BaseException, directory: Path) -> CheckpointError | None:
    """A full disk or an unwritable folder, as one line; None for anything else."""
    number = getattr(err, "errno", None)
    text = str(err)
    kept = "the last good checkpoint is kept"
    if number in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return CheckpointError(
            f"{directory}: cannot write the checkpoint: the disk is full ({free_space(directory.parent)} free); {kept}"
        )
    if "file write failed" in text:  # torch's writer hides the errno; a full disk is the usual cause
        return CheckpointError(
            f"{directory}: cannot write the checkpoint: writing failed, is the disk full? "
            f"({free_space(directory.parent)} free); {kept}"
        )
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(f"{directory}: cannot write the checkpoint ({os.strerror(number)})")
    return None


def save_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write `state` into `directory`; a crash at any point leaves a complete checkpoint."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(directory)  # never swap over a half-finished earlier swap
        for stale in _staging_folders(directory):  # left by a killed process (the folder is locked)
            shutil.rmtree(stale, ignore_errors=True)
        staging = _write_staging(state, directory)
        try:
            _swap_in(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except (OSError, RuntimeError) as err:
        failure = _write_failure(err, directory)
        if failure is None:
            raise
        raise failure from err
    return directory


# -- loading --------------------------------------------------------------------------------
def _load_failure(err: BaseException, path: Path) -> CheckpointError:
    text = str(err)
    # torch words a blocked global differently across versions; both name it after GLOBAL.
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if isinstance(err, pickle.UnpicklingError) and found:
        what = f" ({found.group(1)})"
        return CheckpointError(
            f"{path}: refused: the file holds Python objects{what}, not only tensors and plain "
            "data; it was not loaded (a checkpoint from elsewhere, or a malicious file)"
        )
    if path.stat().st_size == 0:
        return CheckpointError(f"{path}: a checkpoint (the file is empty)")
    return CheckpointError(f"{path}: a complete checkpoint written by contrastlab (the file is truncated or corrupt)")


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    directory = Path(directory)
    recover_checkpoint(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: a checkpoint (no {STATE_FILE} here)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        OSError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
    ) as err:
        raise _load_failure(err, path) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: a contrastlab checkpoint (missing {', '.join(missing)})")
    return state


def find_checkpoint(path: str | Path) -> Path:
    """Accept a run folder, a checkpoint folder or a state file; return the checkpoint folder."""
    path = Path(path)
    candidates = [path, path / "checkpoints" / "last", path.parent]
    for candidate in candidates:
        if (candidate / STATE_FILE).is_file():
            return candidate
        # Only a checkpoint folder may be repaired, never an arbitrary folder the user named.
        if candidate.name == "last" and recover_checkpoint(candidate) is not None:
            return candidate
    looked = ", ".join(map(str, candidates))
    raise CheckpointError(f"{path}: a run folder or checkpoint (no {STATE_FILE} in {looked})")


__all__ = [
    "CheckpointError",
    "STATE_FILE",
    "find_checkpoint",
    "load_checkpoint",
    "recover_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
