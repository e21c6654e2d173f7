"""Distributed pretraining on Ray Train: the same engine loop in every worker.

- `make_trainer(cfg, run_dir, name, storage, callbacks=(), max_failures=None)`: the
  `TorchTrainer` of one run (used by the CLI, Tune and the ablation runner).
- `train_loop_per_worker(loop_config)`: what each worker runs.
- Ray itself is joined or started by `contrastlab.raytrain.session.RaySession`.
- `run_ray_training(cfg, run_dir, address=None, storage=None) -> dict`: the CLI path.
"""

from contrastlab.raytrain.trainer import make_trainer, run_name, run_ray_training
from contrastlab.raytrain.worker import RayReporter, train_loop_per_worker

__all__ = ["RayReporter", "make_trainer", "run_name", "run_ray_training", "train_loop_per_worker"]
