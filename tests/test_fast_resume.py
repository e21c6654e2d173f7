"""What a resumed study does with what a killed driver left, without Ray: the Optuna trials
started after Tune last saved its state (orphans), where a relaunched fast-path trial resumes
from, and which of Tune's own checkpoint copies a finished trial keeps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pyarrow.fs
import pytest
import torch
from optuna.trial import TrialState

from contrastlab.study.checkpoints import RUN_CHECKPOINT, resume_point, take_over_checkpoint
from contrastlab.tuning.orphans import ORPHAN_REASON, RESUME_KEY, RESUMED_FROM
from contrastlab.tuning.retention import CheckpointRetention
from contrastlab.tuning.space_spec import parse_space
from contrastlab.tuning.study import FAIL_REASON, TUNE_TRIAL_ID, StudySearcher, end_orphans

SPACE = {"optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}


def searcher(db: Path) -> StudySearcher:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    if "s" not in optuna.get_all_study_names(storage):
        optuna.create_study(study_name="s", storage=storage)
    space = parse_space(SPACE, "<test>")
    return StudySearcher(space, "loss", "min", "s", storage, optuna.samplers.RandomSampler(seed=0), 2, 2)


def trials_by_number(db: Path) -> dict[int, optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    return {t.number: t for t in optuna.load_study(study_name="s", storage=storage).get_trials()}


def test_a_trial_started_after_the_last_saved_state_is_resumed_by_the_next_one(tmp_path):
    db, saved = tmp_path / "study.db", tmp_path / "searcher.pkl"
    first = searcher(db)
    first.suggest("t-known")
    first.save(str(saved))  # Tune saves its state here
    orphan_config = first.suggest("t-orphan")  # ... then the driver asks for one more and dies
    first.on_trial_result("t-orphan", {"loss": 3.0, "epoch": 1})

    resumed = searcher(db)
    resumed.restore(str(saved))
    config = resumed.suggest("t-new")
    numbers = trials_by_number(db)
    orphan = numbers[1]
    # The new Tune trial took the orphan's Optuna trial: same number, parameters and values.
    assert config["params"] == orphan_config["params"] and config[RESUME_KEY] == "t-orphan"
    assert orphan.state == TrialState.RUNNING and orphan.intermediate_values == {1: 3.0}
    assert orphan.user_attrs[TUNE_TRIAL_ID] == "t-new" and orphan.user_attrs[RESUMED_FROM] == ["t-orphan"]
    assert len(numbers) == 2  # no trial was added
    resumed.on_trial_result("t-new", {"loss": 9.0, "epoch": 1})  # epoch 1 again: kept once
    resumed.on_trial_complete("t-new", {"loss": 2.0, "epoch": 2})
    done = trials_by_number(db)[1]
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {1: 3.0, 2: 2.0}
    # The next trial is a new one.
    resumed.suggest("t-next")
    assert len(trials_by_number(db)) == 3 and trials_by_number(db)[2].user_attrs[TUNE_TRIAL_ID] == "t-next"


def test_an_orphan_no_trial_resumed_ends_failed_and_a_known_running_trial_stays(tmp_path):
    db, saved = tmp_path / "study.db", tmp_path / "searcher.pkl"
    first = searcher(db)
    first.suggest("t-known")
    first.save(str(saved))
    first.suggest("t-orphan")
    resumed = searcher(db)
    resumed.restore(str(saved))
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    # The experiment ended (interrupted again) knowing only t-known, still running.
    assert end_orphans(storage, "s", {"t-known"}) == 1
    known, orphan = trials_by_number(db)[0], trials_by_number(db)[1]
    assert known.state == TrialState.RUNNING
    assert orphan.state == TrialState.FAIL and orphan.user_attrs[FAIL_REASON] == ORPHAN_REASON
    assert end_orphans(storage, "s", {"t-known"}) == 0


def write_state(folder: Path, epoch: int) -> Path:
    folder.mkdir(parents=True)
    torch.save({"epoch": epoch, "weights": torch.zeros(3)}, folder / "state.pt")
    return folder


def test_a_relaunch_resumes_from_the_newer_of_tunes_copy_and_the_run_folder(tmp_path):
    tune1, own2 = write_state(tmp_path / "tune1", 1), write_state(tmp_path / "own2", 2)
    tune3, own3 = write_state(tmp_path / "tune3", 3), write_state(tmp_path / "own3", 3)
    assert resume_point(tune1, own2) == own2  # Tune's state was saved before the newest copy
    assert resume_point(tune3, own2) == tune3  # the run folder is an older one (another node)
    assert resume_point(tune3, own3) == own3
    assert resume_point(tmp_path / "pruned", own2) == own2  # Tune's copy is gone
    assert resume_point(tune1, None) == tune1
    assert resume_point(tmp_path / "pruned", None) is None


def test_the_resuming_trial_takes_the_orphans_checkpoint(tmp_path):
    earlier, run = tmp_path / "trials" / "old", tmp_path / "trials" / "new"
    write_state(earlier / RUN_CHECKPOINT, 1)
    assert take_over_checkpoint(earlier, run)
    assert torch.load(run / RUN_CHECKPOINT / "state.pt")["epoch"] == 1
    assert not (earlier / RUN_CHECKPOINT).exists()  # moved: one copy on disk
    write_state(earlier / RUN_CHECKPOINT, 5)
    assert not take_over_checkpoint(earlier, run)  # a run folder with its own checkpoint keeps it
    assert torch.load(run / RUN_CHECKPOINT / "state.pt")["epoch"] == 1


def fast_trial(output: Path, name: str, copies: int, experiment: str = "tune") -> None:
    """A fast-path trial as a study leaves it: its run folder's last checkpoint, and Tune's
    copies in its folder of the experiment (`ray/tune/<id>/checkpoint_NNNNNN`)."""
    write_state(output / "trials" / name / RUN_CHECKPOINT, copies)
    for index in range(copies):
        write_state(output / "ray" / experiment / name / f"checkpoint_{index:06d}", index + 1)
    (output / "ray" / experiment / name / "result.json").write_text("{}\n")


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_finished_study_prunes_tunes_copies_of_fast_path_trials(tmp_path, mode):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize" if mode == "max" else "minimize")
    outcomes = {"a": (TrialState.COMPLETE, 0.2), "b": (TrialState.COMPLETE, 0.9), "c": (TrialState.PRUNED, None)}
    outcomes["d"] = (TrialState.RUNNING, None)
    for name, (state, value) in outcomes.items():
        trial = study.ask()
        trial.set_user_attr(TUNE_TRIAL_ID, name)
        if state is not TrialState.RUNNING:
            study.tell(trial.number, value, state=state)
        fast_trial(tmp_path, name, copies=2)
    retention = CheckpointRetention(
        tmp_path / "trials", str(tmp_path / "ray" / "train"), "s", storage, mode, 1, str(tmp_path / "ray" / "tune")
    )
    assert retention.sweep_study() == 4  # two finished trials outside the best, two copies each
    best = "b" if mode == "max" else "a"
    copies = sorted(str(p.relative_to(tmp_path / "ray" / "tune")) for p in tmp_path.glob("ray/tune/*/checkpoint_*"))
    assert copies == sorted(
        [f"{best}/checkpoint_000000", f"{best}/checkpoint_000001"] + ["d/checkpoint_000000", "d/checkpoint_000001"]
    )
    assert all((tmp_path / "trials" / n / RUN_CHECKPOINT / "state.pt").is_file() for n in outcomes)
    assert all((tmp_path / "ray" / "tune" / n / "result.json").is_file() for n in outcomes)


def test_an_ablation_prunes_tunes_copies_of_a_finished_fast_path_run(tmp_path):
    from ray.tune.experiment import Trial

    from contrastlab.ablation.retention import RunCheckpointRetention

    experiment = tmp_path / "ray" / "grid"
    runs, trials = {}, []
    for name, status in (("done", Trial.TERMINATED), ("failed", Trial.ERROR)):
        fast_trial(tmp_path, name, copies=2, experiment="grid")
        runs[name] = {
            "run_dir": str(tmp_path / "trials" / name),
            "storage": str(tmp_path / "ray" / "train"),
            "train_name": name,
        }
        where = SimpleNamespace(
            storage_filesystem=pyarrow.fs.LocalFileSystem(), experiment_fs_path=str(experiment), trial_dir_name=name
        )
        trials.append(SimpleNamespace(config={"run": name}, status=status, storage=where))
    RunCheckpointRetention(runs, "run").on_experiment_end(trials)
    assert sorted(p.name for p in (experiment / "done").iterdir()) == ["result.json"]
    assert len(list((experiment / "failed").glob("checkpoint_*"))) == 2  # kept for ablate --resume
