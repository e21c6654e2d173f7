"""The `space` section of a study spec as pydantic models, turned into a `SearchSpace`.

Each parameter definition is one model, picked by its `type` (float, int, categorical,
list, composition); the models check the shape and the values of one definition, `parse_space` then
checks what involves several parameters (condition targets, list lengths, circular
conditions) and orders them so that each comes after the ones it depends on.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, TypeAdapter, field_validator, model_validator

from contrastlab.errors import ConfigError
from contrastlab.study.validation import Section, issue, validate
from contrastlab.tuning.composition import Total
from contrastlab.tuning.space import (
    KINDS,
    SEQUENCES,
    Condition,
    ListLength,
    Parameter,
    SearchSpace,
    check_composition_fits,
    choice_label,
)


class ConditionDef(Section):
    """`{param: PATH, equals: VALUE}` or `{param: PATH, in: [VALUES]}`."""

    _shape: ClassVar[str] = "a mapping {param: PATH, equals: VALUE} or {param: PATH, in: [VALUES]}"
    param: str
    equals: Any = None
    in_: Any = Field(None, alias="in")

    @classmethod
    def _unknown(cls, allowed: list[str]) -> str:
        return "no such key (allowed: param, equals, in)"

    @classmethod
    def _check_shape(cls, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("param"), str):
            raise issue(cls._shape)

    @model_validator(mode="after")
    def _exactly_one(self) -> ConditionDef:
        if ("equals" in self.model_fields_set) == ("in_" in self.model_fields_set):
            raise issue("exactly one of 'equals: VALUE' or 'in: [VALUES]'")
        if "in_" in self.model_fields_set and (not isinstance(self.in_, list) or not self.in_):
            raise issue("a non-empty list of values", at="in")
        return self

    def build(self) -> Condition:
        return Condition(self.param, tuple(self.in_) if "in_" in self.model_fields_set else (self.equals,))


class _ParameterDef(Section):
    kind: ClassVar[str]
    _required_keys: ClassVar[dict[str, str]] = {}
    condition: ConditionDef | None = None

    @field_validator("condition", mode="before")
    @classmethod
    def _given_condition(cls, value: Any) -> Any:
        if value is None:  # `condition: null` is a mistake, not "no condition"
            raise issue(ConditionDef._shape)
        return value

    def _check_given(self) -> None:
        """Keys whose absence deserves more than pydantic's 'field required' (checked after
        the fields, so that a bad condition is reported first)."""
        for key, expected in self._required_keys.items():
            if key not in self.model_fields_set:
                raise issue(expected, at=key)

    @classmethod
    def _unknown(cls, allowed: list[str]) -> str:
        return f"no such key for a {cls.kind} parameter (allowed: {', '.join(allowed)})"


def _number(value: Any, at: str) -> Any:
    # PyYAML reads `1e-6` (no dot) as a string; accept it as the number it means.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise issue(f"a number (got {value!r})", at=at) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise issue(f"a finite number (got {value!r})", at=at)
    return value


class _NumericDef(_ParameterDef):
    low: Any = None
    high: Any = None
    step: Any = None
    log: Any = False

    _required_keys: ClassVar[dict[str, str]] = {
        "low": "a value (required for float and int parameters)",
        "high": "a value (required for float and int parameters)",
    }

    @model_validator(mode="after")
    def _range(self) -> _NumericDef:
        # In the order a person reads them: both bounds given, numbers, then their relations.
        self._check_given()
        self.low, self.high = _number(self.low, "low"), _number(self.high, "high")
        self.step = None if self.step is None else _number(self.step, "step")
        if not isinstance(self.log, bool):
            raise issue(f"true or false (got {self.log!r})", at="log")
        if self.kind == "int":
            for key in ("low", "high", "step"):
                value = getattr(self, key)
                if value is not None and float(value) != int(value):
                    raise issue(f"an integer for an int parameter (got {value!r})", at=key)
            self.low, self.high = int(self.low), int(self.high)
            self.step = int(self.step) if self.step is not None else None
        if self.low > self.high:
            raise issue(f"low <= high (got low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise issue(f"a positive bound on a log scale (got {self.low})", at="low")
        if self.step is not None and self.step <= 0:
            raise issue(f"a positive step (got {self.step})", at="step")
        if self.log and self.step is not None and not (self.kind == "int" and self.step == 1):
            raise issue("no step on a log scale (Optuna samples log ranges continuously)", at="step")
        return self

    def build(self, path: str) -> Parameter:
        condition = self.condition.build() if self.condition else None
        return Parameter(
            path, self.kind, low=self.low, high=self.high, log=self.log, step=self.step, condition=condition
        )


class FloatDef(_NumericDef):
    kind: ClassVar[str] = "float"
    type: Literal["float"]


class IntDef(_NumericDef):
    kind: ClassVar[str] = "int"
    type: Literal["int"]


class CategoricalDef(_ParameterDef):
    kind: ClassVar[str] = "categorical"
    type: Literal["categorical"]
    choices: Any = Field(None, validate_default=True)

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: Any) -> tuple[Any, ...]:
        if not isinstance(choices, list) or not choices:
            raise issue("a non-empty list of values")
        labels = [choice_label(c) for c in choices]
        duplicates = sorted({str(lab) for lab in labels if labels.count(lab) > 1})
        if duplicates:
            raise issue(f"distinct values (repeated: {', '.join(duplicates)})")
        return tuple(choices)

    def build(self, path: str) -> Parameter:
        return Parameter(
            path, self.kind, choices=self.choices, condition=self.condition.build() if self.condition else None
        )


def _length(raw: Any) -> ListLength:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise issue(f"a length of at least 1 (got {raw})", at="length")
        return ListLength(fixed=raw)
    if isinstance(raw, str):
        return ListLength(param=raw)
    if isinstance(raw, dict) and isinstance(raw.get("param"), str) and set(raw) <= {"param", "add"}:
        add = raw.get("add", 0)
        if not isinstance(add, int) or isinstance(add, bool):
            raise issue(f"an integer (got {add!r})", at="length.add")
        return ListLength(param=raw["param"], add=add)
    raise issue("an int, a parameter path, or {param: PATH, add: INT}", at="length")


class ListDef(_ParameterDef):
    kind: ClassVar[str] = "list"
    type: Literal["list"]
    item: ParameterDef | None = None
    length: Any = None

    _required_keys: ClassVar[dict[str, str]] = {"item": "the parameter of each element (a float, int or categorical)"}

    @field_validator("item", mode="before")
    @classmethod
    def _given_item(cls, value: Any) -> Any:
        return _kind(value)

    @model_validator(mode="after")
    def _scalar_item(self) -> ListDef:
        self._check_given()
        if self.item.kind in SEQUENCES or self.item.condition is not None:
            raise issue("a float, int or categorical parameter without a condition", at="item")
        if not isinstance(self.length, ListLength):
            self.length = _length(self.length)
        return self

    def build(self, path: str) -> Parameter:
        condition = self.condition.build() if self.condition else None
        return Parameter(path, "list", item=self.item.build(path), length=self.length, condition=condition)


def _whole(value: Any, at: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise issue(f"an integer of at least {least} (got {value!r})", at=at)
    return value


class CompositionDef(_ParameterDef):
    """`length` parts (as a list's length), each at least `min`, summing to `total`: an
    integer, or the dotted path of an integer field of the experiment (`optim.epochs`)."""

    kind: ClassVar[str] = "composition"
    type: Literal["composition"]
    length: Any = None
    total: Any = None
    min: Any = 1

    _required_keys: ClassVar[dict[str, str]] = {
        "length": "the number of parts: an int, a parameter path, or {param: PATH, add: INT}",
        "total": "the sum of the parts: an integer, or a config path such as optim.epochs",
    }

    @model_validator(mode="after")
    def _parts(self) -> CompositionDef:
        self._check_given()
        if not isinstance(self.length, ListLength):
            self.length = _length(self.length)
        self.min = _whole(self.min, "min", 0)
        if isinstance(self.total, str):
            if not all(self.total.split(".")):
                raise issue(
                    f"an integer, or a dotted config path such as optim.epochs (got {self.total!r})", at="total"
                )
            self.total = Total(path=self.total)
        elif not isinstance(self.total, Total):
            self.total = Total(value=_whole(self.total, "total", 1))
        return self

    def build(self, path: str) -> Parameter:
        condition = self.condition.build() if self.condition else None
        return Parameter(
            path, "composition", length=self.length, total=self.total, minimum=self.min, condition=condition
        )


def _kind(data: Any) -> Any:
    if not isinstance(data, dict):
        raise issue("a mapping with a 'type' (float, int, categorical, list or composition)")
    if data.get("type") not in KINDS:
        raise issue(f"one of {', '.join(KINDS)} (got {data.get('type')!r})", at="type")
    return data


ParameterDef = Annotated[
    Annotated[Union[FloatDef, IntDef, CategoricalDef, ListDef, CompositionDef], Field(discriminator="type")],  # noqa: UP007
    BeforeValidator(_kind),
]
ListDef.model_rebuild()
PARAMETER = TypeAdapter(ParameterDef)


def parse_parameter(path: str, raw: Any, source: str, where: str) -> Parameter:
    """One parameter definition of the space, checked on its own."""
    return validate(PARAMETER, raw, source, where, hidden=KINDS).build(path)


def parse_space(raw: Any, source: str) -> SearchSpace:
    """Parse and check the `space` mapping of a spec (structure only; see `check_against_config`)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(source, "space", "a non-empty mapping of config paths to parameter definitions")
    params: dict[str, Parameter] = {}
    for path, definition in raw.items():
        if not isinstance(path, str) or not path or not all(path.split(".")):
            raise ConfigError(source, f"space.{path}", "a dotted config path such as method.temperature")
        params[path] = parse_parameter(path, definition, source, f"space.{path}")
    _check_references(params, source)
    space = SearchSpace(tuple(_dependency_order(params, source)))
    for param in space.parameters:
        if param.kind == "composition" and param.total.path is None:
            check_composition_fits(space, param, source)  # a path's total is known with the experiment
    return space


def _check_references(params: dict[str, Parameter], source: str) -> None:
    for param in params.values():
        where = f"space.{param.path}"
        if param.condition:
            target = params.get(param.condition.param)
            if target is None:
                raise ConfigError(
                    source,
                    f"{where}.condition.param",
                    f"a parameter of this space (no parameter {param.condition.param!r})",
                )
            if target.kind in SEQUENCES:
                raise ConfigError(
                    source,
                    f"{where}.condition.param",
                    "a scalar parameter (conditions on lists and compositions are not supported)",
                )
            if target.kind == "categorical":
                labels = [choice_label(c) for c in target.choices]
                missing = [v for v in param.condition.values if choice_label(v) not in labels]
                if missing:
                    raise ConfigError(
                        source,
                        f"{where}.condition",
                        f"values among the choices of {target.path} (never chosen: {missing})",
                    )
        if param.length is not None and param.length.param:
            target = params.get(param.length.param)
            if target is None or target.kind not in ("int", "categorical"):
                raise ConfigError(
                    source, f"{where}.length", f"an int parameter of this space (got {param.length.param!r})"
                )
            extremes = target.extreme_values()
            integers = all(isinstance(v, int) and not isinstance(v, bool) for v in extremes)
            if not integers or min(v + param.length.add for v in extremes) < 0:
                raise ConfigError(source, f"{where}.length", f"non-negative integer lengths from {target.path}")


def _dependency_order(params: dict[str, Parameter], source: str) -> list[Parameter]:
    """Keep the file's order where possible; move a parameter after the ones it depends on."""
    ordered: list[Parameter] = []
    state: dict[str, str] = {}

    def visit(path: str, chain: list[str]) -> None:
        if state.get(path) == "done":
            return
        if state.get(path) == "visiting":
            cycle = " -> ".join([*chain[chain.index(path) :], path])
            raise ConfigError(source, f"space.{path}", f"no circular conditions ({cycle})")
        state[path] = "visiting"
        for name in params[path].depends_on():
            if name in params:  # a composition's total may be a field the space does not sample
                visit(name, [*chain, path])
        state[path] = "done"
        ordered.append(params[path])

    for path in params:
        visit(path, [])
    return ordered


__all__ = ["ConditionDef", "ParameterDef", "parse_parameter", "parse_space"]
