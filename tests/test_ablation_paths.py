"""One tiny ablation run both ways: every run on Ray Train (`resources.trial_path: train`) and
in its Tune trial (the default fast path). The same metrics, curves and run folders.

Two variants × one seed of one epoch, on one local Ray instance (2 CPUs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from contrastlab.ablation.runner import run_ablation
from contrastlab.ablation.spec import load_spec
from tests.helpers import tiny_config_dict

pytestmark = pytest.mark.ray
# What depends on the clock or the process: not compared.
TIMING = re.compile(r"seconds|time|duration|throughput", re.IGNORECASE)
EVENT_FILE = re.compile(r"events\.out\.tfevents\..*")


def spec_file(folder: Path, path: str) -> Path:
    raw = {
        "name": f"paths-{path}",
        "base": tiny_config_dict(
            {"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16},
            optim={"epochs": 1},
            eval={"probe_epochs": 2, "align_uniform": False},
        ),
        "components": ["synthesis"],
        "design": "leave_one_out",
        "seeds": 1,
        "metrics": ["linear_top1", "knn_top1"],
        "resources": {"workers": 1, "cpus_per_worker": 1, "max_concurrent": 2, "trial_path": path},
    }
    folder.mkdir(parents=True)
    file = folder / "spec.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return file


def numbers(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not TIMING.search(k)
    }


def run_folder_files(run_dir: Path) -> list[str]:
    """The files of a run folder, relative, TensorBoard's event files by their kind only."""
    return sorted(EVENT_FILE.sub("events", str(p.relative_to(run_dir))) for p in run_dir.rglob("*") if p.is_file())


def test_an_ablation_gives_the_same_runs_on_both_paths(local_ray, tmp_path):
    outcomes = {}
    for path in ("train", "auto"):
        spec = load_spec(spec_file(tmp_path / path, path))
        outcomes[path] = run_ablation(spec, tmp_path / path / "out", address=local_ray, code="paths-code")
    rows = {path: {(r["variant"], r["seed"]): r for r in o.results} for path, o in outcomes.items()}
    assert set(rows["auto"]) == set(rows["train"]) == {("full", 0), ("no_synthesis", 0)}
    for key, train in rows["train"].items():
        fast = rows["auto"][key]
        assert "error" not in train and "error" not in fast, key
        expected, got = numbers(train["metrics"]), numbers(fast["metrics"])
        assert got.keys() == expected.keys() and {"epoch", "val/knn_top1", "test/linear_top1"} <= got.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, name)
        assert fast["curves"].keys() == train["curves"].keys()
        for name, curve in train["curves"].items():
            assert [e for e, _ in fast["curves"][name]] == [e for e, _ in curve], (key, name)
        variant, seed = key
        folders = [tmp_path / p / "out" / "runs" / variant / f"seed{seed}" for p in ("train", "auto")]
        files = [run_folder_files(f) for f in folders]
        assert files[0] == files[1] and "checkpoints/last/state.pt" in files[0], key
    # Finished runs keep only their run folder's checkpoint: Ray's copies (Train's on one
    # path, Tune's own on the other) are pruned.
    for path in ("train", "auto"):
        copies = [p for p in (tmp_path / path / "out" / "ray").rglob("checkpoint_*") if p.is_dir()]
        assert copies == [], (path, copies)
