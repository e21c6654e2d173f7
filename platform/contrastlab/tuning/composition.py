"""Compositions: lists of integers with a fixed sum, sampled through Optuna.

A `composition` parameter sets a list-valued field whose n entries are each at least
`min` and sum exactly to a total (MCL's epochs per stage, which must add up to
`optim.epochs`). Independent integers would rarely meet the sum, so a trial asks Optuna
for n - 1 floats u_i in [0, 1] instead, one per cut, and maps them to the parts:

1. stick breaking: part i takes the fraction f_i = 1 - (1 - u_i)^(1 / (n - 1 - i)) of
   what the earlier parts left; the last part takes the rest. With uniform u_i the
   proportions are uniform over all splits (f_i is Beta(1, n - 1 - i) distributed), so the
   random start-up trials cover every schedule evenly, and TPE models each u_i as an
   ordinary float;
2. the free units, total - n·min, are divided in these proportions by the largest
   remainder rule (the floors first, then one unit each to the largest remainders, the
   earlier part first on a tie), and every part gets `min` on top.

The sum is exact and every part at least `min` whatever the u_i, and the same u_i always
give the same parts. The names of the u_i carry the number of parts
(`method.stage_epochs[0 of 3]`), so Optuna keeps one set of cuts per count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Total:
    """The sum of a composition: a fixed number, or the experiment's value of a config
    field (`path`, read when the space is checked against the base experiment, or the
    trial's own value when the space samples that field)."""

    value: int | None = None
    path: str | None = None

    def resolve(self, chosen: dict[str, Any]) -> int:
        if self.path is not None and self.path in chosen:
            return int(chosen[self.path])
        if self.value is None:
            raise ValueError(f"the total {self.path} was not read from the base experiment (check_against_config)")
        return self.value

    def to_dict(self) -> int | str:
        return self.path if self.path is not None else self.value


def cut_name(path: str, index: int, parts: int) -> str:
    """The Optuna name of cut `index` of a composition of `parts` parts."""
    return f"{path}[{index} of {parts}]"


def proportions(cuts: Sequence[float]) -> list[float]:
    """The len(cuts) + 1 proportions (non-negative, summing to 1) that the cuts stand for."""
    parts = len(cuts) + 1
    left = 1.0
    shares = []
    for index, cut in enumerate(cuts):
        cut = min(max(float(cut), 0.0), 1.0)
        fraction = 1.0 - (1.0 - cut) ** (1.0 / (parts - 1 - index))
        shares.append(left * fraction)
        left *= 1.0 - fraction
    shares.append(left)
    return shares


def integer_parts(shares: Sequence[float], total: int, minimum: int) -> list[int]:
    """Integers, each at least `minimum`, summing to `total`, as close to `shares` as the
    largest remainder rule gets."""
    free = total - len(shares) * minimum
    if free < 0:
        raise ValueError(f"{len(shares)} parts of at least {minimum} exceed the total {total}")
    weight = sum(shares)
    exact = [free * s / weight if weight > 0 else free / len(shares) for s in shares]
    floors = [math.floor(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - floors[i]), i))
    for index in order[: free - sum(floors)]:
        floors[index] += 1
    return [minimum + f for f in floors]


def parts_from_cuts(cuts: Sequence[float], total: int, minimum: int) -> list[int]:
    return integer_parts(proportions(cuts), total, minimum)


def cuts_for(parts: Sequence[int], minimum: int) -> list[float]:
    """The cuts that give `parts` back (for a schedule given by hand, e.g. a point to evaluate)."""
    free = [p - minimum for p in parts]
    left = float(sum(free))
    cuts = []
    for index, units in enumerate(free[:-1]):
        fraction = units / left if left > 0 else 0.0
        cuts.append(1.0 - (1.0 - fraction) ** (len(parts) - 1 - index))
        left -= units
    return cuts


def suggest_composition(trial, path: str, parts: int, total: int, minimum: int) -> list[int]:
    """Ask `trial` (an optuna.Trial) for the cuts of a `parts`-part composition of `total`."""
    cuts = [trial.suggest_float(cut_name(path, i, parts), 0.0, 1.0) for i in range(parts - 1)]
    return parts_from_cuts(cuts, total, minimum)


def edge_compositions(parts: int, total: int, minimum: int) -> list[list[int]]:
    """The most uneven compositions (all the free units first or last): the values that a
    space check applies to the experiment."""
    if parts == 1:
        return [[total]]
    heavy = total - (parts - 1) * minimum
    return [[heavy] + [minimum] * (parts - 1), [minimum] * (parts - 1) + [heavy]]


__all__ = [
    "Total",
    "cut_name",
    "cuts_for",
    "edge_compositions",
    "integer_parts",
    "parts_from_cuts",
    "proportions",
    "suggest_composition",
]
