"""TensorBoard for one run: scalars under the config's own names, hparams at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class RunWriter:
    """A SummaryWriter that does nothing when disabled (non-main workers, tests).

    The event file is created at the first write, not here: a run refused before its
    first epoch (another config in the folder, a bad checkpoint) leaves no trace.
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

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if not self._writer:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}{name}", float(value), step)

    def text(self, tag: str, body: str, step: int = 0) -> None:
        if self._writer:
            self._writer.add_text(tag, body, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Write the hparams summary into this run's own folder (one row per run)."""
        if not self._writer:
            return
        clean = {k: hparam_value(v) for k, v in flatten(params).items() if v is not None}
        final = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        experiment, session_start, session_end = hparams(clean, final)
        file_writer = self._writer.file_writer
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for name, value in final.items():
            self._writer.add_scalar(name, value, 0)

    def flush(self) -> None:
        if self._opened and self._writer:  # nothing written yet: nothing to flush
            self._writer.flush()

    def close(self) -> None:
        if self._opened and self._writer:
            self._writer.close()
        self._closed = True
