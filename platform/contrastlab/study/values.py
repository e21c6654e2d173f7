"""Value equality and names shared by studies and ablations."""

from __future__ import annotations

import re
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def same(a: Any, b: Any) -> bool:
    """Equality of spec values: YAML `true` must not equal 1, and 1 must equal 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def safe_name(name: str) -> str:
    """`name` as a folder or run name: runs of other characters become one `_`."""
    return _UNSAFE.sub("_", name)


__all__ = ["safe_name", "same"]
