"""Spec sections as pydantic models, with the project's one-line errors.

A model states the shape of a section; its validators raise `issue(expected, at)` where the
project's message says more than pydantic's own. `config_error` turns the first error of a
`ValidationError` into `ConfigError(source, field, expected)`: the field is the dotted path
inside the spec (`space.optim.lr.low`, `components[0].values`), the text says what was
expected, on one line.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from contrastlab.errors import ConfigError

ISSUE = "spec"


def issue(expected: str, at: str | int | None = None) -> PydanticCustomError:
    """A validation error with the project's wording; `at` is a key below the validated value."""
    return PydanticCustomError(ISSUE, "{expected}", {"expected": expected, "at": at})


class Section(BaseModel):
    """A spec section: a mapping of known keys. `_shape` says what a value that is no such
    mapping should have been; `_unknown` what to say of a key the section does not have."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _shape: ClassVar[str] = "a mapping"
    _unknown_names_key: ClassVar[bool] = True  # the error's field is the unknown key (else the section)

    @classmethod
    def _unknown(cls, allowed: list[str]) -> str:
        return f"no such key (allowed: {', '.join(allowed)})"

    @classmethod
    def _check_shape(cls, data: Any) -> None:
        if not isinstance(data, dict):
            raise issue(cls._shape)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        cls._check_shape(data)
        allowed = sorted(f.alias or name for name, f in cls.model_fields.items())
        unknown = sorted(set(data) - set(allowed), key=str)
        if unknown:
            raise issue(cls._unknown(allowed), at=unknown[0] if cls._unknown_names_key else None)
        return data


def join(prefix: str, parts: Collection[Any]) -> str:
    """`prefix.a.b[0].c`: names joined with dots, list positions in brackets."""
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def config_error(err: ValidationError, source: str, prefix: str = "", hidden: Collection[str] = ()) -> ConfigError:
    """The first error as one line; `hidden` are location parts that are no spec keys (union tags)."""
    first = err.errors()[0]
    parts = [p for p in first["loc"] if not (isinstance(p, str) and (p in hidden or p.startswith("function-")))]
    ctx = first.get("ctx") or {}
    if first["type"] == ISSUE:
        if ctx.get("at") is not None:
            parts.append(ctx["at"])
        return ConfigError(source, join(prefix, parts), ctx["expected"])
    if first["type"] == "missing":
        expected = "a value (required)"
    elif first["type"] == "extra_forbidden":
        expected = "no such field (unknown field)"
    else:
        expected = f"{first['msg'].removeprefix('Value error, ')} (got {first.get('input')!r})"
    return ConfigError(source, join(prefix, parts), expected)


def validate(schema: Any, data: Any, source: str, prefix: str = "", hidden: Collection[str] = ()) -> Any:
    """`data` validated as `schema` (a model class or a type), or the one-line `ConfigError`."""
    adapter = schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)
    try:
        return adapter.validate_python(data)
    except ValidationError as err:
        raise config_error(err, source, prefix, hidden) from None


__all__ = ["Section", "config_error", "issue", "join", "validate"]
