"""Config validation: every bad input gives one line naming file, field and expectation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from contrastlab.config import ConfigError, config_hash, load_config
from tests.helpers import ROOT, tiny_config_dict


def write(tmp_path, data) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_example_configs_validate():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.name and cfg.method.name


def test_defaults_and_override_types(tmp_path):
    path = write(tmp_path, tiny_config_dict())
    cfg = load_config(path, ["optim.lr=0.25", "method.temperature=0.2", "data.subset=100"])
    assert cfg.optim.lr == 0.25 and cfg.method.temperature == 0.2 and cfg.data.subset == 100
    assert isinstance(cfg.optim.lr, float)


def test_method_section_uses_the_method_config(tmp_path):
    cfg = load_config(write(tmp_path, tiny_config_dict({"name": "moco", "queue_size": 64})))
    assert type(cfg.method).__name__ == "MoCoConfig" and cfg.method.queue_size == 64
    assert cfg.method.momentum == 0.99


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d["optim"].update(learning_rate=0.1), "optim.learning_rate", "unknown field"),
        (lambda d: d["optim"].update(epochs="many"), "optim.epochs", "integer"),
        (lambda d: d["optim"].update(lr=-1), "optim.lr", "greater than 0"),
        (lambda d: d["method"].update(temperature=0), "method.temperature", "greater than 0"),
        (lambda d: d["method"].update(name="nope"), "method.name", "unknown method"),
        (lambda d: d["augment"].update(crop_scale=[0.9, 0.1]), "augment.crop_scale", "low <= high"),
        (lambda d: d["data"].update(name="imagenet"), "data.name", "fashion_mnist"),
    ],
)
def test_bad_fields_give_one_line(tmp_path, mutate, field, words):
    data = tiny_config_dict()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(path) and f": {field}:" in message and words in message


def test_bad_override(tmp_path):
    path = write(tmp_path, tiny_config_dict())
    with pytest.raises(ConfigError, match=r"optim\.batchsize: no such field"):
        load_config(path, ["optim.batchsize=3"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(path, ["optim.lr"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(broken)


def test_hash_ignores_output_but_not_method(tmp_path):
    base = load_config(write(tmp_path, tiny_config_dict()))
    moved = base.with_overrides({"output.dir": "elsewhere", "name": "other"})
    changed = base.with_overrides({"method.temperature": 0.3})
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash(changed)


def test_cli_exit_code_2_and_one_line(tmp_path):
    data = tiny_config_dict()
    data["optim"]["epochs"] = 0
    path = write(tmp_path, data)
    proc = subprocess.run(
        [sys.executable, "-m", "contrastlab.cli", "train", path], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.epochs" in lines[0] and path in lines[0]


def test_stdlib_platform_not_shadowed():
    proc = subprocess.run(
        [sys.executable, "-c", "import contrastlab, platform; print(platform.system())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() in {"Linux", "Darwin", "Windows"}
