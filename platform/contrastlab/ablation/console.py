"""The console of an ablation: one row per variant × seed still to compute.

The table follows the first of the spec's metrics that every epoch reports on val (kNN when
`eval.knn_every` is set; a linear probe is measured only at the end); each finished run's
line adds the spec's metrics on val and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastlab.ablation.spec import AblationSpec
from contrastlab.ablation.trial import error_text, held_out_names, trial_name
from contrastlab.raytrain.ray_logs import LOG_FILE
from contrastlab.study.console_callback import StudyConsole

PER_EPOCH = ("knn_top1",)  # what the engine measures on val after every `eval.knn_every` epochs
LOWER_IS_BETTER = ("alignment", "uniformity")


def live_metric(spec: AblationSpec) -> str:
    per_epoch = [m for m in spec.metrics if m in PER_EPOCH] if spec.full.eval.knn_every else []
    return f"val/{(per_epoch or spec.metrics)[0]}"


class RunConsole(StudyConsole):
    """Rows `variant`, `seed` for the runs of `runs` (the grid's descriptors, keyed by run id)."""

    columns = ("variant", "seed")

    def __init__(self, spec: AblationSpec, runs: dict[str, dict[str, Any]], output: Path):
        reused = len(spec.variants) * len(spec.seeds) - len(runs)
        start = (
            f"ablation {spec.name}: {len(runs)} runs to compute, {reused} already done, into {output} "
            f"(Ray's logs: {output / 'logs' / LOG_FILE}); tensorboard --logdir {output / 'runs'}"
        )
        metric = live_metric(spec)
        mode = "min" if metric.rpartition("/")[2] in LOWER_IS_BETTER else "max"
        super().__init__(start, metric, mode, total=len(runs), shown=held_out_names(spec.metrics))
        self.plan = {run_id: (run["variant"], f"seed{run['seed']}", int(run["epochs"])) for run_id, run in runs.items()}

    def key(self, trial) -> str:
        return trial_name(trial)

    def cells(self, trial) -> tuple[str, ...]:
        return self.plan[self.key(trial)][:2]

    def epochs(self, trial) -> int | None:
        return self.plan[self.key(trial)][2]

    def reason(self, trial) -> str:
        return error_text(trial)

    def planned(self) -> list[tuple[str, tuple[str, ...], int | None]]:
        return [(run_id, (variant, seed), epochs) for run_id, (variant, seed, epochs) in self.plan.items()]


__all__ = ["RunConsole", "live_metric"]
