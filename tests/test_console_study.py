"""What a new user sees: a small study run as a command whose stdout is not a terminal shows
its start line, its table (plain lines), one line per trial and the summary; none of Ray's
own lines, which are in OUTPUT/logs/ray.log."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_study_dict, write

PLATFORM = Path(__file__).resolve().parents[1] / "platform"
# Lines of Ray's workers, of Tune's own reporter and Ray's known-harmless C++ error lines.
RAY_LINES = (
    "pid=",
    "Checkpoint successfully created",
    "Reporting training result",
    "core_worker.cc",
    "max_restarts > 0",
    "Configuration for experiment",
    "View detailed results here",
    "Token authentication is enabled",
)


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.ray
def test_study_output_is_the_table_the_trials_and_the_summary(tmp_path, ray_lock):
    samples = 2
    spec = write(tmp_path / "study.yaml", tiny_study_dict(samples))
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PLATFORM), os.environ.get("PYTHONPATH")]))}
    env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = "180"  # 2 busy cores start worker groups slowly
    env.pop("CONTRASTLAB_VERBOSE", None)
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.cli", "tune", str(spec), "--output", str(output), "--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout.splitlines(), done.stderr.splitlines()
    for stream, lines in (("stdout", out), ("stderr", err)):
        shown = [line for line in lines if any(text in line for text in RAY_LINES)]
        assert not shown, f"Ray's own lines on {stream}: {shown[:5]}"
    # stderr holds contrastlab's own log lines (and Optuna's), nothing else
    assert all(re.match(r"\d\d:\d\d:\d\d contrastlab|\[[IW] \d{4}-", line) for line in err), err

    # The trials the study ran, from its own table (trials.csv), not from the console.
    with (output / "trials.csv").open() as handle:
        trial_ids = {row["tune_trial_id"] for row in csv.DictReader(handle)}
    assert len(trial_ids) == samples

    assert out[0].startswith("study ") and str(output) in out[0]
    assert f"tensorboard --logdir {output / 'tensorboard'}" in out[0]
    assert str(output / "logs" / "ray.log") in out[0]
    index, tables, events = 1, [], []
    header = ["trial", "status", "epoch", "loss", "best", "elapsed", "eta"]
    while index < len(out) and not out[index].startswith("study "):  # the summary starts with "study NAME"
        line = out[index]
        if columns(line) == header:
            end = next(i for i in range(index + 1, len(out)) if out[i].startswith("runs: "))
            tables.append(out[index + 1 : end])
            index = end + 1
        elif re.match(rf"\[\d+/{samples}\] ", line):
            events.append(line)
            index += 1
        else:
            pytest.fail(f"unexpected line {index} on stdout: {line!r}\n" + done.stdout)
    summary = out[index:]
    # every line is one of: the start line, a table (header, rows, footer), a trial's line, the summary
    assert len(out) == 1 + sum(len(rows) + 2 for rows in tables) + len(events) + len(summary)

    final = tables[-1]  # the table as it is at the end: one DONE row per trial
    assert {columns(row)[0] for row in final} == trial_ids and len(final) == samples
    assert all(columns(row)[1:3] == ["DONE", "1/1"] for row in final)
    assert sorted(re.match(r"\[(\d+)/", e).group(1) for e in events) == [str(k) for k in range(1, samples + 1)]
    assert {re.match(r"\[\d+/\d+\] (\S+): done, epoch 1/1 in ", e).group(1) for e in events} == trial_ids
    assert summary[0].startswith("study ") and f"trials: {samples} COMPLETE" in summary
    assert f"best config: {output / 'best_config.yaml'}" in summary
    assert summary[-1].startswith("optuna-dashboard ")

    # Ray's output is kept, in the output folder
    ray_log = (output / "logs" / "ray.log").read_text()
    for text in ("Checkpoint successfully created", "Reporting training result", "Configuration for experiment"):
        assert text in ray_log
    assert re.search(r"\(RayTrainWorker pid=\d+\) ", ray_log)
