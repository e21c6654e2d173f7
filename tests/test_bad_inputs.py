"""Malformed inputs, as a new user would give them: each ends with exit code 2, exactly one
line on stderr naming the file (or folder) and the field, and nothing written.

Every case runs `contrastlab.cli.main` in-process and must fail before training, a study or
an ablation starts (those entry points raise if reached); a few run the real command in a
subprocess to prove the exit code path end to end.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from contrastlab.cli import main
from contrastlab.config import config_from_dict, config_hash
from tests.helpers import Evil, put, snapshot, state_bytes, tiny_config_dict, valid_state, write

# -- building the inputs ----------------------------------------------------------------------
TINY = tiny_config_dict()
TINY_YAML = yaml.safe_dump(TINY, sort_keys=False)
SPACE = {
    "method.temperature": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
    "optim.lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
}
TUNE = {
    "name": "unit",
    "base": TINY,
    "metric": "knn_top1",
    "mode": "max",
    "num_samples": 2,
    "space": SPACE,
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
}
ABLATE = {
    "name": "tiny",
    "base": tiny_config_dict({"name": "sscl", "synthetic_count": 8, "hard_pool_size": 16}),
    "components": ["synthesis", "debias"],
    "seeds": 2,
    "metrics": ["knn_top1"],
}


@dataclass
class Case:
    """`build(tmp)` writes the inputs and returns (argv, the folder that must stay as it is, names)."""

    id: str
    build: Callable[[Path], tuple[list[str], Path, list[str]]]


CASES: list[Case] = []


def train_case(case_id: str, content: str | bytes | dict, names: list[str], extra: tuple[str, ...] = ()) -> None:
    def build(tmp: Path) -> tuple[list[str], Path, list[str]]:
        config = write(tmp / "exp.yaml", content)
        return ["train", str(config), "--output", str(tmp / "out"), *extra], tmp / "out", ["exp.yaml", *names]

    CASES.append(Case(f"train-{case_id}", build))


def set_case(case_id: str, override: str, field: str) -> None:
    """A bad `--set` on a good file: the line carries the `(--set ...)` tag and the field."""
    train_case(f"set-{case_id}", TINY, [f"(--set {override})", field], ("--set", override))


def spec_case(
    command: str, case_id: str, content: str | bytes | dict, names: list[str], extra: tuple[str, ...] = ()
) -> None:
    def build(tmp: Path) -> tuple[list[str], Path, list[str]]:
        spec = write(tmp / "spec.yaml", content)
        dry = ("--dry-run",) if command == "ablate" else ()
        return [command, str(spec), "--output", str(tmp / "out"), *dry, *extra], tmp / "out", ["spec.yaml", *names]

    CASES.append(Case(f"{command}-{case_id}", build))


# -- experiment files: the file itself ----------------------------------------------------------
train_case("empty", "", ["empty"])
train_case("only-comments", "# nothing here\n", ["empty"])
train_case("binary", b"\x00\x01\x02PK\x03\x04", ["binary"])
train_case("latin-1", "name: caf\xe9\n".encode("latin-1"), ["UTF-8"])
train_case("duplicate-section", TINY_YAML + "optim:\n  lr: 0.5\n", ["'optim' given twice"])
train_case("duplicate-field", "optim:\n  lr: 0.1\n  lr: 0.2\n", ["'lr' given twice"])
train_case(
    "duplicate-in-method",
    "method:\n  name: simclr\n  temperature: 0.1\n  temperature: 0.2\n",
    ["'temperature' given twice"],
)
train_case("unclosed-bracket", "optim: {lr: 0.1\n", ["valid YAML"])
train_case("bad-indent", "optim:\n  lr: 0.1\n epochs: 2\n", ["valid YAML"])
train_case("top-level-list", "- optim\n- lr\n", ["mapping"])
train_case("top-level-scalar", "42\n", ["mapping"])
CASES.append(
    Case(
        "train-config-is-a-folder",
        lambda tmp: (["train", str(tmp), "--output", str(tmp / "out")], tmp / "out", [str(tmp), "folder"]),
    )
)
CASES.append(
    Case(
        "train-config-missing",
        lambda tmp: (
            ["train", str(tmp / "nope.yaml"), "--output", str(tmp / "out")],
            tmp / "out",
            ["nope.yaml", "not found"],
        ),
    )
)

# -- experiment files: fields ------------------------------------------------------------------
FIELD_CASES: list[tuple[str, str, Any, str]] = [
    ("unknown-section", "optimiser.lr", 0.1, "optimiser"),
    ("unknown-field", "optim.learning_rate", 0.1, "optim.learning_rate"),
    ("lr-negative", "optim.lr", -0.1, "optim.lr"),
    ("lr-zero", "optim.lr", 0, "optim.lr"),
    ("lr-inf", "optim.lr", float("inf"), "optim.lr"),
    ("lr-nan", "optim.lr", float("nan"), "optim.lr"),
    ("lr-text", "optim.lr", "fast", "optim.lr"),
    ("momentum-one", "optim.momentum", 1.0, "optim.momentum"),
    ("epochs-zero", "optim.epochs", 0, "optim.epochs"),
    ("epochs-text", "optim.epochs", "ten", "optim.epochs"),
    ("epochs-fraction", "optim.epochs", 2.5, "optim.epochs"),
    ("batch-one", "optim.batch_size", 1, "optim.batch_size"),
    ("warmup-over-budget", "optim.warmup_epochs", 5, "warmup_epochs"),
    ("warmup-inf", "optim.warmup_epochs", float("inf"), "optim.warmup_epochs"),
    ("weight-decay-negative", "optim.weight_decay", -1e-4, "optim.weight_decay"),
    ("weight-decay-nan", "optim.weight_decay", float("nan"), "optim.weight_decay"),
    ("grad-clip-inf", "optim.grad_clip", float("inf"), "optim.grad_clip"),
    ("precision-fp16", "optim.precision", "fp16", "optim.precision"),
    ("optimizer-unknown", "optim.optimizer", "adam", "optim.optimizer"),
    ("crop-reversed", "augment.crop_scale", [0.9, 0.1], "augment.crop_scale"),
    ("crop-inf", "augment.crop_scale", [0.2, float("inf")], "augment.crop_scale"),
    ("crop-three", "augment.crop_scale", [0.2, 0.5, 1.0], "augment.crop_scale"),
    ("hflip-two", "augment.hflip_prob", 2, "augment.hflip_prob"),
    ("hue-large", "augment.hue", 0.9, "augment.hue"),
    ("brightness-nan", "augment.brightness", float("nan"), "augment.brightness"),
    ("encoder-unknown", "model.encoder", "vit", "model.encoder"),
    ("width-two", "model.width", 2, "model.width"),
    ("projector-layers", "model.projector_layers", 9, "model.projector_layers"),
    ("method-unknown", "method.name", "byol", "method.name"),
    ("method-field-unknown", "method.temprature", 0.1, "method.temprature"),
    ("temperature-nan", "method.temperature", float("nan"), "method.temperature"),
    ("temperature-inf", "method.temperature", float("inf"), "method.temperature"),
    ("data-unknown", "data.name", "imagenet", "data.name"),
    ("image-size-tiny", "data.image_size", 4, "data.image_size"),
    ("device-tpu", "resources.device", "tpu", "resources.device"),
    ("workers-zero", "resources.workers", 0, "resources.workers"),
    ("cpus-inf", "resources.cpus_per_worker", float("inf"), "resources.cpus_per_worker"),
    ("trial-path-unknown", "resources.trial_path", "fast", "resources.trial_path"),
    ("trial-retries-negative", "resources.trial_retries", -1, "resources.trial_retries"),
    ("knn-k-zero", "eval.knn_k", 0, "eval.knn_k"),
    ("knn-temperature-nan", "eval.knn_temperature", float("nan"), "eval.knn_temperature"),
    ("seed-negative", "seed", -1, "seed"),
    ("progress-negative", "output.progress_every", -1, "output.progress_every"),
]
for case_id, dotted, value, field in FIELD_CASES:
    train_case(case_id, put(TINY, dotted, value), [field])
train_case("method-without-name", put(TINY, "method", {"temperature": 0.5}), ["method"])
train_case("method-a-list", put(TINY, "method", ["simclr"]), ["method"])
train_case("optim-a-number", put(TINY, "optim", 3), ["optim"])
train_case("batch-over-the-data", put(TINY, "optim.batch_size", 4096), ["optim.batch_size", "230 training images"])
# With workers the run goes to Ray: the same check happens before Ray starts.
train_case(
    "batch-over-the-data-on-ray",
    put(TINY, "optim.batch_size", 4096),
    ["optim.batch_size", "230 training"],
    ("--workers", "2"),
)
if not torch.cuda.is_available():
    train_case("cuda-without-gpu", put(TINY, "resources.device", "cuda"), ["resources.device", "cuda"])
# Ray Train's own checks, before Ray starts: the line still names the file.
train_case("workers-split-the-batch-unevenly", TINY, ["optim.batch_size", "resources.workers (3)"], ("--workers", "3"))
train_case("gpus-on-a-cpu-device", TINY, ["resources.device"], ("--workers", "2", "--gpus-per-worker", "1"))

# -- --set ---------------------------------------------------------------------------------------
SET_CASES = [
    ("no-equals", "optim.lr", "optim.lr"),
    ("inf", "optim.lr=.inf", "optim.lr"),
    ("nan", "optim.lr=.nan", "optim.lr"),
    ("negative", "optim.lr=-1", "optim.lr"),
    ("empty-value", "optim.lr=", "optim.lr"),
    ("unknown-field", "optim.nope=1", "optim.nope"),
    ("unknown-section", "nope.lr=1", "nope"),
    ("section-to-number", "optim=3", "optim"),
    ("into-a-value", "optim.lr.x=1", "optim.lr"),
    ("empty-segment", "optim..lr=1", "optim..lr"),
    ("method-unknown", "method.name=byol", "method.name"),
    ("epochs-text", "optim.epochs=abc", "optim.epochs"),
    ("crop-reversed", "augment.crop_scale=[0.9,0.1]", "augment.crop_scale"),
    ("batch-over-the-data", "optim.batch_size=100000", "optim.batch_size"),
]
for case_id, override, field in SET_CASES:
    set_case(case_id, override, field)
if not torch.cuda.is_available():
    set_case("cuda-without-gpu", "resources.device=cuda", "resources.device")

# -- search spaces (tune) --------------------------------------------------------------------------
TUNE_CASES: list[tuple[str, str | bytes | dict, list[str]]] = [
    ("empty", "", ["empty"]),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00", ["binary"]),
    ("duplicate-key", yaml.safe_dump(TUNE) + "metric: loss\n", ["'metric' given twice"]),
    ("trial-path-unknown", {**TUNE, "resources": {"trial_path": "fast"}}, ["resources.trial_path"]),
    (
        "duplicate-in-space",
        "metric: knn_top1\nmode: max\nspace:\n  optim.lr: {type: float, low: 0.1, high: 1}\n"
        "  optim.lr: {type: float, low: 0.2, high: 1}\n",
        ["'optim.lr' given twice"],
    ),
    ("a-list", "- metric\n", ["mapping"]),
    ("unknown-key", {**TUNE, "trials": 3}, ["trials"]),
    ("no-metric", {k: v for k, v in TUNE.items() if k != "metric"}, ["metric"]),
    ("mode-up", {**TUNE, "mode": "up"}, ["mode"]),
    ("samples-zero", {**TUNE, "num_samples": 0}, ["num_samples"]),
    ("space-empty", {**TUNE, "space": {}}, ["space"]),
    ("space-type", {**TUNE, "space": {"optim.lr": {"type": "gaussian"}}}, ["space.optim.lr"]),
    (
        "space-low-over-high",
        {**TUNE, "space": {"optim.lr": {"type": "float", "low": 1.0, "high": 0.1}}},
        ["space.optim.lr"],
    ),
    (
        "space-inf",
        {**TUNE, "space": {"optim.lr": {"type": "float", "low": 0.1, "high": float("inf")}}},
        ["space.optim.lr"],
    ),
    (
        "space-unknown-field",
        {**TUNE, "space": {"optim.nope": {"type": "float", "low": 0.1, "high": 1.0}}},
        ["optim.nope"],
    ),
    (
        "reduction-factor-one",
        {**TUNE, "scheduler": {"type": "asha", "reduction_factor": 1}},
        ["scheduler.reduction_factor"],
    ),
    ("base-lr-inf", put(TUNE, "base.optim.lr", float("inf")), ["optim.lr"]),
    ("base-missing", {k: v for k, v in TUNE.items() if k != "base"}, ["base"]),
    (
        "base-config-missing",
        {**{k: v for k, v in TUNE.items() if k != "base"}, "base_config": "nope.yaml"},
        ["base_config"],
    ),
    ("points-out-of-range", {**TUNE, "points_to_evaluate": [{"optim.lr": 5.0}]}, ["points_to_evaluate[0]"]),
    ("name-with-spaces", {**TUNE, "name": "my study"}, ["name"]),
]
for case_id, content, names in TUNE_CASES:
    spec_case("tune", case_id, content, names)
spec_case("tune", "set-sampled", TUNE, ["(--set optim.lr=0.1)", "optim.lr", "space"], ("--set", "optim.lr=0.1"))
spec_case(
    "tune",
    "set-sampled-section",
    TUNE,
    ["(--set method.temperature=0.2)", "method.temperature"],
    ("--set", "method.temperature=0.2"),
)
spec_case("tune", "set-inf", TUNE, ["(--set optim.epochs=.inf)", "optim.epochs"], ("--set", "optim.epochs=.inf"))
spec_case("tune", "samples-flag-zero", TUNE, ["--samples"], ("--samples", "0"))
CASES.append(
    Case(
        "tune-resume-without-study",
        lambda tmp: (
            ["tune", str(write(tmp / "spec.yaml", TUNE)), "--output", str(tmp / "out"), "--resume"],
            tmp / "out",
            ["out", "resume", "not found"],
        ),
    )
)


def tune_base_file_duplicate(tmp: Path) -> tuple[list[str], Path, list[str]]:
    write(tmp / "experiment.yaml", TINY_YAML + "seed: 3\n")
    without_base = {k: v for k, v in TUNE.items() if k != "base"}
    spec = write(tmp / "spec.yaml", {**without_base, "base_config": "experiment.yaml"})
    return ["tune", str(spec), "--output", str(tmp / "out")], tmp / "out", ["experiment.yaml", "'seed' given twice"]


CASES.append(Case("tune-base-file-duplicate-key", tune_base_file_duplicate))

# -- ablation specs --------------------------------------------------------------------------------
ABLATE_CASES: list[tuple[str, str | bytes | dict, list[str]]] = [
    ("empty", "", ["empty"]),
    ("binary", b"\x00\xff\x00", ["binary"]),
    ("not-utf8", b"name: \xff\xfe\n", ["UTF-8"]),
    ("duplicate-key", yaml.safe_dump(ABLATE) + "seeds: 5\n", ["'seeds' given twice"]),
    ("unknown-key", {**ABLATE, "variant": []}, ["variant"]),
    ("overrides-a-list", {**ABLATE, "overrides": ["optim.lr"]}, ["overrides"]),
    ("overrides-inf", {**ABLATE, "overrides": {"optim.lr": float("inf")}}, ["optim.lr"]),
    ("max-concurrent-zero", {**ABLATE, "resources": {"max_concurrent": 0}}, ["resources.max_concurrent"]),
    ("resources-unknown", {**ABLATE, "resources": {"gpus": 1}}, ["resources.gpus"]),
    ("trial-path-unknown", {**ABLATE, "resources": {"trial_path": "fast"}}, ["resources.trial_path"]),
]
for case_id, content, names in ABLATE_CASES:
    spec_case("ablate", case_id, content, names)
spec_case("ablate", "set-inf", ABLATE, ["--set optim.lr=.inf", "optim.lr"], ("--set", "optim.lr=.inf"))


# -- checkpoints (eval, and train into a folder holding one) --------------------------------------------
def run_folder(tmp: Path, state_file: bytes | None, config: dict | None = TINY) -> Path:
    run = tmp / "run"
    if config is not None:
        write(run / "config.yaml", config)
    if state_file is not None:
        write(run / "checkpoints" / "last" / "state.pt", state_file)
    return run


def eval_case(
    case_id: str,
    make: Callable[[Path], bytes | None],
    names: list[str],
    config: dict | None = TINY,
) -> None:
    def build(tmp: Path) -> tuple[list[str], Path, list[str]]:
        run = run_folder(tmp, make(tmp), config)
        return ["eval", str(run)], run, names

    CASES.append(Case(f"eval-{case_id}", build))


GOOD_HASH = config_hash(config_from_dict(TINY))
eval_case("empty-state", lambda tmp: b"", ["state.pt", "empty"])
eval_case("garbage-state", lambda tmp: b"this is not a checkpoint\n" * 20, ["state.pt", "corrupt"])
eval_case("truncated-state", lambda tmp: state_bytes(tmp, valid_state(GOOD_HASH))[:300], ["state.pt", "truncated"])
eval_case(
    "malicious-state", lambda tmp: state_bytes(tmp, {"method": Evil(tmp / "pwned")}), ["state.pt", "refused", "system"]
)
eval_case("not-contrastlab", lambda tmp: state_bytes(tmp, {"weights": torch.zeros(2)}), ["state.pt", "missing"])
eval_case("a-tensor", lambda tmp: state_bytes(tmp, torch.zeros(3)), ["state.pt", "missing"])
eval_case("no-checkpoint", lambda tmp: None, ["run", "no state.pt"])
eval_case(
    "config-missing", lambda tmp: state_bytes(tmp, valid_state(GOOD_HASH)), ["config.yaml", "not found"], config=None
)
eval_case("config-changed", lambda tmp: state_bytes(tmp, valid_state("0" * 16)), ["config.yaml", "hash"])


def eval_duplicate_config(tmp: Path) -> tuple[list[str], Path, list[str]]:
    run = run_folder(tmp, state_bytes(tmp, valid_state(GOOD_HASH)), None)
    write(run / "config.yaml", TINY_YAML + "seed: 1\n")
    return ["eval", str(run)], run, ["config.yaml", "'seed' given twice"]


CASES.append(Case("eval-config-duplicate-key", eval_duplicate_config))


def eval_set_inf(tmp: Path) -> tuple[list[str], Path, list[str]]:
    run = run_folder(tmp, state_bytes(tmp, valid_state(GOOD_HASH)))
    return ["eval", str(run), "--set", "eval.probe_lr=.inf"], run, ["config.yaml", "(--set", "eval.probe_lr"]


CASES.append(Case("eval-set-inf", eval_set_inf))


def train_over_corrupt_checkpoint(tmp: Path) -> tuple[list[str], Path, list[str]]:
    config = write(tmp / "exp.yaml", TINY)
    run = run_folder(tmp, b"\x00garbage", config=None)
    return ["train", str(config), "--output", str(run)], run, ["state.pt", "corrupt"]


CASES.append(Case("train-over-corrupt-checkpoint", train_over_corrupt_checkpoint))


# -- output folders ----------------------------------------------------------------------------------
def output_case(case_id: str, prepare: Callable[[Path], Path], names: list[str], command: str = "train") -> None:
    def build(tmp: Path) -> tuple[list[str], Path, list[str]]:
        output = prepare(tmp)
        if command == "tune":
            return ["tune", str(write(tmp / "spec.yaml", TUNE)), "--output", str(output)], output, names
        return ["train", str(write(tmp / "exp.yaml", TINY)), "--output", str(output)], output, names

    CASES.append(Case(f"output-{case_id}", build))


output_case("a-file", lambda tmp: write(tmp / "out", "not a folder\n"), ["out", "a file is in the way"])
output_case("below-a-file", lambda tmp: write(tmp / "blocker", "x\n") / "run", ["blocker", "run"])
output_case("tune-a-file", lambda tmp: write(tmp / "study", "x\n"), ["study", "a file is in the way"], "tune")
output_case(
    "other-config", lambda tmp: run_folder(tmp, None, put(TINY, "optim.lr", 0.5)), ["run", "optim.lr: 0.5 -> 0.1"]
)
output_case(
    "other-config-two-fields",
    lambda tmp: run_folder(tmp, None, put(put(TINY, "optim.lr", 0.5), "seed", 4)),
    ["run", "optim.lr: 0.5 -> 0.1", "seed: 4 -> 0"],
)
output_case(
    "other-checkpoint",
    lambda tmp: run_folder(tmp, state_bytes(tmp, valid_state("0" * 16)), None),
    ["state.pt", "another config"],
)
output_case(
    "corrupt-config-yaml", lambda tmp: run_folder(tmp, None, put(TINY, "optim.lr", -3)), ["config.yaml", "optim.lr"]
)


def locked(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    handle = (run / ".lock").open("a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write("424242\n")
    handle.flush()
    HELD.append(handle)  # released when the test ends (the fixture closes it)
    return run


HELD: list[Any] = []
output_case("locked", locked, ["run", "pid 424242"])


def failing_mkdir(number: int, text: str):
    def mkdir(self, *args, **kwargs):
        raise OSError(number, text, str(self))

    return mkdir


def no_permission(tmp: Path) -> Path:
    MKDIR_ERRORS.append((errno.EACCES, "Permission denied"))
    return tmp / "denied"


def disk_full(tmp: Path) -> Path:
    MKDIR_ERRORS.append((errno.ENOSPC, "No space left on device"))
    return tmp / "full"


MKDIR_ERRORS: list[tuple[int, str]] = []
output_case("permission-denied", no_permission, ["denied", "Permission denied"])
output_case("disk-full", disk_full, ["full", "No space left"])


# -- tune's pre-flight: what no cluster can fix, refused before the folder, database or Ray ---------
PREFLIGHT_CASES: list[tuple[str, dict, list[str]]] = [
    (
        "batch-over-train-part",
        put(TUNE, "base.optim.batch_size", 4096),
        ["optim.batch_size", "at most the", "training images", "4096"],
    ),
    (
        "sampled-batch-over-train-part",
        {**TUNE, "space": {**SPACE, "optim.batch_size": {"type": "categorical", "choices": [32, 8192]}}},
        ["space.optim.batch_size=8192", "optim.batch_size", "training images"],
    ),
    (
        "batch-not-multiple-of-workers",
        {**TUNE, "resources": {"workers": 3}},
        ["optim.batch_size", "multiple of resources.workers (3)"],
    ),
    (
        "cuda-without-gpus",
        {**put(TUNE, "base.resources.device", "cuda"), "resources": {"gpus_per_worker": 0}},
        ["resources.gpus_per_worker", "> 0 when resources.device is cuda"],
    ),
    (
        "sampled-gpus-on-cpu-device",
        {**TUNE, "space": {**SPACE, "resources.gpus_per_worker": {"type": "categorical", "choices": [0, 1]}}},
        ["space.resources.gpus_per_worker=1", "resources.device"],
    ),
    (
        "sync-batchnorm-on-cpu-workers",
        {**put(TUNE, "base.model.sync_batchnorm", True), "resources": {"workers": 2}},
        ["model.sync_batchnorm", "false on CPU workers"],
    ),
]
for case_id, content, names in PREFLIGHT_CASES:
    spec_case("tune", f"preflight-{case_id}", content, names)


# -- Ray Client addresses: every command that joins a cluster refuses them, naming ray job submit --
def client_address_case(command: str, name: str, content: str | dict) -> None:
    def build(tmp: Path) -> tuple[list[str], Path, list[str]]:
        path = write(tmp / name, content)
        argv = [command, str(path), "--output", str(tmp / "out"), "--address", "ray://head:10001"]
        return argv, tmp / "out", ["--address", "ray://head:10001", "ray job submit", f"contrastlab {command}"]

    CASES.append(Case(f"{command}-ray-client-address", build))


client_address_case("train", "exp.yaml", TINY)
client_address_case("tune", "spec.yaml", TUNE)
client_address_case("ablate", "spec.yaml", ABLATE)

# -- contrastlab report: a folder that is neither an ablation's nor a study's ----------------------------
CASES.append(
    Case(
        "report-neither-folder", lambda tmp: (["report", str(tmp)], tmp, [str(tmp), "results.json", "study_spec.yaml"])
    )
)
CASES.append(
    Case(
        "report-study-spec-without-name",
        lambda tmp: (
            ["report", str(write(tmp / "study_spec.yaml", {"name": "x"}).parent)],
            tmp,
            ["study_spec.yaml", "study_name"],
        ),
    )
)


# -- the tests -------------------------------------------------------------------------------------------
@pytest.fixture
def nothing_runs(monkeypatch):
    """Training, a study, an ablation or Ray reached: the input was not refused in time."""

    def reached(*_args, **_kwargs):
        raise AssertionError("the command got past its input checks")

    monkeypatch.setattr("contrastlab.engine.loop.Trainer.run", reached)
    monkeypatch.setattr("contrastlab.tuning.runner.run_study", reached)
    monkeypatch.setattr("contrastlab.ablation.runner.run_ablation", reached)
    monkeypatch.setattr("contrastlab.raytrain.session.init_ray", reached)
    yield
    while HELD:
        HELD.pop().close()
    MKDIR_ERRORS.clear()


def test_there_are_at_least_85_cases():
    assert len(CASES) >= 85, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path, capsys, monkeypatch, nothing_runs):
    argv, watched, names = case.build(tmp_path)
    for number, text in MKDIR_ERRORS:
        monkeypatch.setattr(pathlib.Path, "mkdir", failing_mkdir(number, text))
    before = snapshot(watched)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("contrastlab: error: ")
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert snapshot(watched) == before
    assert not (tmp_path / "pwned").exists()  # a refused pickle ran no code


SUBPROCESS_CASES = ["train-empty", "train-set-inf", "eval-malicious-state", "output-a-file"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(case_id: str, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    argv, watched, names = case.build(tmp_path)
    before = snapshot(watched)
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and all(name in lines[0] for name in names), done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(watched) == before


def test_debug_shows_the_traceback(tmp_path, capsys):
    config = write(tmp_path / "exp.yaml", "")
    assert main(["--debug", "train", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("contrastlab: error: ")


def test_a_bug_keeps_its_traceback_and_exit_1(tmp_path, capsys, monkeypatch):
    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("contrastlab.commands.train.load_config", broken)
    assert main(["train", str(tmp_path / "x.yaml")]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err
