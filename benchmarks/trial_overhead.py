"""Fixed cost of a one-worker study trial: the Ray Train path against the fast path.

An 8-trial study of 1-epoch trials on 512 Trifeature images (FIFO, trials one at a time so
that each trial's cost is its own), run three ways in each round, the arms interleaved:
  in_process  the 8 trials' configs through `engine.train` in this process: the time inside
              the training loop (data load, epoch, final evaluation)
  train       `contrastlab tune` with `resources.trial_path: train` (a TorchTrainer per trial)
  fast        the same study on the fast path (`trial_path: auto`, the default)
  fast_2      the fast path with the default concurrency (two one-CPU trials at once on 2 CPUs)

  overhead per trial = (study wall time) / 8 − mean in-process time of a trial
  study ratio        = fast_2 study wall time / (Ray start + sum of in-process times)

Ray is started once per round (timed) and shared by the three studies. Each round's ratio
train overhead / fast overhead is reported, with the median over rounds and the load average.
The Ray tests' host lock is held while Ray runs, so the benchmark never shares the host's
Ray with a test run.

    python benchmarks/trial_overhead.py --rounds 1
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
LOCK = Path(os.environ.get("CONTRASTLAB_RAY_LOCK", "/tmp/contrastlab-ray-tests.lock"))
TRIALS = 8
LRS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]


def base_config() -> dict:
    return {
        "name": "overhead",
        # 640 generated images, 128 of them carved off for validation: 512 to train on
        "data": {
            "name": "trifeature",
            "trifeature_train": 640,
            "val_size": 128,
            "trifeature_test": 256,
            "image_size": 16,
        },
        "model": {"encoder": "small_cnn", "width": 8, "projector_hidden": 32, "projector_out": 16},
        "method": {"name": "simclr", "temperature": 0.5},
        "optim": {"batch_size": 64, "epochs": 1, "warmup_epochs": 0, "lr": 0.3},
        "eval": {"knn_every": 0, "knn_k": 20, "probe_epochs": 5, "align_uniform": False},
        "output": {"progress_every": 0},
        "resources": {"device": "cpu"},
    }


def study_spec(trial_path: str, concurrent: int | None) -> dict:
    return {
        "name": f"overhead-{trial_path}",
        "base": base_config(),
        "metric": "loss",
        "mode": "min",
        "num_samples": TRIALS,
        "space": {"optim.lr": {"type": "categorical", "choices": LRS}},
        "points_to_evaluate": [{"optim.lr": lr} for lr in LRS],
        "scheduler": {"type": "fifo"},
        "resources": {"workers": 1, "cpus_per_worker": 1, "trial_path": trial_path},
        "max_concurrent_trials": concurrent,
    }


def in_process(folder: Path) -> list[float]:
    from contrastlab.config import config_from_dict
    from contrastlab.engine import train

    seconds = []
    for index, lr in enumerate(LRS):
        cfg = config_from_dict({**base_config(), "seed": 1000}, "<benchmark>").with_overrides({"optim.lr": lr})
        started = time.perf_counter()
        train(cfg, folder / f"run{index}")
        seconds.append(time.perf_counter() - started)
    return seconds


def timed_study(folder: Path, spec: dict, address: str) -> float:
    from contrastlab.tuning.runner import run_study
    from contrastlab.tuning.spec import load_spec

    folder.mkdir(parents=True)
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.perf_counter()
    outcome = run_study(load_spec(spec_file), folder / "out", address=address)
    wall = time.perf_counter() - started
    states = [t.state.name for t in outcome.study.get_trials(deepcopy=False)]
    assert states == ["COMPLETE"] * TRIALS, states
    return wall


def one_round(folder: Path) -> dict:
    import ray
    import torch

    torch.set_num_threads(1)
    row: dict = {"in_process_s": in_process(folder / "in_process")}
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            started = time.perf_counter()
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            row["ray_start_s"] = time.perf_counter() - started
            address = ray.get_runtime_context().gcs_address
            row["train_s"] = timed_study(folder / "train", study_spec("train", 1), address)
            row["fast_s"] = timed_study(folder / "fast", study_spec("auto", 1), address)
            row["fast_2_s"] = timed_study(folder / "fast_2", study_spec("auto", None), address)
        finally:
            ray.shutdown()
            fcntl.flock(handle, fcntl.LOCK_UN)
    trial = statistics.mean(row["in_process_s"])
    row["train_overhead_s"] = row["train_s"] / TRIALS - trial
    row["fast_overhead_s"] = row["fast_s"] / TRIALS - trial
    row["ratio"] = row["train_overhead_s"] / max(row["fast_overhead_s"], 1e-9)
    row["study_ratio"] = row["fast_2_s"] / (row["ray_start_s"] + sum(row["in_process_s"]))
    return row


def report(rows: list[dict], load: tuple[float, ...], command: str) -> str:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    lines = [
        "# Fixed cost of a one-worker study trial",
        "",
        f"Command: `{command}` ({len(rows)} round(s); load average before: "
        f"{', '.join(f'{x:.2f}' for x in load)}; the machine's 2 cores were shared with other work).",
        "",
        "| round | in-process trial (s) | Ray start (s) | train path study (s) | fast path study (s) "
        "| fast, 2 at once (s) | overhead train (s/trial) | overhead fast (s/trial) | ratio | study ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"| {i + 1} | {statistics.mean(r['in_process_s']):.2f} | {r['ray_start_s']:.1f} | {r['train_s']:.1f} "
            f"| {r['fast_s']:.1f} | {r['fast_2_s']:.1f} | {r['train_overhead_s']:.2f} | {r['fast_overhead_s']:.2f} "
            f"| {r['ratio']:.1f} | {r['study_ratio']:.2f} |"
        )
    lines += [
        "",
        f"Median over rounds: overhead {median('train_overhead_s'):.2f} s/trial (train path) against "
        f"{median('fast_overhead_s'):.2f} s/trial (fast path), ratio {median('ratio'):.1f}; the 8-trial study "
        f"on the fast path (2 at once) takes {median('study_ratio'):.2f}× (Ray start + sum of in-process "
        "training times). Targets: ≤ 3 s per trial, ≤ 1.5×.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            rows.append(one_round(Path(tmp) / f"round{index}"))
            print(json.dumps(rows[-1], indent=1), flush=True)
    text = report(rows, load, f"python benchmarks/trial_overhead.py --rounds {args.rounds}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trial_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
