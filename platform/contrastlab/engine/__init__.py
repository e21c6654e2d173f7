"""The training loop, run assembly, checkpoints and in-run evaluation."""

from contrastlab.engine.build import Run, build_run
from contrastlab.engine.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from contrastlab.engine.loop import EpochContext, NonFiniteLossError, Reporter, Trainer, default_run_dir, train

__all__ = [
    "EpochContext",
    "NonFiniteLossError",
    "Reporter",
    "Run",
    "Trainer",
    "build_run",
    "default_run_dir",
    "find_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
