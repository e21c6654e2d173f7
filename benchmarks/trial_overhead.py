"""Fixed cost of a study trial: the Ray Train path against the fast path, and where a study's time goes.

Three parts, each run on its own (`--part`) and merged into one results file:

overhead  8-trial studies (FIFO) of Trifeature trials, in two sizes:
            small  1-epoch trials on 512 images (the target's setting)
            long   3-epoch trials on 2048 images (trials of a few seconds)
          Each round runs, the arms interleaved (their order rotated from round to round):
            in_process  the 8 trials' configs through `engine.train` in this process: the time
                        inside the training loop (data load, epochs, final evaluation)
            train       small size, `resources.trial_path: train`, one trial at a time
            fast        the fast path (`trial_path: auto`), one trial at a time
            fast_2      the fast path with the default concurrency (two one-CPU trials on 2 CPUs)
          overhead per trial = study wall time / 8 − mean in-process time of a trial
          study ratio        = (Ray start + study wall time) / (Ray start + sum of in-process times)
          Each study's time is split into phases (cluster check and study setup, Tune's `fit`,
          checkpoint sweep, anchors, reports) and, inside `fit`, into when each trial started
          and ended (a Tune callback) and the trial's own time (`time_total_s`).
workers   a study of two 2-worker trials (Ray Train path) run by this code and by the code
          before the fast path (`--before`, a folder holding that version's `platform/`), each
          in a child process that starts its own Ray: overhead per trial, and the trials'
          metrics compared.
disk      a 32-trial study of small trials with the default `keep_checkpoints` on each path:
          the size of its output folder (du).

Ray is started once per round (timed) and shared by the round's studies; the Ray tests' host
lock is held while Ray runs and released between rounds, so test runs can interleave. Each
round records the load average (1 min) as it starts and ends; figures are medians of
per-round values and ratios.

    OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py --part overhead --rounds 3 [--train-rounds 1]
    git archive 72fefa4^1 platform | tar -x -C /tmp/contrastlab-before   # main before the fast path
    OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py --part workers --rounds 3 --before /tmp/contrastlab-before
    OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py --part disk --paths auto train
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
LOCK = Path(os.environ.get("CONTRASTLAB_RAY_LOCK", "/tmp/contrastlab-ray-tests.lock"))
TRIALS = 8
LRS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
SIZES = {"small": (512, 1), "long": (2048, 3)}  # training images, epochs
TIMING_KEYS = ("time", "timestamp", "throughput", "epoch_seconds", "pid", "date", "hostname", "node_ip", "iterations")


@contextmanager
def host_lock():
    """The Ray tests' host lock (tests/conftest.py `ray_host_lock`): one Ray cluster at a time."""
    LOCK.touch(exist_ok=True)
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_config(size: str = "small") -> dict:
    images, epochs = SIZES[size]
    return {
        "name": f"overhead-{size}",
        # 128 generated images are carved off for validation
        "data": {
            "name": "trifeature",
            "trifeature_train": images + 128,
            "val_size": 128,
            "trifeature_test": 256,
            "image_size": 16,
        },
        "model": {"encoder": "small_cnn", "width": 8, "projector_hidden": 32, "projector_out": 16},
        "method": {"name": "simclr", "temperature": 0.5},
        "optim": {"batch_size": 64, "epochs": epochs, "warmup_epochs": 0, "lr": 0.3},
        "eval": {"knn_every": 0, "knn_k": 20, "probe_epochs": 5, "align_uniform": False},
        "output": {"progress_every": 0},
        "resources": {"device": "cpu"},
    }


def study_spec(
    trial_path: str | None, concurrent: int | None, size: str = "small", workers: int = 1, lrs=LRS, samples=None
) -> dict:
    resources = {"workers": workers, "cpus_per_worker": 1}
    if trial_path:  # the code before the fast path has no trial_path key
        resources["trial_path"] = trial_path
    spec = {
        "name": f"overhead-{trial_path}-{size}",
        "base": base_config(size),
        "metric": "loss",
        "mode": "min",
        "num_samples": samples or len(lrs),
        "space": {"optim.lr": {"type": "categorical", "choices": lrs}},
        "points_to_evaluate": [{"optim.lr": lr} for lr in lrs],
        "scheduler": {"type": "fifo"},
        "resources": resources,
        "max_concurrent_trials": concurrent,
    }
    if samples:
        spec["space"] = {"optim.lr": {"type": "float", "low": 0.05, "high": 0.8, "log": True}}
        del spec["points_to_evaluate"]
    return spec


def in_process(folder: Path, size: str, lrs=LRS) -> list[float]:
    from contrastlab.config import config_from_dict
    from contrastlab.engine import train

    seconds = []
    for index, lr in enumerate(lrs):
        cfg = config_from_dict({**base_config(size), "seed": 1000}, "<benchmark>").with_overrides({"optim.lr": lr})
        started = time.perf_counter()
        train(cfg, folder / f"run{index}")
        seconds.append(time.perf_counter() - started)
    return seconds


class Phases:
    """Times `run_study`'s steps by wrapping the runner's module functions for one study, and
    notes (a Tune callback) when each trial starts and completes, with its last result."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.events: list[tuple[str, str, float, dict]] = []

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                if name == "fit":
                    self.fit_span = (started, time.perf_counter())

        return wrapper

    @contextmanager
    def installed(self):
        from ray.tune.logger import CSVLoggerCallback

        from contrastlab.tuning import runner

        phases = self

        class Timeline(CSVLoggerCallback):
            def on_trial_start(self, iteration, trials, trial, **info):
                phases.events.append(("start", trial.trial_id, time.perf_counter(), {}))
                super().on_trial_start(iteration, trials, trial, **info)

            def on_trial_complete(self, iteration, trials, trial, **info):
                last = dict(trial.last_result or {})
                phases.events.append(("complete", trial.trial_id, time.perf_counter(), last))
                super().on_trial_complete(iteration, trials, trial, **info)

        def build_tuner(*args, **kwargs):
            tuner = original["build_tuner"](*args, **kwargs)
            tuner.fit = self.timed("fit", tuner.fit)
            return tuner

        def checkpoint_retention(*args, **kwargs):
            retention = original["checkpoint_retention"](*args, **kwargs)
            retention.sweep_study = self.timed("sweep", retention.sweep_study)
            return retention

        names = ("check_study_cluster", "prepare_study", "build_tuner", "checkpoint_retention")
        names += ("study_anchors", "write_outputs", "CSVLoggerCallback")
        original = {name: getattr(runner, name) for name in names}
        runner.check_study_cluster = self.timed("setup", original["check_study_cluster"])
        runner.prepare_study = self.timed("setup", original["prepare_study"])
        runner.build_tuner = build_tuner
        runner.checkpoint_retention = checkpoint_retention
        runner.study_anchors = self.timed("anchors", original["study_anchors"])
        runner.write_outputs = self.timed("reports", original["write_outputs"])
        runner.CSVLoggerCallback = Timeline
        try:
            yield self
        finally:
            for name, fn in original.items():
                setattr(runner, name, fn)

    def summary(self, wall: float) -> dict:
        fit_start, fit_end = self.fit_span
        starts = {tid: t for kind, tid, t, _ in self.events if kind == "start"}
        ends = {tid: (t, r) for kind, tid, t, r in self.events if kind == "complete"}
        first = sorted(starts.values())
        pids_seen, actor_starts = set(), []
        for tid in sorted(starts, key=starts.get):
            pid = ends.get(tid, (0, {}))[1].get("pid")
            if pid not in pids_seen:
                pids_seen.add(pid)
                actor_starts.append(starts[tid] - fit_start)
        inside = [r.get("time_total_s", 0.0) for _, r in ends.values()]
        driver = [ends[tid][0] - starts[tid] for tid in ends if tid in starts]
        phases = dict(self.seconds)
        phases["other"] = wall - sum(phases.values())
        return {
            "phases_s": phases,
            "actors": len(pids_seen),
            "actor_first_trial_start_s": actor_starts,  # from fit's start, one per actor
            "first_trial_start_s": first[0] - fit_start if first else None,
            "trial_in_actor_s": statistics.mean(inside) if inside else None,  # time_total_s
            "trial_driver_s": statistics.mean(driver) if driver else None,  # start → complete
            "after_last_trial_s": fit_end - max(t for t, _ in ends.values()) if ends else None,
        }


def timed_study(folder: Path, spec: dict, address: str | None) -> dict:
    from contrastlab.tuning.runner import run_study
    from contrastlab.tuning.spec import load_spec

    folder.mkdir(parents=True)
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    with Phases().installed() as phases:
        started = time.perf_counter()
        outcome = run_study(load_spec(spec_file), folder / "out", address=address)
        wall = time.perf_counter() - started
    states = [t.state.name for t in outcome.study.get_trials(deepcopy=False)]
    assert states == ["COMPLETE"] * spec["num_samples"], states
    return {"wall_s": wall, "du_kib": du(folder / "out"), **phases.summary(wall)}


def du(folder: Path) -> dict[str, int]:
    """KiB on disk of the folder and of each folder in it (`du -k -d 1`)."""
    out = subprocess.run(["du", "-k", "-d", "1", str(folder)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        kib, path = line.split("\t", 1)
        sizes["total" if Path(path) == folder else Path(path).name] = int(kib)
    return sizes


def start_ray() -> tuple[float, str]:
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - started, ray.get_runtime_context().gcs_address


# -- part overhead ---------------------------------------------------------------------------------
def overhead_round(folder: Path, index: int, with_train: bool) -> dict:
    """One round: Ray started (timed), then every arm, the in-process ones included, in an order
    rotated from round to round, all while the host lock is held, so that they share one spell
    of the machine's load."""
    import ray

    arms = {
        "in_process": ("small", None, None),
        "train": ("small", "train", 1),
        "fast": ("small", "auto", 1),
        "fast_2": ("small", "auto", None),
        "long_in_process": ("long", None, None),
        "long_fast": ("long", "auto", 1),
        "long_fast_2": ("long", "auto", None),
    }
    if not with_train:
        del arms["train"]
    names = list(arms)
    names = names[index % len(names) :] + names[: index % len(names)]
    row: dict = {"train_arm": with_train, "order": names}
    with host_lock():
        row["load_start"] = os.getloadavg()[0]
        try:
            row["ray_start_s"], address = start_ray()
            for name in names:
                size, path, concurrent = arms[name]
                if path is None:
                    row[name + "_s"] = in_process(folder / name, size)
                else:
                    row[name] = timed_study(folder / name, study_spec(path, concurrent, size), address)
        finally:
            ray.shutdown()
        row["load_end"] = os.getloadavg()[0]
    small, long = statistics.mean(row["in_process_s"]), statistics.mean(row["long_in_process_s"])
    ray_start = row["ray_start_s"]
    for name in names:
        if name.endswith("in_process"):
            continue
        trial = long if name.startswith("long") else small
        total = sum(row["long_in_process_s"] if name.startswith("long") else row["in_process_s"])
        row[name]["overhead_s"] = row[name]["wall_s"] / TRIALS - trial
        row[name]["study_ratio"] = (ray_start + row[name]["wall_s"]) / (ray_start + total)
    if with_train:
        row["ratio"] = row["train"]["overhead_s"] / max(row["fast"]["overhead_s"], 1e-9)
    return row


# -- part workers ----------------------------------------------------------------------------------
WORKER_LRS = [0.1, 0.3]


def child(spec_file: str, out: str, result_file: str) -> None:
    """In a child process (its own PYTHONPATH, its own Ray): one study, timed, and its trials' metrics."""
    import ray
    import torch

    torch.set_num_threads(1)
    from contrastlab.tuning.runner import run_study
    from contrastlab.tuning.spec import load_spec

    ray_start, address = start_ray()
    try:
        started = time.perf_counter()
        outcome = run_study(load_spec(Path(spec_file)), Path(out), address=address)
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    states = [t.state.name for t in outcome.study.get_trials(deepcopy=False)]
    metrics = {}
    for result in Path(out).rglob("result.json"):
        lines = result.read_text().splitlines()
        if not lines:
            continue
        last = json.loads(lines[-1])
        keep = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not k.startswith(TIMING_KEYS)}
        where = "/".join(result.relative_to(out).parts[:2])  # Tune's results or the Train runs'
        metrics[where + " " + json.dumps(last.get("config"), sort_keys=True, default=str)] = keep
    Path(result_file).write_text(
        json.dumps({"ray_start_s": ray_start, "wall_s": wall, "states": states, "metrics": metrics})
    )


def workers_round(folder: Path, index: int, before: Path) -> dict:
    row: dict = {"load_start": os.getloadavg()[0]}
    with host_lock():  # no Ray here, but the lock keeps this arm off this benchmark's own Ray sections
        row["in_process_s"] = in_process(folder / "in_process", "small", WORKER_LRS)
    codes = {"now": Path(__file__).resolve().parents[1] / "platform", "before": before.resolve() / "platform"}
    names = list(codes)[index % 2 :] + list(codes)[: index % 2]
    row["order"] = names
    for name in names:
        run = folder / name
        run.mkdir(parents=True)
        spec = study_spec(None, 1, "small", workers=2, lrs=WORKER_LRS)
        # 2 x 1 CPU of workers and the driver's 0.01 CPU do not fit a 2-CPU cluster (the trial
        # waits for its worker group forever): half a CPU per worker, as the tests use
        spec["resources"]["cpus_per_worker"] = 0.5
        (run / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        env = {**os.environ, "PYTHONPATH": str(codes[name]), "OMP_NUM_THREADS": "1"}
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(run / "spec.yaml"),
            str(run / "out"),
            str(run / "result.json"),
        ]
        with host_lock():
            subprocess.run(args, env=env, check=True, cwd=run)
        row[name] = json.loads((run / "result.json").read_text())
        row[name]["overhead_s"] = row[name]["wall_s"] / len(WORKER_LRS) - statistics.mean(row["in_process_s"])
    row["load_end"] = os.getloadavg()[0]
    row["metrics_equal"] = metric_differences(row["before"]["metrics"], row["now"]["metrics"])
    return row


def metric_differences(before: dict, now: dict) -> dict:
    """Largest absolute difference per metric over the trials both runs have (None: absent in one)."""
    out: dict = {}
    for lr in sorted(set(before) | set(now)):
        a, b = before.get(lr, {}), now.get(lr, {})
        for key in sorted(set(a) | set(b)):
            diff = abs(a[key] - b[key]) if key in a and key in b else None
            out[key] = diff if out.get(key, 0.0) is None or diff is None else max(out.get(key, 0.0), diff)
    return out


# -- part disk -------------------------------------------------------------------------------------
def disk(folder: Path, paths: list[str]) -> dict:
    import ray

    row: dict = {"load_start": os.getloadavg()[0]}
    with host_lock():
        try:
            row["ray_start_s"], address = start_ray()
            for path in paths:
                row[path] = timed_study(folder / path, study_spec(path, None, samples=32), address)
        finally:
            ray.shutdown()
    row["load_end"] = os.getloadavg()[0]
    return row


# -- report ----------------------------------------------------------------------------------------
READING = "<!-- reading: kept when the tables are rewritten -->"


def f(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load(row: dict) -> str:
    return f"{row['load_start']:.1f} → {row['load_end']:.1f}"


def overhead_section(part: dict, title: str = "One-worker trials: overhead and study time") -> list[str]:
    rows = part["rounds"]
    lines = [
        f"## {title}",
        "",
        f"Command: `{part['command']}` ({part['date']}, {len(rows)} round(s); the Ray Train arm ran in "
        f"{sum(r['train_arm'] for r in rows)} of them). Small trials: 1 epoch on 512 images; long "
        "trials: 3 epochs on 2048 images; 8 trials per study, FIFO. Study ratio = (Ray start + study "
        "wall time) / (Ray start + sum of the 8 in-process times); target ≤ 1.5×. Overhead = study "
        "wall time / 8 − mean in-process time; target ≤ 3 s per trial.",
        "",
        "| round | load (1 min) | in-process trial (s) | Ray start (s) | train path study (s) | fast study (s) "
        "| fast, 2 at once (s) | overhead train (s/trial) | overhead fast (s/trial) | ratio train/fast "
        "| study ratio, 1 at once | study ratio, 2 at once |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        train = r.get("train", {})
        lines.append(
            f"| {i + 1} | {load(r)} | {statistics.mean(r['in_process_s']):.2f} | {r['ray_start_s']:.1f} "
            f"| {f(train.get('wall_s'))} | {r['fast']['wall_s']:.1f} | {r['fast_2']['wall_s']:.1f} "
            f"| {f(train.get('overhead_s'), 2)} | {r['fast']['overhead_s']:.2f} | {f(r.get('ratio'))} "
            f"| {r['fast']['study_ratio']:.2f} | {r['fast_2']['study_ratio']:.2f} |"
        )
    trains = [r for r in rows if r["train_arm"]]
    train = (
        f"{median(r['train']['overhead_s'] for r in trains):.2f} s/trial on the Ray Train path ({len(trains)} "
        f"round(s)) against "
        if trains
        else ""
    )
    ratio = f"; per-round ratio {median(r['ratio'] for r in trains):.1f}" if trains else " (no Ray Train arm)"
    lines += [
        "",
        f"Medians over rounds: overhead {train}{median(r['fast']['overhead_s'] for r in rows):.2f} s/trial on "
        f"the fast path{ratio}. Study ratio (small trials): {median(r['fast']['study_ratio'] for r in rows):.2f}× "
        f"one at a time, {median(r['fast_2']['study_ratio'] for r in rows):.2f}× two at once.",
        "",
        "Long trials (3 epochs on 2048 images), same rounds:",
        "",
        "| round | in-process trial (s) | fast study (s) | fast, 2 at once (s) | overhead fast (s/trial) "
        "| study ratio, 1 at once | study ratio, 2 at once | 2 at once / 1 at once |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        one, two = r["long_fast"], r["long_fast_2"]
        lines.append(
            f"| {i + 1} | {statistics.mean(r['long_in_process_s']):.2f} | {one['wall_s']:.1f} | {two['wall_s']:.1f} "
            f"| {one['overhead_s']:.2f} | {one['study_ratio']:.2f} | {two['study_ratio']:.2f} "
            f"| {two['wall_s'] / one['wall_s']:.2f} |"
        )
    lines += [
        "",
        f"Medians: study ratio {median(r['long_fast']['study_ratio'] for r in rows):.2f}× one at a time, "
        f"{median(r['long_fast_2']['study_ratio'] for r in rows):.2f}× two at once; two at once takes "
        f"{median(r['long_fast_2']['wall_s'] / r['long_fast']['wall_s'] for r in rows):.2f}× the time of one "
        "at a time (median of per-round ratios).",
        "",
        "### Where a fast-path study's time goes",
        "",
        "Seconds. setup: cluster check and study creation; fit: Tune's `fit` (trials); first trial: "
        "from `fit`'s start to the first trial's start (Tune set-up, first actor); actors: when each "
        "actor's first trial started, from `fit`'s start; in actor: a trial's own `time_total_s` "
        "(mean); start→end: the trial's start to its completion as the driver sees it (mean); after: "
        "last completion to the end of `fit`; then the checkpoint sweep, the anchors and the reports.",
        "",
        "| round | arm | wall | setup | fit | first trial | actors | in actor | start→end | after "
        "| sweep | anchors | reports | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        for arm in ("fast", "fast_2", "long_fast", "long_fast_2", "train"):
            if arm not in r:
                continue
            a, ph = r[arm], r[arm]["phases_s"]
            actors = ", ".join(f"{t:.1f}" for t in a["actor_first_trial_start_s"])
            lines.append(
                f"| {i + 1} | {arm} | {a['wall_s']:.1f} | {ph.get('setup', 0):.1f} | {ph.get('fit', 0):.1f} "
                f"| {f(a['first_trial_start_s'])} | {actors} | {f(a['trial_in_actor_s'], 2)} "
                f"| {f(a['trial_driver_s'], 2)} | {f(a['after_last_trial_s'])} | {ph.get('sweep', 0):.1f} "
                f"| {ph.get('anchors', 0):.1f} | {ph.get('reports', 0):.1f} | {ph.get('other', 0):.1f} |"
            )
    lines += ["", "Output folder of each 8-trial study (du, KiB, median over rounds):", ""]
    lines += ["| arm | total | trials/ | ray/ |", "|---|---|---|---|"]
    for arm in ("train", "fast", "fast_2", "long_fast", "long_fast_2"):
        sizes = [r[arm]["du_kib"] for r in rows if arm in r]
        if sizes:
            lines.append(
                f"| {arm} | {median(s['total'] for s in sizes):,.0f} | {median(s.get('trials') for s in sizes):,.0f} "
                f"| {median(s.get('ray') for s in sizes):,.0f} |"
            )
    return lines + [""]


def workers_section(part: dict) -> list[str]:
    rows = part["rounds"]
    lines = [
        "## Two-worker trials (Ray Train path): this code against the code before the fast path",
        "",
        f"Command: `{part['command']}` ({part['date']}, {len(rows)} round(s), the two versions' order "
        "alternating). A study of two trials (lr 0.1, 0.3), `workers: 2`, `cpus_per_worker: 0.5`, one "
        "trial at a time, small trials; each version in its own process with its own Ray (Ray start "
        "not counted in the study's time). Overhead = study wall time / 2 − the in-process time of the "
        "same config in one process.",
        "",
        "| round | load (1 min) | order | in-process trial (s) | study before (s) | study now (s) "
        "| overhead before (s/trial) | overhead now (s/trial) | now / before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        b, n = r["before"], r["now"]
        lines.append(
            f"| {i + 1} | {load(r)} | {' then '.join(r['order'])} | {statistics.mean(r['in_process_s']):.2f} "
            f"| {b['wall_s']:.1f} | {n['wall_s']:.1f} | {b['overhead_s']:.1f} | {n['overhead_s']:.1f} "
            f"| {n['wall_s'] / b['wall_s']:.2f} |"
        )
    diffs: dict = {}
    for r in rows:
        for key, value in r["metrics_equal"].items():
            diffs[key] = None if value is None or diffs.get(key, 0.0) is None else max(value, diffs.get(key, 0.0))
    lines += [
        "",
        f"Medians: overhead {median(r['now']['overhead_s'] for r in rows):.1f} s per 2-worker trial now, "
        f"{median(r['before']['overhead_s'] for r in rows):.1f} s before; study time now / before "
        f"{median(r['now']['wall_s'] / r['before']['wall_s'] for r in rows):.2f} (median of per-round ratios).",
        "",
        "Final metrics of the same trials, before against now, largest absolute difference over trials "
        "and rounds (timings left out):",
        "",
        "| metric | largest difference |",
        "|---|---|",
    ]
    lines += [f"| {key} | {'absent in one version' if d is None else f'{d:.3g}'} |" for key, d in diffs.items()]
    return lines + [""]


def disk_section(part: dict) -> list[str]:
    r = part["rounds"][0]
    lines = [
        "## Output size of a 32-trial study",
        "",
        f"Command: `{part['command']}` ({part['date']}; load {load(r)}). Small trials (1 epoch on 512 "
        "images, a checkpoint each epoch), lr drawn from [0.05, 0.8] (log), default concurrency, "
        "default `keep_checkpoints` (3). du of the output folder, KiB:",
        "",
        "| trial path | study wall time (s) | total | trials/ | ray/ | other entries |",
        "|---|---|---|---|---|---|",
    ]
    for path in ("auto", "train"):
        if path in r:
            sizes = r[path]["du_kib"]
            other = sizes["total"] - sizes.get("trials", 0) - sizes.get("ray", 0)
            lines.append(
                f"| {path} | {r[path]['wall_s']:.0f} | {sizes['total']:,} | {sizes.get('trials', 0):,} "
                f"| {sizes.get('ray', 0):,} | {other:,} |"
            )
    return lines + [""]


def write_report(recorded: dict, path: Path) -> None:
    lines = [
        "# Fixed cost of a study trial",
        "",
        "`benchmarks/trial_overhead.py`, on the project's 2-core development machine, shared with other "
        "work (the load average beside each round). Figures are medians over rounds of per-round values.",
        "",
    ]
    sections = {
        "overhead": overhead_section,
        "overhead_train": lambda part: overhead_section(
            part, "The Ray Train path arm (one round; " + part.get("note", "") + ")"
        ),
        "workers": workers_section,
        "disk": disk_section,
    }
    for name, section in sections.items():
        if name in recorded:
            lines += section(recorded[name])
    reading = ""
    if path.exists() and READING in path.read_text():
        reading = path.read_text().split(READING, 1)[1]
    path.write_text("\n".join(lines) + "\n" + READING + reading)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["overhead", "workers", "disk"], default="overhead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-rounds", type=int, help="rounds that run the train arm (default: all)")
    parser.add_argument("--before", type=Path, help="workers: a folder holding the earlier code's platform/")
    parser.add_argument("--paths", nargs="+", default=["auto", "train"], help="disk: trial paths to run")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the Markdown from the recorded JSON")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.report_only:
        write_report(json.loads((RESULTS / "trial_overhead.json").read_text()), RESULTS / "trial_overhead.md")
        return
    if args.child:
        child(*args.child)
        return
    import torch

    torch.set_num_threads(1)
    command = "OMP_NUM_THREADS=1 python benchmarks/trial_overhead.py " + " ".join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds if args.part != "disk" else 1):
            folder = Path(tmp) / f"round{index}"
            if args.part == "overhead":
                train_rounds = args.rounds if args.train_rounds is None else args.train_rounds
                rows.append(overhead_round(folder, index, index < train_rounds))
            elif args.part == "workers":
                rows.append(workers_round(folder, index, args.before))
            else:
                rows.append(disk(folder, args.paths))
            print(json.dumps(rows[-1], indent=1, default=str), flush=True)
            record(args.part, command, rows)  # after every round: a late round cannot lose the others


def record(part: str, command: str, rows: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / "trial_overhead.json"
    recorded = json.loads(store.read_text()) if store.exists() else {}
    recorded[part] = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": rows}
    store.write_text(json.dumps(recorded, indent=1, default=str))
    write_report(recorded, RESULTS / "trial_overhead.md")


if __name__ == "__main__":
    main()
