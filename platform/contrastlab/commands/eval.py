"""`contrastlab eval CHECKPOINT`: kNN and linear probe of a trained model (or, with
`--random-init CONFIG.yaml`, of the same encoder before any training, the baseline that
pretraining must beat)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from contrastlab.config import config_from_dict, load_config, parse_override

HELP = "evaluate a checkpoint (kNN + linear probe), or an untrained encoder with --random-init"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or state.pt (or a config with --random-init)")
    parser.add_argument("--random-init", action="store_true",
                        help="treat the argument as an experiment YAML and evaluate its encoder at initialisation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field for evaluation, e.g. --set eval.probe_epochs=50")


def _evaluate_random_init(args: argparse.Namespace) -> dict[str, float]:
    from contrastlab.engine import Trainer

    cfg = load_config(args.checkpoint, args.overrides)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(cfg, Path(scratch))
        return trainer.evaluator.final(trainer.method)


def _evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    from contrastlab.engine import Trainer, find_checkpoint, load_checkpoint

    directory = find_checkpoint(args.checkpoint)
    config_file = directory.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: the run's config.yaml is missing beside its checkpoints")
    cfg = config_from_dict(yaml.safe_load(config_file.read_text()), str(config_file))
    if args.overrides:
        cfg = cfg.with_overrides(dict(parse_override(o) for o in args.overrides), "--set")
    trainer = Trainer(cfg, Path(directory).parent.parent / "eval")
    state = load_checkpoint(directory, map_location=trainer.device)
    trainer.method.load_extra_state(state["extra"])
    trainer.method.load_state_dict(state["method"])
    return trainer.evaluator.final(trainer.method)


def run(args: argparse.Namespace) -> int:
    results = _evaluate_random_init(args) if args.random_init else _evaluate_checkpoint(args)
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=1))
    return 0
