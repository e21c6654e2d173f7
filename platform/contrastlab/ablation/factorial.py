"""Main effects and two-way interactions of a full-factorial ablation, as per-seed contrasts.

Each variant is a cell: one setting of every component. Every component has its full-
experiment level (the reference's setting) and one or more other levels. A contrast is a
weighted sum of cell values, evaluated separately for each seed and then tested over seeds
with the same paired test as the comparisons, so seed-to-seed variation shared by the cells
cancels exactly as it does in a paired difference.

- Main effect of `c = L`: the mean over the cells with c = L minus the mean over the cells with
  c at its full level, both averaged over every setting of the other components. For an on/off
  component this is the effects-coded contrast (high minus low) of a 2^k design; a component
  with more levels gets one such contrast per non-full level.
- Interaction of `c1 = L1` with `c2 = L2`: the difference of differences
  y(L1, L2) - y(L1, full2) - y(full1, L2) + y(full1, full2), averaged over the other components:
  how far switching both departs from the sum of switching each (0 when they add up).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Contrast:
    """A named effect: per-seed value = sum of weight * value of the variant, over `weights`."""

    name: str
    kind: str  # "main" or "interaction"
    weights: dict[str, float]


def _token(value: Any) -> str:
    # Settings come back from JSON as well as from configs: compare them by their JSON text,
    # so that True is not 1 and (1, 2) equals [1, 2].
    return json.dumps(value, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class IncompleteDesign(ValueError):
    """The variants do not cover every combination of the components' levels exactly once."""


def _cells(levels: Mapping[str, Mapping[str, Any]], components: list[str]) -> dict[tuple[str, ...], str]:
    cells: dict[tuple[str, ...], str] = {}
    for variant, settings in levels.items():
        key = tuple(_token(settings.get(c)) for c in components)
        if key in cells:
            raise IncompleteDesign(f"variants {cells[key]!r} and {variant!r} have the same component settings")
        cells[key] = variant
    return cells


def _averaged(cells: dict[tuple[str, ...], str], fixed: dict[int, str], sign: float, weights: dict[str, float]) -> None:
    """Add sign / (number of matching cells) to every cell whose settings match `fixed`."""
    matching = [v for key, v in cells.items() if all(key[i] == value for i, value in fixed.items())]
    for variant in matching:
        weights[variant] = weights.get(variant, 0.0) + sign / len(matching)


def factorial_contrasts(levels: Mapping[str, Mapping[str, Any]], reference: str) -> list[Contrast]:
    """Main-effect and two-way interaction contrasts; IncompleteDesign when cells are missing."""
    if reference not in levels:
        raise IncompleteDesign(f"the reference {reference!r} has no component settings")
    components = list(levels[reference])
    if not components:
        raise IncompleteDesign("no components")
    full = {c: _token(levels[reference][c]) for c in components}
    values: dict[str, dict[str, Any]] = {c: {} for c in components}
    for settings in levels.values():
        for c in components:
            values[c].setdefault(_token(settings.get(c)), settings.get(c))
    cells = _cells(levels, components)
    expected = 1
    for c in components:
        expected *= len(values[c])
    if len(cells) != expected:
        raise IncompleteDesign(f"{len(cells)} variants for {expected} combinations of the components' levels")
    others = {c: [(t, v) for t, v in values[c].items() if t != full[c]] for c in components}
    shown_full = {c: _shown(levels[reference][c]) for c in components}
    contrasts = []
    for i, c in enumerate(components):
        for token, value in others[c]:
            weights: dict[str, float] = {}
            _averaged(cells, {i: token}, 1.0, weights)
            _averaged(cells, {i: full[c]}, -1.0, weights)
            contrasts.append(Contrast(f"{c}={_shown(value)} (vs {shown_full[c]})", "main", weights))
    for (i, c1), (j, c2) in itertools.combinations(enumerate(components), 2):
        for (t1, v1), (t2, v2) in itertools.product(others[c1], others[c2]):
            weights = {}
            for a, b, sign in ((t1, t2, 1.0), (t1, full[c2], -1.0), (full[c1], t2, -1.0), (full[c1], full[c2], 1.0)):
                _averaged(cells, {i: a, j: b}, sign, weights)
            contrasts.append(Contrast(f"{c1}={_shown(v1)} × {c2}={_shown(v2)}", "interaction", weights))
    return contrasts


def per_seed(contrast: Contrast, values: Mapping[str, Mapping[int, float]]) -> dict[int, float]:
    """The contrast at every seed where all its cells have a value."""
    used = [v for v, w in contrast.weights.items() if w != 0.0]
    seeds = set.intersection(*(set(values.get(v, {})) for v in used)) if used else set()
    return {s: sum(contrast.weights[v] * values[v][s] for v in used) for s in sorted(seeds)}
