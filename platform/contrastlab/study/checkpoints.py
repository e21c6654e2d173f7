"""Bounded disk: the checkpoints a finished trial or run keeps.

Each run writes its checkpoint to its own folder (`RUN/checkpoints/last`, what `--resume`
and `contrastlab eval` read) and Ray Train copies it to the storage after every due epoch
(`STORAGE/train/<run name>/checkpoint_epoch_NNNN`, the newest few). Once a trial or run has
finished (complete, stopped by the scheduler or failed), the rule is:

- its run folder keeps its last checkpoint, `checkpoints/last` (nothing else is there);
- Ray's copies are removed, unless the trial is one of the study's best `keep_checkpoints`
  complete trials, which keep Ray's copies as Train left them. Where the run folder holds
  no checkpoint (a folder on another node's disk), Ray's newest copy stays as the last one.

Running trials are never touched, nor failed ablation runs (`ablate --resume` continues
them from Ray's copies); a failed tuning trial is never resumed. Local paths and URIs
(`s3://`, `gs://`) both work.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("contrastlab")
RAY_CHECKPOINT = re.compile(r"^checkpoint_")
RUN_CHECKPOINT = Path("checkpoints") / "last"


def _filesystem(storage: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(storage)


def ray_copies(storage: str, run_name: str) -> list[str]:
    """Ray's checkpoint folders of one run (paths on the storage's file system), oldest first."""
    import pyarrow.fs

    fs, root = _filesystem(storage)
    folder = f"{root.rstrip('/')}/{run_name}"
    infos = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    names = [i.path for i in infos if i.type == pyarrow.fs.FileType.Directory and RAY_CHECKPOINT.match(i.base_name)]
    return sorted(names)


@dataclass
class Pruned:
    run_name: str
    removed: int
    kept: int


def prune_run(run_dir: Path, storage: str, run_name: str, keep_copies: bool) -> Pruned:
    """Apply the rule to one finished run: Ray's copies go unless `keep_copies` (a best trial)
    or the run folder has no checkpoint of its own (then the newest copy is its last)."""
    copies = ray_copies(storage, run_name)
    if keep_copies:
        return Pruned(run_name, 0, len(copies))
    has_own = (Path(run_dir) / RUN_CHECKPOINT).is_dir()
    doomed = copies if has_own else copies[:-1]
    if doomed:
        fs, _ = _filesystem(storage)
        for path in doomed:
            fs.delete_dir(path)
        log.debug("%s: removed %d of Ray's checkpoint copies", run_name, len(doomed))
    return Pruned(run_name, len(doomed), len(copies) - len(doomed))


def best_runs(values: dict[str, float], mode: str, keep: int) -> set[str]:
    """The `keep` best of `values` (run name -> objective of a complete trial)."""
    ranked = sorted(values, key=lambda name: values[name], reverse=mode == "max")
    return set(ranked[:keep])


__all__ = ["Pruned", "best_runs", "prune_run", "ray_copies"]
