"""The dependency floors in pyproject.toml hold for the code that uses version-dependent APIs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel

from contrastlab.distributed.torch_dist import NO_FORWARD_BUFFER_SYNC

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_ddp_buffer_option_exists_in_the_installed_torch():
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    assert set(NO_FORWARD_BUFFER_SYNC) <= set(accepted), NO_FORWARD_BUFFER_SYNC
    assert list(NO_FORWARD_BUFFER_SYNC.values()) == [False]


def test_every_runtime_dependency_has_a_floor_and_the_check_script_reads_them():
    text = PYPROJECT.read_text()
    block = text[text.index("dependencies = [") : text.index("]", text.index("dependencies = ["))]
    requirements = re.findall(r'"([^"]+)"', block)
    assert requirements, "no dependencies found"
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+>=[0-9.]+", requirement), f"{requirement}: expected NAME>=FLOOR"
    script = (PYPROJECT.parent / "scripts" / "check_floors.sh").read_text()
    assert "pyproject.toml" in script and "not ray" in script
