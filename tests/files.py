"""Writing test inputs and comparing folders before and after a command."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
import yaml


def put(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `dotted` set (sections created as needed)."""
    data = copy.deepcopy(data)
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def write(path: Path, content: str | bytes | dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = yaml.safe_dump(content, sort_keys=False)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def valid_state(cfg_hash: str) -> dict[str, Any]:
    return {"method": {}, "epoch": 1, "step": 8, "config_hash": cfg_hash, "extra": {}}


def state_bytes(tmp: Path, state: Any) -> bytes:
    scratch = tmp / "scratch.pt"
    torch.save(state, scratch)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


class Evil:
    """Pickles to a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file below `path` with its bytes (None: the path does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(path.rglob("*"))}
