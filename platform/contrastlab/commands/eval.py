"""`contrastlab eval CHECKPOINT`: kNN and linear probe of a trained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from contrastlab.config import config_from_dict, parse_override

HELP = "evaluate a checkpoint (kNN + linear probe) on its own or another dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or state.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field for evaluation, e.g. --set eval.probe_epochs=50")


def run(args: argparse.Namespace) -> int:
    from contrastlab.engine import Trainer, find_checkpoint, load_checkpoint

    directory = find_checkpoint(args.checkpoint)
    config_file = directory.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: the run's config.yaml is missing beside its checkpoints")
    cfg = config_from_dict(yaml.safe_load(config_file.read_text()), str(config_file))
    if args.overrides:
        cfg = cfg.with_overrides(dict(parse_override(o) for o in args.overrides), "--set")
    trainer = Trainer(cfg, Path(directory).parent.parent / "eval", reporter=None)
    state = load_checkpoint(directory, map_location=trainer.device)
    trainer.method.load_extra_state(state["extra"])
    trainer.method.load_state_dict(state["method"])
    results = trainer.evaluator.final(trainer.method)
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=1))
    return 0
