"""TensorBoard for one run: grouped scalars every epoch, one typed HParams session at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from contrastlab.tracking.hparams import flatten, hparam_value, read_run_labels, run_session_values, session_summary
from contrastlab.tracking.tags import grouped


class RunWriter:
    """A SummaryWriter that does nothing when disabled (non-main workers, tests).

    Scalars are written under their grouped tags (`contrastlab.tracking.tags`); the metric
    keys themselves are unchanged. The event file is created at the first write, not here:
    a run refused before its first epoch (another config in the folder, a bad checkpoint)
    leaves no trace.
    """

    def __init__(self, log_dir: str | Path | None, enabled: bool = True):
        self.enabled = enabled and log_dir is not None
        self.log_dir = log_dir
        self._opened = False
        self._closed = False

    @property
    def _writer(self) -> SummaryWriter | None:
        if self.enabled and not self._opened and not self._closed:
            self._writer_instance = SummaryWriter(str(self.log_dir))
            self._opened = True
        return getattr(self, "_writer_instance", None) if not self._closed else None

    def scalars(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        if not self._writer:
            return
        for tag, value in grouped({f"{prefix}{name}": value for name, value in values.items()}).items():
            self._writer.add_scalar(tag, value, step)

    def text(self, tag: str, body: str, step: int = 0) -> None:
        if self._writer:
            self._writer.add_text(tag, body, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float] | None = None, name: str | None = None) -> None:
        """This run's one HParams session: the labels a study gave the run folder (its
        parent of `tensorboard/`), then the config's fields, typed. The table's metric
        columns read the last value of the run's own scalars; `metrics` is not written again."""
        if not self._writer:
            return
        labels, categories = read_run_labels(Path(str(self.log_dir)).parent)
        values = run_session_values(params, labels)
        kinds = dict.fromkeys(categories, "category")
        self._writer.file_writer.add_summary(session_summary(values, kinds, group=name or params.get("name") or None))

    def flush(self) -> None:
        if self._opened and self._writer:  # nothing written yet: nothing to flush
            self._writer.flush()

    def close(self) -> None:
        if self._opened and self._writer:
            self._writer.close()
        self._closed = True


__all__ = ["RunWriter", "flatten", "hparam_value"]
