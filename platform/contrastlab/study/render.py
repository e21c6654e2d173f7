"""The renderings both study reports share: one list of neutral blocks, two files.

A report is built once as blocks, `(kind, *content)` with kind one of `h2`, `text`, `list`,
`table`, `image`; `markdown` and `html_page` walk the same blocks, so the two files cannot
disagree. `figure` gives a matplotlib figure on its own Agg canvas, never pyplot's: reports
are also made inside Ray workers, and a user's interactive backend and pyplot's global
figures are left alone.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

Block = tuple


def figure(width: float, height: float, rows: int = 1, cols: int = 1, sharex: bool = False) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, sharex=sharex, squeeze=False)
    return figure, list(axes.flat)


# -- rendering -------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(title: str, facts: list[str], blocks: list[Block]) -> str:
    lines = [f"# {title}", "", *[f"- {fact}" for fact in facts], ""]
    for kind, *content in blocks:
        if kind == "h2":
            lines += [f"## {content[0]}", ""]
        elif kind == "text":
            lines += [content[0], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in content[0]] + [""]
        elif kind == "table":
            head, rows = content
            lines += ["| " + " | ".join(map(_cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
            lines.append("")
        elif kind == "image":
            lines += [f"![{content[0]}]({content[0]})", ""]
    return "\n".join(lines)


def _text(value: Any) -> str:
    escaped = html.escape(str(value))
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def html_page(title: str, facts: list[str], blocks: list[Block], out_dir: Path) -> str:
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>{''.join(f'<li>{_text(f)}</li>' for f in facts)}</ul>",
    ]
    for kind, *content in blocks:
        if kind == "h2":
            parts.append(f"<h2>{_text(content[0])}</h2>")
        elif kind == "text":
            parts.append(f"<p>{_text(content[0])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_text(item)}</li>" for item in content[0]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_text(cell)}</th>" for cell in content[0])
            body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in content[1])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "image":
            # Embedded, so the HTML file can be mailed or attached on its own.
            data = base64.b64encode((out_dir / content[0]).read_bytes()).decode("ascii")
            parts.append(f"<p><img alt='{html.escape(content[0])}' src='data:image/png;base64,{data}'></p>")
    return "".join(parts) + "</body></html>\n"


__all__ = ["Block", "figure", "html_page", "markdown"]
