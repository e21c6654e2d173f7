"""A run folder has one owner and one config.

`claim_run_folder(path, cfg)` is held by every command that writes a run folder:
- an exclusive `fcntl` lock on `path/.lock` (a second process gets one line naming the
  holder's PID; the kernel drops the lock when the holder dies, even by SIGKILL);
- the folder's config is checked before anything is written: a folder that already holds a
  run (its `config.yaml`, or a checkpoint) with another config is refused, listing each
  difference as `field: old -> new`, and left exactly as it was.
A refused command leaves the folder as it found it (a lock file or folder the claim created
is removed again).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from contrastlab.config import ExperimentConfig, config_from_dict, config_hash
from contrastlab.engine.checkpoint import STATE_FILE, load_checkpoint, recover_checkpoint
from contrastlab.errors import UserError
from contrastlab.tracking.writer import flatten
from contrastlab.yamlfile import read_yaml

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
SHOWN_CHANGES = 6
_HELD: dict[Path, int] = {}  # folders this process holds: a nested claim (train() in a command) is free


class RunFolderError(UserError):
    """The run folder cannot be used as asked (exit code 2)."""


def _compared(cfg: ExperimentConfig) -> dict[str, Any]:
    """What `config_hash` covers, flattened: outputs and the run name may differ."""
    data = cfg.to_dict()
    data.pop("output", None)
    data.pop("name", None)
    return flatten(data)


def config_changes(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """`field: old -> new`, one entry per field that differs."""
    before, after = _compared(old), _compared(new)
    return [
        f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def check_run_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse a folder whose run was made with another config (reads only)."""
    stored = run_dir / CONFIG_FILE
    if stored.is_file():
        changes = config_changes(config_from_dict(read_yaml(stored), str(stored)), cfg)
        if changes:
            shown = "; ".join(changes[:SHOWN_CHANGES])
            more = f"; ... ({len(changes) - SHOWN_CHANGES} more)" if len(changes) > SHOWN_CHANGES else ""
            raise RunFolderError(
                f"{run_dir}: holds a run with another config ({shown}{more}); nothing was "
                "changed: use another --output, or the same config to resume it"
            )
    if stored.is_file():
        return  # the checkpoint's own hash is checked again when it is restored, before any write
    checkpoint = recover_checkpoint(run_dir / "checkpoints" / "last")
    if checkpoint is not None and load_checkpoint(checkpoint).get("config_hash") != config_hash(cfg):
        raise RunFolderError(
            f"{checkpoint / STATE_FILE}: this checkpoint was made with another config; nothing "
            "was changed: use another --output, or the run's own config.yaml to resume it"
        )


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"


def _open_lock(run_dir: Path) -> tuple[IO[str], bool]:
    """The locked, open lock file and whether this call created it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: a folder for the run (a file is in the way)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        created = not (run_dir / LOCK_FILE).exists()
        handle = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the whole command
    except OSError as err:
        raise RunFolderError(f"{run_dir}: a run folder this user can write ({err.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderError(
            f"{run_dir}: in use by another contrastlab process ({_holder(run_dir / LOCK_FILE)}); "
            "wait for it to finish or choose another --output"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle, created


def _undo_claim(run_dir: Path, folder_created: bool) -> None:
    """After a refusal: the lock file this claim created goes, and the folder when it made it."""
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        if folder_created and not any(run_dir.iterdir()):
            run_dir.rmdir()
    except OSError:
        pass


@contextmanager
def claim_run_folder(run_dir: str | Path, cfg: ExperimentConfig | None = None) -> Iterator[Path]:
    """Hold `run_dir` for the block (lock, then config check); yields the absolute path."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        _HELD[run_dir] += 1
        try:
            yield run_dir
        finally:
            _HELD[run_dir] -= 1
        return
    folder_created = not run_dir.exists()
    handle, lock_created = _open_lock(run_dir)
    _HELD[run_dir] = 1
    failed = True
    try:
        if cfg is not None:
            check_run_config(run_dir, cfg)
        yield run_dir
        failed = False
    finally:
        del _HELD[run_dir]
        if failed and lock_created:
            _undo_claim(run_dir, folder_created)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


__all__ = ["LOCK_FILE", "RunFolderError", "check_run_config", "claim_run_folder", "config_changes"]
