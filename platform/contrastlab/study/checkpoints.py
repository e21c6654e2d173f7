"""Bounded disk: the checkpoints a finished trial or run keeps.

Each run writes its checkpoint to its own folder (`RUN/checkpoints/last`, what `--resume`
and `contrastlab eval` read) and Ray copies it to the storage after every due epoch: Ray
Train into `STORAGE/train/<run name>/checkpoint_epoch_NNNN` (the newest two), Tune, for a
fast-path trial, into the trial's own folder `STORAGE/<experiment>/<trial>/checkpoint_NNNNNN`
(the newest one, `TUNE_COPIES_KEPT`). Once a trial or run has finished (complete, stopped by
the scheduler or failed), the rule is the same for both kinds of copies:

- its run folder keeps its last checkpoint, `checkpoints/last` (nothing else is there);
- Ray's copies are removed, unless the trial is one of the study's best `keep_checkpoints`
  complete trials, which keep Ray's copies as Ray left them. Where the run folder holds
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
# Tune's copies of a fast-path trial while it runs: the newest one is all a relaunch needs
# (the run folder holds the same checkpoint). Each new copy also makes Tune save its
# experiment state at once, so a resumed study knows every trial that had checkpointed.
TUNE_COPIES_KEPT = 1


def tune_checkpoint_config():
    """Tune's checkpoint settings for the trials of a study or an ablation. Saving the
    experiment state at each new copy is intended here: Tune's warning that it happens often
    is turned off (unless set otherwise)."""
    import os

    from ray import tune

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return tune.CheckpointConfig(num_to_keep=TUNE_COPIES_KEPT)


def _filesystem(storage):
    """(file system, root path) of `storage`: a path or URI, or such a pair already."""
    import pyarrow.fs

    if isinstance(storage, tuple):
        return storage
    return pyarrow.fs.FileSystem.from_uri(storage)


def ray_copies(storage, run_name: str) -> list[str]:
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


def prune_run(run_dir: Path, storage, run_name: str, keep_copies: bool) -> Pruned:
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


def checkpoint_epoch(directory: str | Path | None) -> int | None:
    """The epochs a checkpoint folder has trained, or None where it holds no readable one
    (its tensors are mapped, not read: only the count is)."""
    import torch

    from contrastlab.engine.checkpoint import STATE_FILE

    if directory is None:
        return None
    try:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"])
    except Exception:
        return None


def resume_point(tune_copy: str | Path | None, own: str | Path | None) -> Path | None:
    """Where a relaunched fast-path trial resumes: the newer of Tune's copy and the run
    folder's own checkpoint (the run folder's on a tie). Tune's copy can be older than the
    run folder's (a killed driver had not saved the newest one in its state) or gone; the run
    folder's can be missing or older (a relaunch on another node, with the run folder on a
    local disk)."""
    tune_epoch, own_epoch = checkpoint_epoch(tune_copy), checkpoint_epoch(own)
    if own_epoch is not None and (tune_epoch is None or own_epoch >= tune_epoch):
        return Path(own)
    return Path(tune_copy) if tune_epoch is not None else None


def take_over_checkpoint(earlier_run: Path, run_dir: Path) -> bool:
    """Move the last checkpoint of `earlier_run` into `run_dir`, which has none yet: a trial
    that continues another one's Optuna trial (`contrastlab.tuning.orphans`) resumes from it."""
    import shutil

    from contrastlab.engine.checkpoint import recover_checkpoint

    target = Path(run_dir) / RUN_CHECKPOINT
    source = recover_checkpoint(Path(earlier_run) / RUN_CHECKPOINT)
    if source is None or recover_checkpoint(target) is not None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))
    log.info("%s: continues from the checkpoint of %s", run_dir, earlier_run)
    return True


def tune_trial_storage(trial) -> tuple[tuple, str]:
    """Where Tune keeps a trial's own copies: ((file system, experiment folder), trial folder)."""
    storage = trial.storage
    return (storage.storage_filesystem, storage.experiment_fs_path), storage.trial_dir_name


__all__ = [
    "Pruned",
    "TUNE_COPIES_KEPT",
    "best_runs",
    "checkpoint_epoch",
    "prune_run",
    "ray_copies",
    "resume_point",
    "take_over_checkpoint",
    "tune_checkpoint_config",
    "tune_trial_storage",
]
