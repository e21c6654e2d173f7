"""How the `contrastlab` process ends: the exit code `main` returned, with logs flushed,
whether or not Ray was imported (with Ray, the interpreter's teardown is skipped)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    {imports}
    from contrastlab.cli import exit_process
    handler = logging.FileHandler(sys.argv[1])
    logging.getLogger("contrastlab").addHandler(handler)
    logging.getLogger("contrastlab").warning("last words")
    print("to stdout", end="")
    sys.stdout.write(" unflushed")
    exit_process(int(sys.argv[2]))
    raise SystemExit(99)  # never reached
    """
)


@pytest.mark.parametrize("imports", ["", "import ray"])
@pytest.mark.parametrize("code", [0, 3, 130])
def test_exit_process_keeps_the_code_and_flushes(imports, code, tmp_path):
    log = tmp_path / "log.txt"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(imports=imports), str(log), str(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, done.stderr
    assert done.stdout == "to stdout unflushed"
    assert log.read_text() == "last words\n"
