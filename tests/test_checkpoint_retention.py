"""Bounded disk: which checkpoints a finished trial keeps (the rule in
contrastlab.study.checkpoints), on folders laid out as a study writes them (no Ray)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from contrastlab.study.checkpoints import best_runs, prune_run, ray_copies
from contrastlab.tuning.retention import CheckpointRetention
from contrastlab.tuning.study import TUNE_TRIAL_ID


def fake_run(output: Path, name: str, epochs: int, own: bool = True) -> None:
    """A run folder with its `checkpoints/last` and Ray's copies of the last two due epochs."""
    if own:
        last = output / "trials" / name / "checkpoints" / "last"
        last.mkdir(parents=True)
        (last / "state.pt").write_bytes(b"x" * 100)
    for epoch in range(max(1, epochs - 1), epochs + 1):
        copy = output / "ray" / "train" / name / f"checkpoint_epoch_{epoch:04d}"
        copy.mkdir(parents=True)
        (copy / "state.pt").write_bytes(b"x" * 100)
    (output / "ray" / "train" / name / "result.json").parent.mkdir(parents=True, exist_ok=True)
    (output / "ray" / "train" / name / "result.json").write_text("{}")


def checkpoint_files(output: Path) -> dict[str, int]:
    """Checkpoint files per run name, wherever they lie under the output (trials/NAME/...
    or ray/train/NAME/...)."""
    counts: dict[str, int] = {}
    for path in output.rglob("state.pt"):
        parts = path.relative_to(output).parts
        name = parts[1] if parts[0] == "trials" else parts[2]
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_best_runs_follow_the_direction():
    values = {"a": 0.1, "b": 0.5, "c": 0.3}
    assert best_runs(values, "max", 2) == {"b", "c"}
    assert best_runs(values, "min", 2) == {"a", "c"}
    assert best_runs(values, "max", 0) == set()


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_finished_study_keeps_the_last_of_each_trial_and_the_copies_of_the_best(tmp_path, mode):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize" if mode == "max" else "minimize")
    outcomes = {
        "t1": (TrialState.COMPLETE, 0.2),
        "t2": (TrialState.COMPLETE, 0.9),
        "t3": (TrialState.COMPLETE, 0.5),
        "t4": (TrialState.PRUNED, None),
        "t5": (TrialState.FAIL, None),
        "t6": (TrialState.RUNNING, None),
    }
    for name, (state, value) in outcomes.items():
        trial = study.ask()
        trial.set_user_attr(TUNE_TRIAL_ID, name)
        if state is not TrialState.RUNNING:
            study.tell(trial.number, value, state=state)
        fake_run(tmp_path, name, epochs=4 if state is TrialState.COMPLETE else 2)
    retention = CheckpointRetention(tmp_path / "trials", str(tmp_path / "ray" / "train"), "s", storage, mode, keep=2)
    removed = retention.sweep_study()
    best = {"t2", "t3"} if mode == "max" else {"t1", "t3"}
    expected = {name: 3 if name in best or name == "t6" else 1 for name in outcomes}
    assert checkpoint_files(tmp_path) == expected
    assert removed == 2 * (len(outcomes) - len(best) - 1)
    # what stays of a trial outside the best is its own last checkpoint, and Ray's results
    assert (tmp_path / "trials" / "t4" / "checkpoints" / "last" / "state.pt").is_file()
    assert (tmp_path / "ray" / "train" / "t4" / "result.json").is_file()
    assert [Path(p).name for p in ray_copies(str(tmp_path / "ray" / "train"), sorted(best)[0])] == [
        "checkpoint_epoch_0003",
        "checkpoint_epoch_0004",
    ]


def test_a_run_folder_without_a_checkpoint_keeps_rays_newest_copy(tmp_path):
    fake_run(tmp_path, "r", epochs=3, own=False)
    pruned = prune_run(tmp_path / "trials" / "r", str(tmp_path / "ray" / "train"), "r", keep_copies=False)
    assert (pruned.removed, pruned.kept) == (1, 1)
    assert [Path(p).name for p in ray_copies(str(tmp_path / "ray" / "train"), "r")] == ["checkpoint_epoch_0003"]


def test_an_ablation_keeps_rays_copies_of_a_failed_run_for_its_resume(tmp_path):
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from contrastlab.ablation.retention import RunCheckpointRetention

    runs = {}
    for name in ("done", "failed", "running"):
        fake_run(tmp_path, name, epochs=2)
        runs[name] = {
            "run_dir": str(tmp_path / "trials" / name),
            "storage": str(tmp_path / "ray" / "train"),
            "train_name": name,
        }
    trials = [
        SimpleNamespace(config={"run": name}, status=status)
        for name, status in (("done", Trial.TERMINATED), ("failed", Trial.ERROR), ("running", Trial.RUNNING))
    ]
    RunCheckpointRetention(runs, "run").on_experiment_end(trials)
    assert checkpoint_files(tmp_path) == {"done": 1, "failed": 3, "running": 3}
