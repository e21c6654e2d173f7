"""Ray Train's cost per run, against the same training loop run in-process.

Three runs of one config (CPU unless the config asks for GPUs):
  in_process  `engine.train` in this process
  ray_1w      the CLI's Ray path with one worker owning every CPU: a local Ray instance is
              started, the worker group runs the same loop, reports and checkpoints through
              Ray each epoch, and Ray is stopped again
  ray_2w      the same with two DDP workers, one CPU each, same global batch

Ray's overhead is measured inside each Ray run, so that the load of other processes on the
machine, which changes from one run to the next, does not enter a difference of two runs:
  fixed      wall time of the whole call − time inside the worker's training function
             (instance start, worker group start with its imports, process group, shutdown)
  per epoch  time in `ray.train.report` (a barrier, plus the checkpoint copy to storage)
Both are applied to a run that takes `--target-minutes` in-process, the honest way to state
"≤ 10 % of a 5-minute run" from runs that are short. Imports in this process are excluded.

    python benchmarks/ray_overhead.py                  # 3 epochs on synthetic Trifeature
    python benchmarks/ray_overhead.py --epochs 5 --train-size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from contrastlab.config import ExperimentConfig, config_from_dict
from contrastlab.engine import train

RESULTS = Path(__file__).resolve().parent / "results"


def build_config(args, epochs: int, workers: int, cpus_per_worker: float) -> ExperimentConfig:
    return config_from_dict(
        {
            "name": "overhead",
            "seed": 0,
            "data": {
                "name": "trifeature",
                "trifeature_train": args.train_size,
                "trifeature_test": 512,
                "image_size": 32,
            },
            "model": {"encoder": "small_cnn", "width": args.width, "projector_hidden": 128, "projector_out": 64},
            "method": {"name": "simclr", "temperature": 0.5},
            "optim": {"batch_size": args.batch_size, "epochs": epochs, "warmup_epochs": 0, "lr": 0.3},
            "eval": {"knn_every": 0, "knn_k": 50, "probe_epochs": 10},
            "output": {"progress_every": 0, "tensorboard": True},
            "resources": {"device": "cpu", "workers": workers, "cpus_per_worker": cpus_per_worker},
        },
        "<benchmark>",
    )


def timed_in_process(cfg: ExperimentConfig, run_dir: Path) -> dict:
    started = time.perf_counter()
    metrics = train(cfg, run_dir)
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "loop_s": wall,
        "report_s": 0.0,
        "throughput": [metrics["throughput"]],
        "loss": metrics["loss"],
    }


def timed_worker_loop(loop_config: dict) -> dict:
    """`train_loop_per_worker` with stopwatches around it and around every report (rank 0's
    result comes back as the run's return value)."""
    from contrastlab.raytrain import worker

    spent = {"report_s": 0.0, "throughput": []}
    report = worker.RayReporter.report

    def timed_report(self, metrics, checkpoint_dir):
        started = time.perf_counter()
        report(self, metrics, checkpoint_dir)
        spent["report_s"] += time.perf_counter() - started
        spent["throughput"].append(metrics["throughput"])
        spent["loss"] = metrics["loss"]

    worker.RayReporter.report = timed_report
    started = time.perf_counter()
    worker.train_loop_per_worker(loop_config)
    spent["loop_s"] = time.perf_counter() - started
    return spent


def timed_ray(cfg: ExperimentConfig, run_dir: Path) -> dict:
    """What `run_ray_training` does (local instance, checks, fit, shutdown), timed."""
    import ray

    from contrastlab.raytrain import make_trainer, run_name
    from contrastlab.raytrain.cluster import check_cluster_resources, check_distributed_config, resolve_storage
    from contrastlab.raytrain.session import init_ray

    started = time.perf_counter()
    check_distributed_config(cfg)
    storage = resolve_storage(None, run_dir)
    init_ray(None)
    try:
        check_cluster_resources(cfg, strict=True)
        trainer = make_trainer(cfg, run_dir, run_name(run_dir), storage)
        trainer.train_loop_per_worker = timed_worker_loop
        inside = trainer.fit().return_value
    finally:
        ray.shutdown()
    return {"wall_s": time.perf_counter() - started, **inside}


def measure(args) -> dict:
    cpus = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as scratch:
        folder = Path(scratch)
        timed_in_process(build_config(args, 1, 1, cpus), folder / "warm-up")  # generate and cache the data
        plan = [
            ("in_process", 1, cpus, timed_in_process),
            ("ray_1w", 1, cpus, timed_ray),
            ("ray_2w", 2, cpus / 2, timed_ray),
        ]
        for name, workers, per_worker, runner in plan:
            timings = runner(build_config(args, args.epochs, workers, per_worker), folder / name)
            rows.append({"run": name, "workers": workers, "cpus_per_worker": per_worker, **timings})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "summary": summarise(rows, args)}


def steady_throughput(row: dict) -> float:
    """Images/s of the best epoch after the first (the first pays for warm-up)."""
    values = row["throughput"][1:] or row["throughput"]
    return max(values)


def summarise(rows: list[dict], args) -> dict:
    by_run = {row["run"]: row for row in rows}
    one = by_run["ray_1w"]
    fixed = one["wall_s"] - one["loop_s"]
    per_epoch = one["report_s"] / args.epochs
    epoch_s = (one["loop_s"] - one["report_s"]) / args.epochs  # the loop's own time per epoch
    target_s = args.target_minutes * 60
    target_epochs = target_s / epoch_s
    target_overhead = fixed + per_epoch * target_epochs
    return {
        "fixed_overhead_s": fixed,
        "per_epoch_overhead_s": per_epoch,
        "loop_epoch_s": epoch_s,
        "target_run_s": target_s,
        "target_run_epochs": target_epochs,
        "target_overhead_s": target_overhead,
        "target_overhead_fraction": target_overhead / (target_s + target_overhead),
        "throughput_in_process": steady_throughput(by_run["in_process"]),
        "throughput_1_worker": steady_throughput(one),
        "throughput_2_workers": steady_throughput(by_run["ray_2w"]),
    }


def report(args, result: dict) -> str:
    s = result["summary"]
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [
        f"## {result['date']} — {result['machine']}",
        "",
        f"`python benchmarks/ray_overhead.py --epochs {args.epochs} --train-size {args.train_size} "
        f"--batch-size {args.batch_size} --width {args.width}` (torch {torch.__version__}, ray {result['ray']}; "
        f"load average before the runs: {load})",
        "",
        "| run | workers × CPUs | wall s | in training function s | in reports s | img/s (best epoch ≥ 2) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['run']} | {r['workers']} × {r['cpus_per_worker']:g} | {r['wall_s']:.1f} | "
            f"{r['loop_s']:.1f} | {r['report_s']:.2f} | {steady_throughput(r):.0f} |"
        )
    lines += [
        "",
        f"- Ray overhead per run: **{s['fixed_overhead_s']:.1f} s fixed** (instance and worker start-up, "
        f"shutdown) + **{s['per_epoch_overhead_s']:.2f} s per epoch** (report and checkpoint copy).",
        f"- Extrapolated to a {args.target_minutes:g}-minute run ({s['target_run_epochs']:.0f} epochs of "
        f"{s['loop_epoch_s']:.1f} s): {s['target_overhead_s']:.1f} s overhead = "
        f"**{100 * s['target_overhead_fraction']:.1f} % of the wall time** (target ≤ 10 %).",
        f"- DDP throughput, same global batch: 1 worker {s['throughput_1_worker']:.0f} img/s, 2 workers "
        f"{s['throughput_2_workers']:.0f} img/s (×{s['throughput_2_workers'] / s['throughput_1_worker']:.2f}); "
        f"in-process {s['throughput_in_process']:.0f} img/s.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--target-minutes", type=float, default=5.0)
    parser.add_argument("--output", help="Markdown file to append to (default benchmarks/results/ray_overhead.md)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch pays for warm-up)")
    return args


def main(argv=None) -> None:
    import ray

    args = parse_args(argv)
    # Worker groups start slowly on small machines; Ray's default of 60 s is too tight there.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    load = os.getloadavg()
    result = measure(args)
    result.update(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        ray=ray.__version__,
        load_average=load,
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}",
    )
    text = report(args, result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.output) if args.output else RESULTS / "ray_overhead.md"
    previous = path.read_text() if path.exists() else "# Ray Train overhead\n\n"
    path.write_text(previous + text + "\n")
    path.with_suffix(".json").write_text(json.dumps({"args": vars(args), **result}, indent=1, default=str))


if __name__ == "__main__":
    main()
