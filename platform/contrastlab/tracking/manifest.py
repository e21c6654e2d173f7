"""Every run writes what is needed to reproduce it: resolved config, seed, code and versions."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from contrastlab.config import ExperimentConfig, config_hash

_LIBRARIES = ("torch", "torchvision", "ray", "optuna", "numpy", "pydantic", "contrastlab")


def git_sha(path: str | Path | None = None) -> str | None:
    """The commit of the code that runs (with '-dirty' when files are modified), if known."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest(cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        "git_sha": git_sha(),
        "versions": library_versions(),
        "host": platform.node(),
        **(extra or {}),
    }


def write_manifest(run_dir: str | Path, cfg: ExperimentConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write `manifest.yaml` (and `config.yaml`, runnable as it is) into the run folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = manifest(cfg, extra)
    path = run_dir / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
