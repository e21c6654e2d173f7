"""Distributed pretraining on Ray Train: the same engine loop in every worker.

- `make_trainer(cfg, run_dir, name, storage, callbacks=(), max_failures=None)`: the
  `TorchTrainer` of one run (used by the CLI, Tune and the ablation runner).
- `train_loop_per_worker(loop_config)`: what each worker runs.
- `init_ray(address, num_cpus=None)`: join a cluster or start a local instance.
- `run_ray_training(cfg, run_dir, address=None, storage=None) -> dict`: the CLI path.
"""

from contrastlab.raytrain.cluster import init_ray
from contrastlab.raytrain.trainer import make_trainer, run_name, run_ray_training
from contrastlab.raytrain.worker import RayReporter, train_loop_per_worker

__all__ = ["RayReporter", "init_ray", "make_trainer", "run_name", "run_ray_training", "train_loop_per_worker"]
