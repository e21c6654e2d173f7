"""Search spaces: the `space` section of a study spec, and its Optuna define-by-run function.

A parameter is named by the config path it sets (`method.temperature`), so the names in
the YAML, in Optuna's database, in Tune's trial table and in TensorBoard are the same.
Kinds: `float` and `int` (linear or log, optional step), `categorical` (any YAML values;
lists and mappings are stored in Optuna as their JSON text), and `list` (a list-valued
field whose length may come from another parameter, one Optuna parameter per element,
e.g. MCL's epochs per stage). `condition` makes a parameter exist only when another one
has a given value; Optuna then never sees it in the trials where it is off.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.study.values import same

KINDS = ("float", "int", "categorical", "list")
SCALAR_TYPES = (type(None), bool, int, float, str)
_KEYS = {
    "float": {"type", "low", "high", "log", "step", "condition"},
    "int": {"type", "low", "high", "log", "step", "condition"},
    "categorical": {"type", "choices", "condition"},
    "list": {"type", "length", "item", "condition"},
}


@dataclass(frozen=True)
class Condition:
    """`param` must be active and its value one of `values` for the owner to exist."""

    param: str
    values: tuple[Any, ...]

    def holds(self, chosen: dict[str, Any]) -> bool:
        return self.param in chosen and any(same(chosen[self.param], v) for v in self.values)

    def to_dict(self) -> dict[str, Any]:
        if len(self.values) == 1:
            return {"param": self.param, "equals": self.values[0]}
        return {"param": self.param, "in": list(self.values)}


@dataclass(frozen=True)
class ListLength:
    """A fixed length, or the value of an int parameter plus `add` (stages + 1 = schedules)."""

    fixed: int | None = None
    param: str | None = None
    add: int = 0

    def resolve(self, chosen: dict[str, Any]) -> int | None:
        if self.param is None:
            return self.fixed
        if self.param not in chosen:
            return None
        return int(chosen[self.param]) + self.add

    def to_dict(self) -> int | dict[str, Any]:
        return self.fixed if self.param is None else {"param": self.param, "add": self.add}


@dataclass(frozen=True)
class Parameter:
    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    item: Parameter | None = None
    length: ListLength | None = None
    condition: Condition | None = None

    def depends_on(self) -> list[str]:
        names = [self.condition.param] if self.condition else []
        if self.length is not None and self.length.param:
            names.append(self.length.param)
        return names

    # -- sampling -------------------------------------------------------------------------
    def suggest(self, trial, name: str | None = None) -> Any:
        """Ask `trial` (an optuna.Trial) for this parameter's value under `name`."""
        name = name or self.path
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if self.kind == "categorical":
            labels = [choice_label(c) for c in self.choices]
            picked = trial.suggest_categorical(name, labels)
            return self.choices[labels.index(picked)]
        raise ValueError(f"{self.kind} parameters are sampled element by element")

    def extreme_values(self) -> list[Any]:
        """Values that every trial may see at the bounds: each must pass config validation."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        if self.kind == "float":
            return [float(self.low), float(self.high)]
        return []

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this parameter can take (for points given by hand)."""
        if self.kind == "categorical":
            return choice_label(value) in [choice_label(c) for c in self.choices]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and float(value) != int(value):
            return False
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        """The normalised form saved with a study (and compared on resume)."""
        out: dict[str, Any] = {"type": self.kind}
        if self.kind in ("float", "int"):
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        elif self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(length=self.length.to_dict(), item=self.item.to_dict())
        if self.condition:
            out["condition"] = self.condition.to_dict()
        return out


def choice_label(choice: Any) -> Any:
    """Optuna stores only scalars: a list or mapping choice is stored as its JSON text."""
    return choice if isinstance(choice, SCALAR_TYPES) else json.dumps(choice, sort_keys=True)


def element_name(path: str, index: int) -> str:
    return f"{path}[{index}]"


@dataclass
class SearchSpace:
    """Parameters in an order where each comes after the ones it depends on.

    Calling the instance is the define-by-run function for `OptunaSearch`: it returns
    `{"params": {path: value}}` (list values assembled), which the trial driver applies to
    the base config. It is a plain class in an importable module, so Tune can pickle it
    with the searcher and restore it.
    """

    parameters: tuple[Parameter, ...] = field(default_factory=tuple)

    def __call__(self, trial) -> dict[str, Any]:
        return {"params": self.sample(trial)}

    def sample(self, trial) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for param in self.parameters:
            if param.condition and not param.condition.holds(chosen):
                continue
            if param.kind == "list":
                count = param.length.resolve(chosen)
                if count is None:
                    continue
                chosen[param.path] = [param.item.suggest(trial, element_name(param.path, i)) for i in range(count)]
            else:
                chosen[param.path] = param.suggest(trial)
        return chosen

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.parameters]

    def to_dict(self) -> dict[str, Any]:
        return {p.path: p.to_dict() for p in self.parameters}

    def optuna_names(self) -> list[str]:
        """Names that can appear in Optuna's trials (list elements up to their largest length)."""
        names: list[str] = []
        for param in self.parameters:
            if param.kind != "list":
                names.append(param.path)
                continue
            names.extend(element_name(param.path, i) for i in range(self.max_length(param)))
        return names

    def max_length(self, param: Parameter) -> int:
        if param.length.param is None:
            return int(param.length.fixed)
        source = next(p for p in self.parameters if p.path == param.length.param)
        values = [int(v) for v in source.extreme_values()]
        return max(values) + param.length.add

    def min_length(self, param: Parameter) -> int:
        if param.length.param is None:
            return int(param.length.fixed)
        source = next(p for p in self.parameters if p.path == param.length.param)
        return min(int(v) for v in source.extreme_values()) + param.length.add


# -- parsing ----------------------------------------------------------------------------------
class _Parser:
    def __init__(self, source: str):
        self.source = source

    def error(self, where: str, expected: str) -> ConfigError:
        return ConfigError(self.source, where, expected)

    def number(self, where: str, value: Any) -> float:
        # PyYAML reads `1e-6` (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.error(where, f"a number (got {value!r})") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(where, f"a finite number (got {value!r})")
        return value

    def parameter(self, path: str, raw: Any, where: str) -> Parameter:
        if not isinstance(raw, dict):
            raise self.error(where, "a mapping with a 'type' (float, int, categorical or list)")
        kind = raw.get("type")
        if kind not in KINDS:
            raise self.error(f"{where}.type", f"one of {', '.join(KINDS)} (got {kind!r})")
        unknown = sorted(set(raw) - _KEYS[kind])
        if unknown:
            raise self.error(
                f"{where}.{unknown[0]}",
                f"no such key for a {kind} parameter (allowed: {', '.join(sorted(_KEYS[kind]))})",
            )
        condition = self.condition(raw["condition"], f"{where}.condition") if "condition" in raw else None
        if kind in ("float", "int"):
            return self.numeric(path, kind, raw, where, condition)
        if kind == "categorical":
            return Parameter(path, kind, choices=self.choices(raw, where), condition=condition)
        return self.list_param(path, raw, where, condition)

    def numeric(self, path: str, kind: str, raw: dict, where: str, condition: Condition | None) -> Parameter:
        for key in ("low", "high"):
            if key not in raw:
                raise self.error(f"{where}.{key}", "a value (required for float and int parameters)")
        low, high = self.number(f"{where}.low", raw["low"]), self.number(f"{where}.high", raw["high"])
        step = self.number(f"{where}.step", raw["step"]) if raw.get("step") is not None else None
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise self.error(f"{where}.log", f"true or false (got {log!r})")
        if kind == "int":
            for key, value in (("low", low), ("high", high), ("step", step)):
                if value is not None and float(value) != int(value):
                    raise self.error(f"{where}.{key}", f"an integer for an int parameter (got {value!r})")
            low, high = int(low), int(high)
            step = int(step) if step is not None else None
        if low > high:
            raise self.error(where, f"low <= high (got low={low}, high={high})")
        if log and low <= 0:
            raise self.error(f"{where}.low", f"a positive bound on a log scale (got {low})")
        if step is not None and step <= 0:
            raise self.error(f"{where}.step", f"a positive step (got {step})")
        if log and step is not None and not (kind == "int" and step == 1):
            raise self.error(f"{where}.step", "no step on a log scale (Optuna samples log ranges continuously)")
        return Parameter(path, kind, low=low, high=high, log=log, step=step, condition=condition)

    def choices(self, raw: dict, where: str) -> tuple[Any, ...]:
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self.error(f"{where}.choices", "a non-empty list of values")
        labels = [choice_label(c) for c in choices]
        duplicates = sorted({str(lab) for lab in labels if labels.count(lab) > 1})
        if duplicates:
            raise self.error(f"{where}.choices", f"distinct values (repeated: {', '.join(duplicates)})")
        return tuple(choices)

    def condition(self, raw: Any, where: str) -> Condition:
        if not isinstance(raw, dict) or not isinstance(raw.get("param"), str):
            raise self.error(where, "a mapping {param: PATH, equals: VALUE} or {param: PATH, in: [VALUES]}")
        unknown = sorted(set(raw) - {"param", "equals", "in"})
        if unknown:
            raise self.error(f"{where}.{unknown[0]}", "no such key (allowed: param, equals, in)")
        if ("equals" in raw) == ("in" in raw):
            raise self.error(where, "exactly one of 'equals: VALUE' or 'in: [VALUES]'")
        if "in" in raw:
            if not isinstance(raw["in"], list) or not raw["in"]:
                raise self.error(f"{where}.in", "a non-empty list of values")
            return Condition(raw["param"], tuple(raw["in"]))
        return Condition(raw["param"], (raw["equals"],))

    def list_param(self, path: str, raw: dict, where: str, condition: Condition | None) -> Parameter:
        if "item" not in raw:
            raise self.error(f"{where}.item", "the parameter of each element (a float, int or categorical)")
        item = self.parameter(path, raw["item"], f"{where}.item")
        if item.kind == "list" or item.condition is not None:
            raise self.error(f"{where}.item", "a float, int or categorical parameter without a condition")
        return Parameter(
            path, "list", item=item, length=self.length(raw.get("length"), f"{where}.length"), condition=condition
        )

    def length(self, raw: Any, where: str) -> ListLength:
        if isinstance(raw, int) and not isinstance(raw, bool):
            if raw < 1:
                raise self.error(where, f"a length of at least 1 (got {raw})")
            return ListLength(fixed=raw)
        if isinstance(raw, str):
            return ListLength(param=raw)
        if isinstance(raw, dict) and isinstance(raw.get("param"), str) and set(raw) <= {"param", "add"}:
            add = raw.get("add", 0)
            if not isinstance(add, int) or isinstance(add, bool):
                raise self.error(f"{where}.add", f"an integer (got {add!r})")
            return ListLength(param=raw["param"], add=add)
        raise self.error(where, "an int, a parameter path, or {param: PATH, add: INT}")


def parse_space(raw: Any, source: str) -> SearchSpace:
    """Parse and check the `space` mapping of a spec (structure only; see `check_against_config`)."""
    parser = _Parser(source)
    if not isinstance(raw, dict) or not raw:
        raise parser.error("space", "a non-empty mapping of config paths to parameter definitions")
    params: dict[str, Parameter] = {}
    for path, definition in raw.items():
        if not isinstance(path, str) or not path or not all(path.split(".")):
            raise parser.error(f"space.{path}", "a dotted config path such as method.temperature")
        params[path] = parser.parameter(path, definition, f"space.{path}")
    _check_references(params, parser)
    return SearchSpace(tuple(_dependency_order(params, parser)))


def _check_references(params: dict[str, Parameter], parser: _Parser) -> None:
    for param in params.values():
        where = f"space.{param.path}"
        if param.condition:
            target = params.get(param.condition.param)
            if target is None:
                raise parser.error(
                    f"{where}.condition.param", f"a parameter of this space (no parameter {param.condition.param!r})"
                )
            if target.kind == "list":
                raise parser.error(
                    f"{where}.condition.param", "a scalar parameter (conditions on lists are not supported)"
                )
            if target.kind == "categorical":
                labels = [choice_label(c) for c in target.choices]
                missing = [v for v in param.condition.values if choice_label(v) not in labels]
                if missing:
                    raise parser.error(
                        f"{where}.condition", f"values among the choices of {target.path} (never chosen: {missing})"
                    )
        if param.length is not None and param.length.param:
            target = params.get(param.length.param)
            if target is None or target.kind not in ("int", "categorical"):
                raise parser.error(f"{where}.length", f"an int parameter of this space (got {param.length.param!r})")
            lengths = [v + param.length.add for v in target.extreme_values()]
            if (
                not all(isinstance(v, int) and not isinstance(v, bool) for v in target.extreme_values())
                or min(lengths) < 0
            ):
                raise parser.error(f"{where}.length", f"non-negative integer lengths from {target.path}")


def _dependency_order(params: dict[str, Parameter], parser: _Parser) -> list[Parameter]:
    """Keep the file's order where possible; move a parameter after the ones it depends on."""
    ordered: list[Parameter] = []
    state: dict[str, str] = {}

    def visit(path: str, chain: list[str]) -> None:
        if state.get(path) == "done":
            return
        if state.get(path) == "visiting":
            cycle = " -> ".join([*chain[chain.index(path) :], path])
            raise parser.error(f"space.{path}", f"no circular conditions ({cycle})")
        state[path] = "visiting"
        for name in params[path].depends_on():
            visit(name, [*chain, path])
        state[path] = "done"
        ordered.append(params[path])

    for path in params:
        visit(path, [])
    return ordered


# -- checking against the experiment ------------------------------------------------------------
def check_against_config(space: SearchSpace, base: ExperimentConfig, source: str) -> None:
    """Apply each parameter's extreme values to the base config: unknown paths, wrong types
    and out-of-range bounds fail here, before any trial runs."""
    for param in space.parameters:
        for value in _probe_values(space, param):
            try:
                base.with_overrides({param.path: value}, source)
            except ConfigError as err:
                raise ConfigError(
                    source,
                    f"space.{param.path}",
                    f"values the experiment accepts; {value!r} fails: {err.field}: {err.expected}",
                ) from None


def _probe_values(space: SearchSpace, param: Parameter) -> list[Any]:
    if param.kind != "list":
        return param.extreme_values()
    extremes = param.item.extreme_values()
    probes = []
    for count in sorted({space.min_length(param), space.max_length(param)}):
        probes.extend([[value] * count for value in extremes])
    return probes


def sample_defaults(space: SearchSpace) -> dict[str, Any]:
    """One example value per parameter (the first bound or choice), for type declarations."""
    values: dict[str, Any] = {}
    for param in space.parameters:
        if param.kind == "list":
            values[param.path] = "[]"
        else:
            values[param.path] = param.extreme_values()[0]
    return values


__all__ = [
    "Condition",
    "ListLength",
    "Parameter",
    "SearchSpace",
    "check_against_config",
    "choice_label",
    "element_name",
    "parse_space",
    "sample_defaults",
]
