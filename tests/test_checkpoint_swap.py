"""The checkpoint swap survives a kill at every step, and a failed save cleans up after itself.

A kill is simulated faithfully: a forked child runs `save_checkpoint` with one step of the
swap replaced by `os._exit` (no `finally` block, no cleanup runs, as after SIGKILL). The
parent then checks that the next reader gets a complete checkpoint, old or new.
"""

from __future__ import annotations

import errno
import os
import shutil

import pytest
import torch

from contrastlab.cli import main
from contrastlab.engine import checkpoint as ck
from contrastlab.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from contrastlab.engine.loop import Trainer, train
from tests.helpers import tiny_config, write


def state(epoch: int) -> dict:
    return {
        "method": {"w": torch.full((64,), float(epoch))},
        "epoch": epoch,
        "step": 10 * epoch,
        "config_hash": "h",
        "extra": {},
    }


def exit_now(*_args, **_kwargs):
    os._exit(0)


def kill_at(step: str):
    """Patch the swap so that the process dies at `step` (runs in the forked child)."""
    real_replace, real_rmtree, real_save = os.replace, shutil.rmtree, torch.save
    calls = {"replace": 0}

    def replace(src, dst):
        calls["replace"] += 1
        real_replace(src, dst)
        if (step, calls["replace"]) in (("after-old-moved", 1), ("after-new-moved", 2)):
            os._exit(0)

    def rmtree(path, *args, **kwargs):
        if step == "while-removing-old" and str(path).endswith("-old"):
            (ck.Path(path) / ck.STATE_FILE).unlink()  # half removed
            os._exit(0)
        return real_rmtree(path, *args, **kwargs)

    def partial_save(obj, handle):
        real_save(obj, handle)
        handle.truncate(100)  # the write is cut short
        handle.flush()
        os._exit(0)

    ck.os.replace, ck.shutil.rmtree = replace, rmtree
    if step == "while-writing":
        ck.torch.save = partial_save
    if step == "before-swap":
        ck._swap_in = exit_now


STEPS = ["while-writing", "before-swap", "after-old-moved", "after-new-moved", "while-removing-old"]


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_leaves_a_complete_checkpoint(step, tmp_path):
    last = tmp_path / "checkpoints" / "last"
    save_checkpoint(state(1), last)
    pid = os.fork()
    if pid == 0:  # the child: save epoch 2 and die at `step`
        try:
            kill_at(step)
            save_checkpoint(state(2), last)
        finally:
            os._exit(1)  # reached only when the patched step never ran
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, f"the kill at {step} did not happen"
    recovered = load_checkpoint(last)
    assert recovered["epoch"] in (1, 2)
    assert torch.equal(recovered["method"]["w"], torch.full((64,), float(recovered["epoch"])))
    expected_new = step in ("after-new-moved", "while-removing-old")
    assert recovered["epoch"] == (2 if expected_new else 1)
    save_checkpoint(state(3), last)  # the next save cleans up what the killed one left
    assert load_checkpoint(last)["epoch"] == 3
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]


def test_a_run_killed_inside_the_swap_resumes_instead_of_restarting(tmp_path):
    cfg = tiny_config(optim={"epochs": 2}, eval={"knn_every": 0, "linear_probe": False, "align_uniform": False})
    first = Trainer(cfg, tmp_path)
    first.run()
    history = first.history
    # The state a kill between "last -> .last-old" and the move of the new one leaves behind.
    last = tmp_path / "checkpoints" / "last"
    os.replace(last, last.with_name(".last-old"))
    again = Trainer(cfg, tmp_path)
    again.run()
    assert again.start_epoch == 2 and again.history == history  # resumed at the end, nothing retrained
    assert (last / ck.STATE_FILE).is_file() and not last.with_name(".last-old").exists()


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . "
            "PytorchStreamWriter failed writing file data/0: file write failed"
        ),
    ],
)
def test_a_full_disk_keeps_the_old_checkpoint_and_says_where(failure, tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last"
    save_checkpoint(state(1), last)

    def full(obj, handle):
        handle.write(b"partial")
        raise failure

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(state(2), last)
    message = str(caught.value)
    assert str(last) in message and "full" in message and "MiB free" in message
    assert "\n" not in message and "inline_container" not in message
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]  # the staging folder is gone
    assert load_checkpoint(last)["epoch"] == 1


def test_a_full_disk_during_train_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    config = write(
        tmp_path / "exp.yaml",
        tiny_config(
            optim={"epochs": 1}, eval={"knn_every": 0, "linear_probe": False, "align_uniform": False}
        ).to_dict(),
    )

    def full(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    assert main(["train", str(config), "--output", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "checkpoints/last" in lines[0] and "disk is full" in lines[0]
    assert not list((tmp_path / "run" / "checkpoints").glob(".last-*"))


def test_a_crash_leftover_staging_folder_is_removed_by_the_next_run(tmp_path):
    cfg = tiny_config(optim={"epochs": 1}, eval={"knn_every": 0, "linear_probe": False, "align_uniform": False})
    stale = tmp_path / "checkpoints" / ".last-abc123"
    write(stale / ck.STATE_FILE, b"half a checkpoint")
    train(cfg, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]
