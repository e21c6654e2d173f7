"""Tune's search algorithms, paced by `contrastlab.study.resources.ClusterPace`.

Tune fixes `max_concurrent_trials` when the experiment starts. These ask the pace each time
Tune wants a new trial instead, so a study follows a cluster that grows (or shrinks) while it
runs: a trial that the cluster cannot hold now is not created yet, and is created as soon
as it can.
"""

from __future__ import annotations

from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from contrastlab.study.resources import ClusterPace


class PacedSearcher(ConcurrencyLimiter):
    """A searcher (Optuna's) asked for a new trial only while fewer than the pace's trials live."""

    def __init__(self, searcher: Searcher, pace: ClusterPace):
        self.pace = pace
        super().__init__(searcher, max_concurrent=1)

    @property
    def max_concurrent(self) -> int:
        return self.pace.allowed()

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        """Tune's own settings do not replace the pace."""


class PacedGrid(BasicVariantGenerator):
    """A grid whose next trial is created only while fewer than the pace's trials live."""

    def __init__(self, pace: ClusterPace, **kwargs):
        self.pace = pace
        super().__init__(**kwargs)

    @property
    def max_concurrent(self) -> int:
        return self.pace.allowed()

    @max_concurrent.setter
    def max_concurrent(self, value: int) -> None:
        """Tune's own settings do not replace the pace."""


__all__ = ["PacedGrid", "PacedSearcher"]
