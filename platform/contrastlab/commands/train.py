"""`contrastlab train CONFIG`: one pretraining run, in-process or on Ray Train."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contrastlab.commands import add_set_option
from contrastlab.config import ConfigError, ExperimentConfig, load_config, parse_override, tag_override_error

HELP = "pretrain one method from an experiment YAML (in-process, or on Ray Train with --workers)"
log = logging.getLogger("contrastlab")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML file")
    add_set_option(parser, "a config field", "optim.lr=0.1")
    parser.add_argument("--output", help="run folder (default: output.dir/name)")
    parser.add_argument(
        "--workers",
        type=int,
        help="Ray Train workers (default: resources.workers); 1 trains in this process, without Ray, "
        "unless --ray, --address or --storage is given",
    )
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per worker")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs per worker")
    parser.add_argument(
        "--address", help="join this Ray cluster (auto or HOST:6379; for a remote cluster use ray job submit)"
    )
    parser.add_argument("--storage", help="Ray storage path or URI (shared for multi-node runs)")
    parser.add_argument("--ray", action="store_true", help="use Ray Train even with one worker (--workers 1)")


def apply_resource_flags(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    flags = {"workers": args.workers, "gpus_per_worker": args.gpus_per_worker, "cpus_per_worker": args.cpus_per_worker}
    return overrides + [f"resources.{k}={v}" for k, v in flags.items() if v is not None]


@contextmanager
def naming_overrides(source: str, overrides: list[str]) -> Iterator[None]:
    """A check that fails on a field a `--set` gave names that `--set` (like load_config does)."""
    try:
        yield
    except ConfigError as err:
        if err.source.startswith("<"):  # a check that knew no file name (Ray's resource checks)
            err = ConfigError(source, err.field, err.expected)
        applied = {parse_override(text)[0]: text for text in overrides}
        raise tag_override_error(err, applied, source) from None


def train_in_process(cfg: ExperimentConfig, run_dir: Path, source: str, overrides: list[str]) -> dict:
    """The data is loaded once, checked against the batch, then handed to the trainer."""
    from contrastlab.data import load_dataset
    from contrastlab.engine import Trainer
    from contrastlab.engine.preflight import check_batch_fits, training_images

    bundle = load_dataset(cfg.data, cfg.seed)
    with naming_overrides(source, overrides):
        check_batch_fits(cfg, training_images(bundle), source)
    return Trainer(cfg, run_dir, bundle=bundle).run()


def path_line(cfg: ExperimentConfig, use_ray: bool) -> str:
    """Which path trains: one line in the log, so `--workers 1` is never a silent surprise."""
    if use_ray:
        return f"training on Ray Train with {cfg.resources.workers} worker(s)"
    return "training in this process, without Ray (one worker; --ray runs it on Ray Train)"


def run(args: argparse.Namespace) -> int:
    from contrastlab.data.registry import known_train_part
    from contrastlab.engine.preflight import check_batch_fits, check_device
    from contrastlab.engine.runfolder import claim_run_folder
    from contrastlab.raytrain.session import check_address

    check_address(args.address, "train")
    overrides = apply_resource_flags(args, list(args.overrides))
    cfg = load_config(args.config, overrides)
    run_dir = Path(args.output) if args.output else Path(cfg.output.dir) / cfg.name
    use_ray = args.ray or args.address or args.storage or cfg.resources.workers > 1
    with naming_overrides(args.config, overrides):
        if not use_ray:
            check_device(cfg, args.config)
        elif (images := known_train_part(cfg.data)) is not None:
            # Checked here, before Ray starts: inside the workers it would be the sampler's traceback.
            check_batch_fits(cfg, images, args.config)
    # Held for the whole run: a second `train` on this folder is refused, and a folder that
    # holds a run of another config is refused before anything in it changes.
    with claim_run_folder(run_dir, cfg) as run_dir:
        log.info("%s", path_line(cfg, bool(use_ray)))
        if use_ray:
            from contrastlab.raytrain import run_ray_training

            with naming_overrides(args.config, overrides):
                metrics = run_ray_training(cfg, run_dir, address=args.address, storage=args.storage)
        else:
            metrics = train_in_process(cfg, run_dir, args.config, overrides)
    summary = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(json.dumps(summary, indent=1))
    print(f"results: {run_dir}\ntensorboard --logdir {run_dir / 'tensorboard'}")
    return 0
