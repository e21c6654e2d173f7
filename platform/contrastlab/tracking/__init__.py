"""TensorBoard writing and the run manifest."""

from contrastlab.tracking.manifest import git_sha, library_versions, write_manifest
from contrastlab.tracking.writer import RunWriter

__all__ = ["RunWriter", "git_sha", "library_versions", "write_manifest"]
