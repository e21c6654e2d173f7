"""TPE + ASHA against random search without early stopping, at the same number of trials.

Two studies of one small SimCLR problem (the small CNN on a Fashion-MNIST subset, a few
epochs, the temperature / lr / weight decay / crop scale space of search_spaces/simclr.yaml)
run through the project's own tuning path (`contrastlab.tuning.run_study`, i.e. Ray Tune
with the study's Optuna searcher over Ray Train trials):

  tpe_asha     sampler tpe (seeded), scheduler asha (grace 1 epoch, reduction factor 2)
  random_fifo  sampler random (seeded), scheduler fifo: every trial trains all its epochs

Trials run one at a time (one CPU each), so wall time follows the work done and ASHA's
decisions depend only on trials that finished before. Figures, read back from each study's
Optuna database: best final kNN top-1 among complete trials, trial-epochs trained (the sum
of epochs over all trials, pruned ones included), wall time of the study, and the best
that random search had found once it had used as many trial-epochs as TPE + ASHA did.

Ray clusters must not overlap on a shared host; run it under the host lock:

    flock /tmp/contrastlab-ray-tests.lock .venv/bin/python benchmarks/tpe_vs_random.py
    flock /tmp/contrastlab-ray-tests.lock .venv/bin/python benchmarks/tpe_vs_random.py --trials 12 --epochs 4

It prints a table and writes benchmarks/results/tpe_vs_random.md (or --results PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import ray
import torch
from optuna.trial import FrozenTrial, TrialState

from contrastlab.config import ConfigError
from contrastlab.tuning.runner import StudyError, run_study
from contrastlab.tuning.spec import StudySpec, spec_from_dict
from contrastlab.tuning.study import EPOCHS_TRAINED

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "tpe_vs_random.md"
ARMS = {
    "tpe_asha": {"sampler": "tpe", "scheduler": "asha"},
    "random_fifo": {"sampler": "random", "scheduler": "fifo"},
}
SPACE = {
    "method.temperature": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
    "optim.lr": {"type": "float", "low": 3.0e-4, "high": 2.0e-2, "log": True},
    "optim.weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-3, "log": True},
    "augment.crop_scale": {"type": "categorical", "choices": [[0.08, 1.0], [0.2, 1.0], [0.5, 1.0]]},
}


def base_experiment(args: argparse.Namespace) -> dict:
    return {
        "name": "tpe-vs-random",
        "seed": 0,
        "data": {"name": "fashion_mnist", "subset": args.train_size, "test_subset": args.test_size},
        "augment": {
            "crop_scale": [0.5, 1.0],
            "jitter_prob": 0.8,
            "brightness": 0.4,
            "contrast": 0.4,
            "grayscale_prob": 0.0,
        },
        "model": {"encoder": "small_cnn", "width": args.width, "projector_hidden": 128, "projector_out": 64},
        "method": {"name": "simclr", "temperature": 0.2},
        "optim": {
            "optimizer": "adamw",
            "lr": 0.002,
            "batch_size": 128,
            "epochs": args.epochs,
            "warmup_epochs": 1,
            "weight_decay": 1.0e-4,
        },
        # kNN every epoch: the values ASHA compares; no linear probe, the metric is kNN.
        "eval": {"knn_every": 1, "knn_k": 50, "linear_probe": False, "align_uniform": False},
        "output": {"progress_every": 0},
        "resources": {"device": "cpu"},
    }


def build_spec(arm: str, args: argparse.Namespace) -> StudySpec:
    choice = ARMS[arm]
    raw = {
        "name": f"bench-{arm.replace('_', '-')}",
        "base": base_experiment(args),
        "metric": "val/knn_top1",
        "mode": "max",
        "num_samples": args.trials,
        "space": SPACE,
        "scheduler": (
            {"type": "asha", "grace_period": 1, "reduction_factor": 2}
            if choice["scheduler"] == "asha"
            else {"type": "fifo"}
        ),
        "sampler": {
            "type": choice["sampler"],
            "seed": args.seed,
            **({"n_startup_trials": args.startup_trials} if choice["sampler"] == "tpe" else {}),
        },
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "max_concurrent_trials": 1,
    }
    return spec_from_dict(raw, Path(__file__))


# -- figures ------------------------------------------------------------------------------------
@dataclass
class ArmResult:
    arm: str
    trials: list[FrozenTrial]
    wall_s: float
    epochs_per_trial: int

    def epochs(self, trial: FrozenTrial) -> int:
        return int(trial.user_attrs.get(EPOCHS_TRAINED, len(trial.intermediate_values)) or 0)

    @property
    def trial_epochs(self) -> int:
        return sum(self.epochs(t) for t in self.trials)

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def best(self) -> FrozenTrial | None:
        return max(self.complete, key=lambda t: t.value, default=None)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def trial_seconds(self) -> float:
        return sum(t.duration.total_seconds() for t in self.trials if t.duration)

    def best_within(self, budget: int) -> tuple[float | None, int]:
        """Best complete value among the first trials whose epochs add up to at most `budget`."""
        used, best, counted = 0, None, 0
        for trial in sorted(self.trials, key=lambda t: t.number):
            used += self.epochs(trial)
            if used > budget:
                break
            counted += 1
            if trial.state == TrialState.COMPLETE:
                best = trial.value if best is None else max(best, trial.value)
        return best, counted


def read_study(output: Path) -> list[FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise RuntimeError(f"{output / 'study.db'}: expected one study, found {names}")
    return optuna.load_study(study_name=names[0], storage=storage).get_trials(deepcopy=False)


def run_arm(arm: str, args: argparse.Namespace, output: Path) -> ArmResult:
    spec = build_spec(arm, args)
    print(f"== {arm}: {spec.num_samples} trials of {spec.max_t} epochs, study {spec.study_name}", flush=True)
    started = time.perf_counter()
    outcome = run_study(spec, output / arm, num_cpus=args.num_cpus)
    wall = time.perf_counter() - started
    print(outcome.summary, flush=True)
    return ArmResult(arm, read_study(output / arm), wall, spec.max_t)


# -- report --------------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_rows(results: list[ArmResult]) -> list[list[str]]:
    rows = []
    for res in results:
        best = res.best
        rows.append(
            [
                res.arm,
                str(len(res.trials)),
                f"{res.count(TrialState.COMPLETE)} / {res.count(TrialState.PRUNED)} / {res.count(TrialState.FAIL)}",
                fmt(best.value if best else None),
                f"#{best.number}" if best else "-",
                f"{res.trial_epochs} / {len(res.trials) * res.epochs_per_trial}",
                f"{res.wall_s:.0f}",
                f"{res.trial_seconds:.0f}",
            ]
        )
    return rows


SUMMARY_HEADER = [
    "arm",
    "trials",
    "complete / pruned / failed",
    "best knn_top1",
    "best trial",
    "trial-epochs used / full",
    "study wall s",
    "sum of trial s",
]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows])


def short_params(trial: FrozenTrial) -> str:
    parts = []
    for name, value in trial.params.items():
        key = name.split(".")[-1]
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)


def trial_rows(res: ArmResult) -> list[list[str]]:
    rows = []
    for trial in sorted(res.trials, key=lambda t: t.number):
        steps = sorted(trial.intermediate_values)
        last = trial.intermediate_values[steps[-1]] if steps else None
        # Optuna keeps the last intermediate value as a pruned trial's value: show finals only.
        final = trial.value if trial.state == TrialState.COMPLETE else None
        rows.append(
            [str(trial.number), trial.state.name, str(res.epochs(trial)), fmt(final), fmt(last), short_params(trial)]
        )
    return rows


TRIAL_HEADER = ["#", "state", "epochs", "final knn_top1", "last reported", "parameters"]


def equal_budget_line(tpe: ArmResult, rnd: ArmResult) -> str:
    budget = tpe.trial_epochs
    best, counted = rnd.best_within(budget)
    return (
        f"Random search at the trial-epochs TPE + ASHA used ({budget}): its first {counted} trials, "
        f"best knn_top1 {fmt(best)}."
    )


def cost_line(results: list[ArmResult]) -> str:
    """Trial duration against epochs trained, fitted over every trial of every arm: the part
    that pruning saves (per epoch) and the part it cannot (per trial)."""
    points = [(r.epochs(t), t.duration.total_seconds()) for r in results for t in r.trials if t.duration]
    if len({e for e, _ in points}) < 2:
        return "Every trial trained the same number of epochs: no split of its cost into per-trial and per-epoch parts."
    per_epoch, fixed = np.polyfit([e for e, _ in points], [d for _, d in points], 1)
    return (
        f"Trial duration fitted as fixed + per-epoch cost over all {len(points)} trials: {fixed:.1f} s per trial "
        f"(Ray Train start-up, data loading) + {per_epoch:.1f} s per epoch (training and kNN). Pruning saves "
        "only the per-epoch part, so wall time falls less than trial-epochs do."
    )


def paired_lines(tpe: ArmResult, rnd: ArmResult) -> list[str]:
    """Both samplers draw their first trials from the same seeded random stream: those trials
    have the same values in both arms and show what ASHA's stops cost."""
    shared = []
    for a, b in zip(sorted(tpe.trials, key=lambda t: t.number), sorted(rnd.trials, key=lambda t: t.number)):
        if a.params != b.params:
            break
        shared.append((a, b))
    if not shared:
        return ["No trial has the same values in both arms."]
    finals = sorted((t.value for t in rnd.complete), reverse=True)
    lines = [
        f"Trials #0 to #{len(shared) - 1} have the same values in both arms (the seeded random draws both "
        "samplers start from), so they compare directly:"
    ]
    for a, b in shared:
        full = fmt(b.value) if b.state == TrialState.COMPLETE else b.state.name
        rank = f", rank {finals.index(b.value) + 1} of {len(finals)} in random_fifo" if b.value in finals else ""
        if a.state == TrialState.PRUNED:
            last = a.intermediate_values[max(a.intermediate_values)] if a.intermediate_values else None
            lines.append(
                f"- #{a.number}: ASHA stopped it after {tpe.epochs(a)} epoch(s) at {fmt(last)}; trained "
                f"to the end it reached {full}{rank}."
            )
        else:
            lines.append(f"- #{a.number}: {a.state.name} in tpe_asha ({fmt(a.value)}), {full} in random_fifo{rank}.")
    if tpe.best and rnd.best and tpe.best.params == rnd.best.params and tpe.best.number < len(shared):
        lines.append(
            f"Both arms' best is the same configuration (trial #{tpe.best.number}), drawn before TPE "
            "modelled anything: in this run the best value does not separate the samplers."
        )
    return lines


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu_name()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
        f"optuna {optuna.__version__}; load average at the end {load} (1/5/15 min)"
    )


def caveats(trials: int) -> str:
    return f"""\
What this can and cannot show. It is one seed of each sampler on one small problem, with
{trials} trials per arm: the best-value column is a single draw, and a difference between
the arms of this size is within what another seed could reverse (in a four-parameter space
a few random trials can land near the optimum by luck, and TPE samples its first trials at
random too). It does not show that TPE finds better configurations than random search; that
needs many seeds and larger budgets. What it does show is mechanical and repeats with any
seed: ASHA stops trials below the cut of their rung, so the TPE + ASHA study trains fewer
trial-epochs, and takes less wall time, for the same number of trials; its stopped trials
are in the study as PRUNED with their per-epoch values, not as complete. Short runs also
favour configurations that learn fast, which is what ASHA rewards at its early rungs; on a
longer schedule the ranking may differ. With trials run one at a time, the first trials set
the cut of each rung for all later ones, so one strong early trial makes ASHA stop most of
the rest, including some that would have come close to it. Wall times include Ray's start-up for every trial
and depend on the machine's load (see the load average): compare them within one run."""


def write_results(
    path: Path, args: argparse.Namespace, command: str, results: list[ArmResult], started: datetime
) -> None:
    by_arm = {r.arm: r for r in results}
    lines = [
        "# TPE + ASHA against random search (FIFO), same trial budget",
        "",
        f"Produced by `{command}` (see the script's docstring), started {started:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Problem: SimCLR, small CNN (width {args.width}) on a Fashion-MNIST subset ({args.train_size} training, "
        f"{args.test_size} test images), {args.epochs} epochs per full trial, batch 128, AdamW; metric kNN top-1 "
        f"(k = 50) after each epoch. Space: temperature, lr, weight decay (log ranges) and crop scale "
        f"(3 choices). {args.trials} trials per arm, one at a time, sampler seed {args.seed}; TPE's first "
        f"{args.startup_trials} trials are random; ASHA grace period 1 epoch, reduction factor 2.",
        "",
        markdown_table(SUMMARY_HEADER, summary_rows(results)),
        "",
        cost_line(results),
        "",
    ]
    if "tpe_asha" in by_arm and "random_fifo" in by_arm:
        lines += [equal_budget_line(by_arm["tpe_asha"], by_arm["random_fifo"]), ""]
        lines += [*paired_lines(by_arm["tpe_asha"], by_arm["random_fifo"]), ""]
    for res in results:
        lines += [f"## {res.arm}: trials", "", markdown_table(TRIAL_HEADER, trial_rows(res)), ""]
    lines += ["## Reading", "", caveats(args.trials), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per arm (default 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a full trial (default 4)")
    parser.add_argument("--train-size", type=int, default=2048, help="Fashion-MNIST training images (default 2048)")
    parser.add_argument("--test-size", type=int, default=1000, help="test images for kNN (default 1000)")
    parser.add_argument("--width", type=int, default=16, help="small CNN width (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both samplers (default 0)")
    parser.add_argument("--startup-trials", type=int, default=3, help="random trials before TPE models (default 3)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS), help="which studies to run")
    parser.add_argument("--output", help="folder for the studies (default runs/benchmarks/tpe_vs_random-<time>)")
    parser.add_argument("--results", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    args = parser.parse_args(argv)
    for name in ("trials", "epochs", "train_size", "test_size", "width", "num_cpus"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2, so that ASHA has a rung before the last epoch")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    output = Path(args.output or ROOT / "runs" / "benchmarks" / f"tpe_vs_random-{started:%Y%m%d-%H%M%S}").resolve()
    if output.exists() and any(output.iterdir()):
        print(f"error: {output} is not empty; choose another --output", file=sys.stderr)
        return 2
    # Two cores start Ray Train worker groups slowly; Ray's 60 s default can expire.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    command = "flock /tmp/contrastlab-ray-tests.lock .venv/bin/python benchmarks/tpe_vs_random.py"
    command += "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = []
    try:
        for arm in args.arms:
            results.append(run_arm(arm, args, output))
    except (ConfigError, StudyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(plain_table(SUMMARY_HEADER, summary_rows(results)))
    print(cost_line(results))
    by_arm = {r.arm: r for r in results}
    if "tpe_asha" in by_arm and "random_fifo" in by_arm:
        print(equal_budget_line(by_arm["tpe_asha"], by_arm["random_fifo"]))
        print("\n".join(paired_lines(by_arm["tpe_asha"], by_arm["random_fifo"])))
    for res in results:
        print(f"\n{res.arm}:")
        print(plain_table(TRIAL_HEADER, trial_rows(res)))
    path = Path(args.results)
    write_results(path, args, command, results, started)
    print(f"\nstudies: {output}\nwrote {path}")
    print(
        json.dumps(
            {
                r.arm: {
                    "best": r.best.value if r.best else None,
                    "trial_epochs": r.trial_epochs,
                    "wall_s": round(r.wall_s, 1),
                }
                for r in results
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
