"""Atomic checkpoints that hold everything needed to resume a run exactly.

Saved with `torch.save` and loaded with `torch.load(weights_only=True)`: a checkpoint
holds only tensors, numbers, strings, lists and dicts, so loading one runs no code.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


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


def save_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write `state` into `directory` atomically: a crash leaves the old checkpoint intact."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    torch.save(state, staging / STATE_FILE)
    old = directory.with_name(f".{directory.name}-old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(staging, directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here (expected {STATE_FILE})")
    return torch.load(path, map_location=map_location, weights_only=True)


def find_checkpoint(path: str | Path) -> Path:
    """Accept a run folder, a checkpoint folder or a state file; return the checkpoint folder."""
    path = Path(path)
    candidates = [path, path / "checkpoints" / "last", path.parent]
    for candidate in candidates:
        if (candidate / STATE_FILE).is_file():
            return candidate
    looked = ", ".join(map(str, candidates))
    raise FileNotFoundError(f"{path}: no checkpoint found (looked for {STATE_FILE} in {looked})")
