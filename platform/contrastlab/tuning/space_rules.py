"""Rules a search space must follow beyond the experiment's own validation.

A value that switches a component off while the component's switch says on makes a trial
repeat the switch-off configuration under another name (SSCL's k = 0 with synthesis on is
synthesis off), and the sampler would then model the same experiment in two places. Such a
space is refused: the range leaves the "off" value out and the switch is sampled instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contrastlab.errors import ConfigError
from contrastlab.study.values import same

if TYPE_CHECKING:
    from contrastlab.config import ExperimentConfig
    from contrastlab.tuning.space import Parameter, SearchSpace

# method name -> {value field: (switch field, the value that means off)}.
SWITCHED_VALUES: dict[str, dict[str, tuple[str, Any]]] = {
    "sscl": {"synthetic_count": ("synthesis", 0), "beta": ("hard_sampling", 0), "tau_plus": ("debias", 0)},
    "slr": {"alpha": ("slr", 0)},
}


def check_switched_values(space: SearchSpace, base: ExperimentConfig, source: str) -> None:
    """Refuse a space where a component's value can reach its "off" value while its switch
    is on (SSCL's k = 0 with synthesis on is synthesis off): sample the switch instead."""
    rules = SWITCHED_VALUES.get(str(base.method.name), {})
    for field_name, (switch, off) in rules.items():
        param = space.parameter(f"method.{field_name}")
        if param is None or not _can_take(param, off) or not _switch_can_be_on(space, param, switch, base):
            continue
        raise ConfigError(
            source,
            f"space.method.{field_name}",
            f"values other than {off} while method.{switch} is on ({field_name} = {off} is method.{switch} off): "
            f"keep {off} out of the range and sample method.{switch} instead",
        )


def _can_take(param: Parameter, value: Any) -> bool:
    if param.kind == "categorical":
        return any(same(choice, value) for choice in param.choices if not isinstance(choice, bool))
    return param.kind in ("int", "float") and param.low <= value <= param.high


def _switch_can_be_on(space: SearchSpace, param: Parameter, switch: str, base: ExperimentConfig) -> bool:
    path = f"method.{switch}"
    if param.condition is not None and param.condition.param == path:
        return any(value is True for value in param.condition.values)
    sampled = space.parameter(path)
    if sampled is not None:
        return any(value is True for value in sampled.extreme_values())
    return bool(getattr(base.method, switch, False))


__all__ = ["SWITCHED_VALUES", "check_switched_values"]
