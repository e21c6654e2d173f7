"""Selection never sees the test split.

The same study runs twice on an image folder whose training images are identical and whose
test labels are, the second time, replaced by noise. Everything a study selects with (ASHA's
pruning, TPE's suggestions, the trials' values, best_config.yaml) must come out the same;
only the test numbers reported beside them may change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from contrastlab.cli import main
from contrastlab.tuning.study import FINAL_METRICS

pytestmark = pytest.mark.ray
CLASSES = ("a", "b", "c", "d")


def write_images(folder: Path, per_class: int, seed: int) -> None:
    """Small colour images whose class sets the mean colour, so a short run learns something."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        base = np.array([60 * index, 255 - 60 * index, 120], dtype=float)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def relabel_at_random(folder: Path, seed: int) -> None:
    """Move every test image into a class folder drawn at random: its label becomes noise."""
    rng = np.random.default_rng(seed)
    files = sorted(folder.glob("*/*.png"))
    for number, file in enumerate(files):
        target = folder / CLASSES[rng.integers(len(CLASSES))] / f"moved-{number}.png"
        file.rename(target)


def spec(root: Path) -> dict:
    return {
        "name": "blind",
        "base": {
            "data": {"name": "image_folder", "root": str(root), "image_size": 16, "val_size": 32},
            "model": {"encoder": "small_cnn", "width": 8, "projector_hidden": 32, "projector_out": 16},
            "method": {"name": "simclr"},
            "augment": {"crop_scale": [0.5, 1.0]},
            "optim": {"batch_size": 32, "epochs": 2, "warmup_epochs": 0},
            "eval": {"knn_every": 1, "knn_k": 10, "probe_epochs": 5, "align_uniform": False},
            "output": {"progress_every": 0},
            "resources": {"device": "cpu"},
        },
        "metric": "val/knn_top1",
        "mode": "max",
        "num_samples": 3,
        "space": {
            "optim.lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
            "method.temperature": {"type": "float", "low": 0.1, "high": 1.0},
        },
        "sampler": {"type": "tpe", "seed": 3, "n_startup_trials": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "max_concurrent_trials": 1,
    }


def run_study(folder: Path, address: str) -> tuple[optuna.Study, Path]:
    spec_file = folder / "study.yaml"
    spec_file.write_text(yaml.safe_dump(spec(folder / "data")))
    output = folder / "out"
    assert main(["tune", str(spec_file), "--output", str(output), "--address", address]) == 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage), output


def test_noise_in_test_labels_changes_no_selection(tmp_path, local_ray):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    write_images(clean / "data" / "train", per_class=40, seed=0)
    write_images(clean / "data" / "test", per_class=12, seed=1)
    shutil.copytree(clean / "data", noisy / "data")
    relabel_at_random(noisy / "data" / "test", seed=2)

    studies = [run_study(folder, local_ray) for folder in (clean, noisy)]
    (first, first_out), (second, second_out) = studies
    trials = [study.get_trials(deepcopy=False) for study, _ in studies]
    assert len(trials[0]) == len(trials[1]) == 3
    for a, b in zip(*trials, strict=True):
        # TPE's suggestions, ASHA's decisions and the values the sampler learns from.
        assert a.params == b.params and a.state == b.state, (a.number, a.params, b.params)
        assert a.intermediate_values == b.intermediate_values and a.value == b.value
    states = {t.state.name for t in trials[0]}
    assert "COMPLETE" in states
    # The test numbers did change: the noise reached the test split and only it.
    complete = [(a, b) for a, b in zip(*trials, strict=True) if a.state.name == "COMPLETE"]
    assert any(
        a.user_attrs[FINAL_METRICS]["test/knn_top1"] != b.user_attrs[FINAL_METRICS]["test/knn_top1"]
        for a, b in complete
    )
    for a, b in complete:
        assert a.user_attrs[FINAL_METRICS]["val/knn_top1"] == b.user_attrs[FINAL_METRICS]["val/knn_top1"]
    best = [yaml.safe_load((out / "best_config.yaml").read_text()) for out in (first_out, second_out)]
    for config in best:
        config["data"].pop("root")
        config.pop("name")
    assert best[0] == best[1]
    assert first.best_trial.number == second.best_trial.number
