"""What an ablation has already computed: a JSON index keyed by (config hash, code version).

A run is reused only when both its resolved config and the code that would run it are the
same as when it was computed; anything else is computed again. The index lives in the
output folder (`cache.json`), is rewritten atomically after every finished run, and holds
each run's final metrics and curves, so a study interrupted halfway keeps what it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from contrastlab.config import ConfigError
from contrastlab.tracking import git_sha

CACHE_FILE = "cache.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def source_digest(root: str | Path = PACKAGE_DIR) -> str:
    """Hash of every Python file of the package (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version(root: str | Path = PACKAGE_DIR) -> str:
    """The git commit (or the package version outside git) plus a digest of the sources.

    A commit alone does not identify what ran in a tree with uncommitted or untracked edits
    (git marks only tracked edits as dirty), so the sources' digest is part of the version.
    """
    sha = git_sha(root)
    if sha is None:
        try:
            sha = f"contrastlab-{metadata.version('contrastlab')}"
        except metadata.PackageNotFoundError:
            sha = "contrastlab-unknown"
    return f"{sha}+src.{source_digest(root)}"


def _finite(value: Any) -> Any:
    """JSON has no NaN: a non-finite number is stored as null (read back as missing)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RunCache:
    """`runs` and `searches` entries by "<config hash>@<code version>"."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {"format": 1, "runs": {}, "searches": {}}
        if self.path.is_file():
            self.data = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            # Recomputing silently would throw away finished work; make the user look.
            raise ConfigError(str(self.path), "", f"valid JSON ({err}); repair or remove the file") from None
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
            raise ConfigError(str(self.path), "runs", "the ablation cache index (a mapping of runs)")
        data.setdefault("searches", {})
        return data

    @staticmethod
    def key(config_key: str, code: str) -> str:
        return f"{config_key}@{code}"

    def run(self, config_key: str, code: str) -> dict[str, Any] | None:
        return self.data["runs"].get(self.key(config_key, code))

    def search(self, search_key: str, code: str) -> dict[str, Any] | None:
        return self.data["searches"].get(self.key(search_key, code))

    def put_run(self, config_key: str, code: str, entry: dict[str, Any]) -> None:
        self.data["runs"][self.key(config_key, code)] = _finite(
            {**entry, "config_hash": config_key, "code_version": code}
        )
        self.save()

    def put_search(self, search_key: str, code: str, entry: dict[str, Any]) -> None:
        self.data["searches"][self.key(search_key, code)] = _finite({**entry, "code_version": code})
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(temporary, self.path)


__all__ = ["CACHE_FILE", "RunCache", "code_version", "source_digest"]
