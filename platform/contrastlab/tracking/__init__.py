"""TensorBoard writing (grouped tags, typed HParams, layouts) and the run manifest."""

from contrastlab.tracking.hparams import RUN_LABELS_FILE, read_run_labels, write_run_labels
from contrastlab.tracking.layout import log_report_images
from contrastlab.tracking.manifest import git_sha, library_versions, write_manifest
from contrastlab.tracking.tags import memory_scalars, tag_for
from contrastlab.tracking.writer import RunWriter

__all__ = [
    "RUN_LABELS_FILE",
    "RunWriter",
    "git_sha",
    "library_versions",
    "log_report_images",
    "memory_scalars",
    "read_run_labels",
    "tag_for",
    "write_manifest",
    "write_run_labels",
]
