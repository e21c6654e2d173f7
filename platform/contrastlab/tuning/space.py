"""Search spaces: the `space` section of a study spec, and its Optuna define-by-run function.

A parameter is named by the config path it sets (`method.temperature`), so the names in
the YAML, in Optuna's database, in Tune's trial table and in TensorBoard are the same.
Kinds: `float` and `int` (linear or log, optional step), `categorical` (any YAML values;
lists and mappings are stored in Optuna as their JSON text), and `list` (a list-valued
field whose length may come from another parameter, one Optuna parameter per element,
e.g. one element per stage), and `composition` (a list of integers of a given sum, e.g.
MCL's epochs per stage, which must add up to optim.epochs; see `contrastlab.tuning.composition`).
`condition` makes a parameter exist only when another one has a given value; Optuna then
never sees it in the trials where it is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.study.values import same
from contrastlab.tuning.composition import Total, cut_name, cuts_for, edge_compositions, suggest_composition
from contrastlab.tuning.space_rules import check_switched_values

KINDS = ("float", "int", "categorical", "list", "composition")
SEQUENCES = ("list", "composition")  # kinds whose value is a list, sampled as several Optuna parameters
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
    minimum: int | None = None  # composition: the least value of a part
    total: Total | None = None  # composition: the sum of the parts

    def depends_on(self) -> list[str]:
        """Names this one needs first (a composition's total counts only where the space samples it)."""
        names = [self.condition.param] if self.condition else []
        if self.length is not None and self.length.param:
            names.append(self.length.param)
        if self.total is not None and self.total.path:
            names.append(self.total.path)
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
        if self.kind == "composition":
            whole = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            return whole and min(value, default=-1) >= self.minimum and sum(value) == self.total.value
        if self.kind in SEQUENCES or isinstance(value, bool) or not isinstance(value, (int, float)):
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
        elif self.kind == "composition":
            out.update(length=self.length.to_dict(), total=self.total.to_dict(), min=self.minimum)
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
            if param.kind in SEQUENCES:
                count = param.length.resolve(chosen)
                if count is None:
                    continue
                if param.kind == "composition":
                    total = param.total.resolve(chosen)
                    chosen[param.path] = suggest_composition(trial, param.path, count, total, param.minimum)
                else:
                    items = [param.item.suggest(trial, element_name(param.path, i)) for i in range(count)]
                    chosen[param.path] = items
            else:
                chosen[param.path] = param.suggest(trial)
        return chosen

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.parameters]

    def to_dict(self) -> dict[str, Any]:
        return {p.path: p.to_dict() for p in self.parameters}

    def optuna_point(self, point: dict[str, Any]) -> dict[str, Any]:
        """A point given by config values as Optuna parameters: choices by their stored label,
        a composition by the cuts that give it back."""
        params: dict[str, Any] = {}
        for path, value in point.items():
            param = self.parameter(path)
            if param is not None and param.kind == "composition":
                cuts = cuts_for(value, param.minimum)
                params.update({cut_name(path, i, len(value)): cut for i, cut in enumerate(cuts)})
            else:
                params[path] = choice_label(value)
        return params

    def parameter(self, path: str) -> Parameter | None:
        return next((p for p in self.parameters if p.path == path), None)

    @property
    def has_conditional_parameters(self) -> bool:
        """Whether the parameters Optuna sees differ from trial to trial: a condition, or a
        list or composition whose length follows another parameter."""
        return any(p.condition or (p.length is not None and p.length.param) for p in self.parameters)

    def optuna_names(self) -> list[str]:
        """Names that can appear in Optuna's trials (list elements up to their largest length,
        the cuts of a composition for each of its lengths)."""
        names: list[str] = []
        for param in self.parameters:
            if param.kind == "list":
                names.extend(element_name(param.path, i) for i in range(self.max_length(param)))
            elif param.kind == "composition":
                for parts in self.lengths(param):
                    names.extend(cut_name(param.path, i, parts) for i in range(parts - 1))
            else:
                names.append(param.path)
        return names

    def lengths(self, param: Parameter) -> list[int]:
        """Every length a list or composition can take, in increasing order."""
        if param.length.param is None:
            return [int(param.length.fixed)]
        source = self.parameter(param.length.param)
        if source.kind == "int":
            values = range(int(source.low), int(source.high) + 1, int(source.step or 1))
        else:
            values = [int(v) for v in source.choices]
        return sorted({v + param.length.add for v in values})

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
    """Read each composition's total from the base config, then apply each parameter's
    extreme values to it: unknown paths, wrong types and out-of-range bounds fail here,
    before any trial runs. A list or composition whose length follows another parameter is
    applied together with that parameter's value."""
    bind_totals(space, base, source)
    for param in space.parameters:
        for overrides in _probes(space, param):
            try:
                base.with_overrides(overrides, source)
            except ConfigError as err:
                raise ConfigError(
                    source,
                    f"space.{param.path}",
                    f"values the experiment accepts; {overrides[param.path]!r} fails: {err.field}: {err.expected}",
                ) from None
    check_switched_values(space, base, source)


def _probes(space: SearchSpace, param: Parameter) -> list[dict[str, Any]]:
    if param.kind == "list":
        extremes = param.item.extreme_values()
        counts = sorted({space.min_length(param), space.max_length(param)})
        return [{param.path: [value] * count} for count in counts for value in extremes]
    if param.kind != "composition":
        return [{param.path: value} for value in param.extreme_values()]
    probes = []
    total_param = space.parameter(param.total.path) if param.total.path else None
    totals = total_param.extreme_values() if total_param else [param.total.value]
    for count in sorted({space.min_length(param), space.max_length(param)}):
        joint = {param.length.param: count - param.length.add} if param.length.param else {}
        for total in totals:
            if total_param:
                joint = {**joint, total_param.path: total}
            probes.extend({**joint, param.path: parts} for parts in edge_compositions(count, total, param.minimum))
    return probes


def _config_value(base: ExperimentConfig, path: str) -> Any:
    value: Any = base.to_dict()
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def bind_totals(space: SearchSpace, base: ExperimentConfig, source: str) -> None:
    """Give each composition the base experiment's value of its total's field, and check
    that its longest length fits (`length × min <= total`) for every total it can meet."""
    bound = []
    for param in space.parameters:
        if param.kind == "composition" and param.total.path is not None:
            value = _config_value(base, param.total.path)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(
                    source,
                    f"space.{param.path}.total",
                    f"an integer, or the path of an integer field of the experiment ({param.total.path} is {value!r})",
                )
            param = replace(param, total=replace(param.total, value=value))
        bound.append(param)
    space.parameters = tuple(bound)
    for param in space.parameters:
        if param.kind == "composition":
            check_composition_fits(space, param, source)


def check_composition_fits(space: SearchSpace, param: Parameter, source: str) -> None:
    """At least one part, and `length × min <= total` for the longest length and the
    smallest total (a sampled total's low end, and the base value where it may be inactive)."""
    if space.min_length(param) < 1:
        raise ConfigError(source, f"space.{param.path}.length", "at least one part in every trial")
    total_param = space.parameter(param.total.path) if param.total.path else None
    totals = [param.total.value] if param.total.value is not None else []
    if total_param is not None:
        extremes = total_param.extreme_values()
        if not extremes or not all(isinstance(v, int) and not isinstance(v, bool) for v in extremes):
            raise ConfigError(source, f"space.{param.path}.total", f"an integer parameter ({total_param.path})")
        totals = extremes + (totals if total_param.condition else [])
    total, parts = min(totals), space.max_length(param)
    if parts * param.minimum > total:
        named = f" ({param.total.path})" if param.total.path else ""
        raise ConfigError(
            source,
            f"space.{param.path}.min",
            f"a minimum that {parts} parts can all reach within the total {total}{named}: at most "
            f"{total // parts} (got {param.minimum}, {parts} x {param.minimum} = {parts * param.minimum})",
        )


def sample_defaults(space: SearchSpace) -> dict[str, Any]:
    """One example value per parameter (the first bound or choice), for type declarations."""
    values: dict[str, Any] = {}
    for param in space.parameters:
        if param.kind in SEQUENCES:
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
    "bind_totals",
    "check_against_config",
    "check_composition_fits",
    "choice_label",
    "element_name",
    "sample_defaults",
]
