"""Study- and ablation-level TensorBoard: custom-scalars layouts, report figures, event files.

The custom-scalars dashboard reads a layout from any run of the logdir: categories of
charts, each a multiline chart (every run's scalars whose tag matches a regex, overlaid)
or a margin chart (a value with a lower and an upper bound drawn as a band). A study or
an ablation writes its layout, its HParams declaration and its report figures into one
event file at the root of its TensorBoard folder, replaced on every write.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Iterable, Sequence

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

EVENT_PREFIX = "events.out.tfevents."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def exact(tag: str) -> str:
    """A regex that matches `tag` only."""
    return f"^{re.escape(tag)}$"


def multiline(title: str, tags: Sequence[str]) -> layout_pb2.Chart:
    """Every run's scalars under `tags` (regexes), overlaid in one chart."""
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))


def margin(title: str, series: Sequence[tuple[str, str, str]]) -> layout_pb2.Chart:
    """(value, lower, upper) tags per series: each drawn as a line with its band."""
    content = layout_pb2.MarginChartContent(
        series=[layout_pb2.MarginChartContent.Series(value=v, lower=lo, upper=hi) for v, lo, hi in series]
    )
    return layout_pb2.Chart(title=title, margin=content)


def category(title: str, charts: Sequence[layout_pb2.Chart], closed: bool = False) -> layout_pb2.Category:
    return layout_pb2.Category(title=title, chart=list(charts), closed=closed)


def layout_summary(categories: Sequence[layout_pb2.Category]) -> Summary:
    """The custom-scalars layout as a summary (what the plugin's own `pb` writes, without TensorFlow)."""
    layout = layout_pb2.Layout(category=list(categories))
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()], tensor_shape=TensorShapeProto())
    return Summary(
        value=[
            Summary.Value(
                tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                tensor=tensor,
                metadata=custom_scalar_metadata.create_summary_metadata(),
            )
        ]
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def image_summary(tag: str, data: bytes) -> Summary:
    """An encoded PNG as an image summary (shown in the Images dashboard)."""
    width, height = png_size(data)
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def report_images(report_dir: str | Path, prefix: str = "report") -> list[Summary]:
    """An image summary per PNG in `report_dir` (sorted by name; none when it is absent)."""
    folder = Path(report_dir)
    summaries = []
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        try:
            summaries.append(image_summary(f"{prefix}/{path.stem}", path.read_bytes()))
        except (OSError, ValueError):
            continue  # an unreadable or truncated figure is left out, not fatal
    return summaries


def scalar_summary(tag: str, value: float) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])


def replace_events(folder: str | Path, summaries: Iterable[Summary | tuple[Summary, int]]) -> Path:
    """Write `summaries` (a summary, or (summary, step)) as the only event file directly in
    `folder` (sub-folders, the runs, are left alone)."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{EVENT_PREFIX}*"):
        if old.is_file():
            old.unlink()
    writer = SummaryWriter(str(folder))
    try:
        for item in summaries:
            summary, step = item if isinstance(item, tuple) else (item, 0)
            writer.file_writer.add_summary(summary, step)
        path = Path(writer.file_writer.get_logdir())
    finally:
        writer.close()
    return path


def log_report_images(tensorboard_dir: str | Path, report_dir: str | Path, run: str = "report") -> int:
    """Log the PNG figures of `report_dir` as images in the `run` folder of `tensorboard_dir`
    (replacing what an earlier call logged there); returns how many were logged."""
    images = report_images(report_dir)
    if images:
        replace_events(Path(tensorboard_dir) / run, images)
    return len(images)


__all__ = [
    "category",
    "exact",
    "image_summary",
    "layout_summary",
    "log_report_images",
    "margin",
    "multiline",
    "replace_events",
    "report_images",
    "scalar_summary",
]
