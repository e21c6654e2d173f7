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
from dataclasses import dataclass, field
from typing import Any

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.study.values import same

KINDS = ("float", "int", "categorical", "list")
SCALAR_TYPES = (type(None), bool, int, float, str)


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
    "KINDS",
    "Condition",
    "ListLength",
    "Parameter",
    "SearchSpace",
    "check_against_config",
    "choice_label",
    "element_name",
    "sample_defaults",
]
