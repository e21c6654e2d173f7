"""TensorBoard's HParams table: typed sessions, column declarations, run labels.

Each run holds one session (its values, written once, when it ends). A study or an ablation
writes the table's declaration once, at the root of its TensorBoard folder: the columns
(what varies across its runs first, each with its type: booleans as booleans, numbers as
numbers, text and `null` as categories) and the metric columns (scalar tags whose last
value the table shows). A value is typed by `hparam_value`: a `null` becomes the category
`"null"`, a list or mapping its JSON text.

A higher layer can give a run labels before it starts (`write_run_labels`: the ablation's
variant, seed and component switches); the run's session puts them before its config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

RUN_LABELS_FILE = "run_labels.json"
NULL = "null"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def hparam_value(value: Any) -> bool | int | float | str:
    """A value as the HParams table holds it: booleans, numbers and text as they are, `null`
    as the category "null", anything else (lists, mappings) as its JSON text."""
    if value is None:
        return NULL
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else str(value)
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError:
        return str(value)


def as_category(value: Any) -> str:
    """A value of a mixed column (`null` or numbers, text or numbers): its category text."""
    typed = hparam_value(value)
    return typed if isinstance(typed, str) else json.dumps(typed)


def column_kind(values: Iterable[Any]) -> str:
    """ "bool", "number" or "category": the one type every value of a column can have."""
    typed = [hparam_value(v) for v in values]
    if typed and all(isinstance(v, bool) for v in typed):
        return "bool"
    if typed and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in typed):
        return "number"
    return "category"


def typed_values(values: dict[str, Any], kinds: dict[str, str] | None = None) -> dict[str, bool | float | str]:
    """The session values of `values`; a column declared a category holds every value as text."""
    kinds = kinds or {}
    return {
        name: as_category(value) if kinds.get(name) == "category" else hparam_value(value)
        for name, value in values.items()
    }


def domain(kind: str, values: Iterable[Any]) -> hp.Domain | None:
    values = list(values)
    if kind == "bool":
        return hp.Discrete([False, True])
    if kind == "number":
        numbers = sorted({float(v) for v in values})
        return hp.Discrete(numbers) if numbers else None
    return hp.Discrete(sorted({as_category(v) for v in values}))


def columns(rows: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> list[tuple[str, str, list[Any], bool]]:
    """(name, kind, values, leading) of every column of `rows`: the `first` names, then the
    columns whose value differs between rows (both `leading`), then the constant ones."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    values = {name: [row.get(name) for row in rows if name in row] for name in names}
    varying = [n for n in names if len({json.dumps(hparam_value(v)) for v in values[n]}) > 1]
    leading = set(first) | set(varying)
    ordered = list(dict.fromkeys([*(n for n in first if n in values), *varying, *names]))
    return [(name, column_kind(values[name]), values[name], name in leading) for name in ordered]


def experiment_summary(
    cols: Sequence[tuple[str, str, list[Any], bool]],
    metrics: Sequence[str],
    descriptions: dict[str, str] | None = None,
) -> Summary:
    """The table's declaration: its columns, typed, and the metric tags it shows.

    TensorBoard lists the columns marked `differs` first (then by name): the leading ones
    (what the study varies) are marked so."""
    descriptions = descriptions or {}
    hparams = [
        hp.HParam(name, domain(kind, values), description=descriptions.get(name)) for name, kind, values, _ in cols
    ]
    metric_infos = [hp.Metric(tag, display_name=tag) for tag in dict.fromkeys(metrics)]
    return mark_leading(hp.hparams_config_pb(hparams, metric_infos), {name for name, *_, lead in cols if lead})


def mark_leading(summary: Summary, names: set[str]) -> Summary:
    """Set `differs` on the declared columns in `names` (hp.HParam has no such argument)."""
    value = summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()
    return summary


def session_summary(values: dict[str, Any], kinds: dict[str, str] | None = None, group: str | None = None) -> Summary:
    """One run's session: its typed values (all of a category column's values as text)."""
    return hp.hparams_pb(typed_values(values, kinds), trial_id=group)


def write_run_labels(run_dir: str | Path, labels: dict[str, Any], categories: Sequence[str] = ()) -> None:
    """Labels for a run's session, written into its folder before it starts; `categories`
    names the columns whose every value the session holds as text (a column that mixes
    `null` or text with numbers across the study's runs)."""
    path = Path(run_dir) / RUN_LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"labels": labels, "categories": list(categories)}
    path.write_text(json.dumps(payload, indent=1, default=str))


def read_run_labels(run_dir: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(labels, category columns) of a run folder; empty when it has none or they are unreadable."""
    path = Path(run_dir) / RUN_LABELS_FILE
    try:
        payload = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}, []
    if not isinstance(payload, dict):
        return {}, []
    labels, categories = payload.get("labels"), payload.get("categories")
    return (labels if isinstance(labels, dict) else {}), [str(c) for c in categories or [] if isinstance(c, str)]


def run_session_values(config: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """A run's session values: its labels, then its config under the config's field names."""
    return {**labels, **{k: v for k, v in flatten(config).items() if k not in labels}}


__all__ = [
    "NULL",
    "as_category",
    "RUN_LABELS_FILE",
    "column_kind",
    "columns",
    "experiment_summary",
    "flatten",
    "hparam_value",
    "mark_leading",
    "read_run_labels",
    "run_session_values",
    "session_summary",
    "typed_values",
    "write_run_labels",
]
