"""`contrastlab eval CHECKPOINT`: kNN and linear probe of a trained model on val and test (or,
with `--random-init CONFIG.yaml`, of the same encoder before any training; with `--anchors
CONFIG.yaml`, of raw pixels and the untrained encoder: the baselines pretraining must beat)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contrastlab.commands import add_set_option
from contrastlab.config import ConfigError, ExperimentConfig, config_from_dict, config_hash, load_config, parse_override
from contrastlab.yamlfile import read_yaml

HELP = "evaluate a checkpoint (kNN + linear probe), or the anchors: --random-init, --anchors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder or state.pt (or a config with --random-init)")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="treat the argument as an experiment YAML and evaluate its encoder at initialisation",
    )
    parser.add_argument(
        "--anchors",
        action="store_true",
        help="treat the argument as an experiment YAML and evaluate raw pixels and its untrained "
        "encoder with its own splits and probes",
    )
    add_set_option(parser, "a config field for evaluation", "eval.probe_epochs=50")


def _evaluate_random_init(args: argparse.Namespace) -> dict[str, float]:
    from contrastlab.engine import build_run
    from contrastlab.engine.preflight import check_device

    cfg = load_config(args.checkpoint, args.overrides)
    check_device(cfg, args.checkpoint)
    run = build_run(cfg)
    return run.evaluator.final(run.method)


def _evaluate_anchors(args: argparse.Namespace) -> dict[str, float]:
    from contrastlab.engine.anchors import anchors_for_seed
    from contrastlab.engine.preflight import check_device

    cfg = load_config(args.checkpoint, args.overrides)
    check_device(cfg, args.checkpoint)
    anchors = anchors_for_seed(cfg)
    return {f"{anchor}/{name}": value for anchor, values in anchors.items() for name, value in values.items()}


def _run_config(directory: Path, overrides: list[str]) -> tuple[ExperimentConfig, str]:
    """The run's own config.yaml (and `--set` changes for evaluation), with its file name."""
    config_file = directory.parent.parent / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(str(config_file), "", "the run's config.yaml beside its checkpoints (file not found)")
    cfg = config_from_dict(read_yaml(config_file), str(config_file))
    for text in overrides:
        key, value = parse_override(text, f"{config_file} (--set {text})")
        cfg = cfg.with_overrides({key: value}, f"{config_file} (--set {text})")
    return cfg, str(config_file)


def _evaluate_checkpoint(args: argparse.Namespace) -> dict[str, float]:
    from contrastlab.engine import build_run, find_checkpoint, load_checkpoint
    from contrastlab.engine.preflight import check_device
    from contrastlab.engine.runfolder import claim_run_folder

    directory = find_checkpoint(args.checkpoint)
    saved, config_file = _run_config(directory, [])
    state = load_checkpoint(directory)
    if state["config_hash"] != config_hash(saved):
        # Scoring weights under a config they were not trained with gives a wrong number, silently.
        raise ConfigError(
            config_file,
            "",
            f"the config the checkpoint {directory} was trained with (its config "
            "hash differs): the folder's config.yaml was changed after training",
        )
    cfg, _ = _run_config(directory, list(args.overrides))
    check_device(cfg, config_file)
    # The run's eval/ folder is held while evaluating: one evaluation of a run at a time.
    with claim_run_folder(directory.parent.parent / "eval"):
        run = build_run(cfg)
        run.method.load_extra_state(state["extra"])
        run.method.load_state_dict(state["method"])
        return run.evaluator.final(run.method)


def run(args: argparse.Namespace) -> int:
    if args.random_init and args.anchors:
        raise ConfigError("--anchors", "", "one of --random-init and --anchors")
    evaluate = (
        _evaluate_anchors if args.anchors else _evaluate_random_init if args.random_init else _evaluate_checkpoint
    )
    results = evaluate(args)
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=1))
    return 0
