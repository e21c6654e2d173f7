"""`contrastlab suppression`: the feature-suppression test of MCL against SimCLR on Trifeature.

Trains SimCLR and MCL with the same budget (same data, encoder and total epochs) and
tabulates one linear probe per attribute (colour, shape, texture) on SimCLR's backbone,
on each MCL stage's backbone and on MCL's integrated representation (Zhang et al.,
arXiv 2402.11816, after Hermann & Lampinen 2020). A contrastive model that suppresses an
attribute probes near chance (10%) on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastlab.commands import add_set_option
from contrastlab.config import ExperimentConfig, load_config
from contrastlab.errors import InputError

HELP = "train SimCLR and MCL on Trifeature with one budget and tabulate per-attribute linear probes"
ATTRIBUTES = ("colour", "shape", "texture")
log = logging.getLogger("contrastlab")


@dataclass(frozen=True)
class Row:
    key: str  # TensorBoard / CSV name
    label: str  # what the Markdown table shows
    accuracy: dict[str, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, help="total epochs of each run (MCL's stage_epochs are rescaled)")
    parser.add_argument("--output", default="runs/suppression", help="folder for both runs and the table")
    parser.add_argument("--simclr-config", default="configs/simclr_trifeature.yaml", help="SimCLR experiment YAML")
    parser.add_argument("--mcl-config", default="configs/mcl_trifeature.yaml", help="MCL experiment YAML")
    add_set_option(parser, "a field in both configs", "data.trifeature_train=2000")


def scale_stage_epochs(stage_epochs: list[int], total: int) -> list[int]:
    """Stage lengths in the same proportions summing to `total` (largest remainders; each >= 1)."""
    if total < len(stage_epochs):
        raise ValueError(f"--epochs {total} cannot give each of the {len(stage_epochs)} MCL stages an epoch")
    spare = total - len(stage_epochs)
    weights = [e / sum(stage_epochs) for e in stage_epochs]
    shares = [spare * w for w in weights]
    scaled = [int(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - scaled[i]), i))
    for index in by_remainder[: spare - sum(scaled)]:
        scaled[index] += 1
    return [s + 1 for s in scaled]


def with_epochs(cfg: ExperimentConfig, epochs: int | None) -> ExperimentConfig:
    if epochs is None:
        return cfg
    overrides: dict[str, Any] = {"optim.epochs": epochs, "optim.warmup_epochs": min(cfg.optim.warmup_epochs, epochs)}
    stage_epochs = getattr(cfg.method, "stage_epochs", None)
    if stage_epochs and getattr(cfg.method, "stages", 0):
        overrides["method.stage_epochs"] = scale_stage_epochs(list(stage_epochs), epochs)
    return cfg.with_overrides(overrides, "--epochs")


def check_same_budget(simclr: ExperimentConfig, mcl: ExperimentConfig) -> None:
    """The comparison is only fair when everything but the method is the same."""
    if simclr.method.name != "simclr" or mcl.method.name != "mcl":
        raise InputError(f"expected a simclr and an mcl config (got {simclr.method.name} and {mcl.method.name})")
    if simclr.data.name != "trifeature":
        raise InputError("the suppression test needs data.name trifeature (one label per attribute)")
    for section in ("seed", "data", "augment", "model", "optim", "eval"):
        if getattr(simclr, section) != getattr(mcl, section):
            raise InputError(f"the two configs differ in `{section}`: the budget must be the same for both")
    from contrastlab.methods.mcl import resolve_stage_epochs

    try:  # checked now, not after the SimCLR run has already been trained
        resolve_stage_epochs(mcl.method, mcl.optim.epochs)
    except ValueError as err:
        raise InputError(f"{err} (--epochs N rescales method.stage_epochs to N)") from None


def load_pair(args: argparse.Namespace) -> tuple[ExperimentConfig, ExperimentConfig]:
    simclr = with_epochs(load_config(args.simclr_config, args.overrides), args.epochs)
    mcl = with_epochs(load_config(args.mcl_config, args.overrides), args.epochs)
    check_same_budget(simclr, mcl)
    return simclr, mcl


SPLIT = "test"  # the table reads the test split: nothing here selects on it


def probe_row(key: str, label: str, metrics: dict[str, float], prefix: str = "") -> Row:
    names = {a: f"{SPLIT}/{prefix}probe_{a}" for a in ATTRIBUTES}
    missing = [a for a, name in names.items() if name not in metrics]
    if missing:
        raise KeyError(f"{key}: no linear probe for {missing} (is eval.linear_probe on?)")
    return Row(key, label, {a: metrics[name] for a, name in names.items()})


def table_rows(
    simclr: dict[str, float],
    mcl: dict[str, float],
    mcl_cfg: ExperimentConfig,
    anchors: dict[str, dict[str, float]] | None = None,
) -> list[Row]:
    rows = []
    if anchors:
        rows += [
            probe_row("anchor_raw_pixels", "anchor: raw pixels", anchors["raw_pixels"]),
            probe_row("anchor_untrained", "anchor: untrained encoder", anchors["untrained"]),
        ]
    rows.append(probe_row("simclr_backbone", "SimCLR backbone", simclr))
    stages = mcl_cfg.method.stages + 1
    rows += [probe_row(f"mcl_stage{s}", f"MCL stage {s} backbone", mcl, f"stage{s}/") for s in range(stages)]
    integration = mcl_cfg.method.integration
    label = "MCL integrated (concat of stages)" if integration == "concat" else "MCL last stage (last_only)"
    rows.append(probe_row("mcl_integrated", label, mcl))
    return rows


def markdown_table(rows: list[Row], note: str) -> str:
    head = "| representation | " + " | ".join(ATTRIBUTES) + " |"
    rule = "|---|" + "---:|" * len(ATTRIBUTES)
    body = [f"| {r.label} | " + " | ".join(f"{100 * r.accuracy[a]:.1f}" for a in ATTRIBUTES) + " |" for r in rows]
    return "\n".join([head, rule, *body, "", note, ""])


def write_outputs(rows: list[Row], output: Path, note: str, step: int) -> str:
    from contrastlab.tracking import RunWriter

    table = markdown_table(rows, note)
    (output / "suppression.md").write_text(table)
    with (output / "suppression.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["representation", *ATTRIBUTES])
        for row in rows:
            writer.writerow([row.key, *(f"{row.accuracy[a]:.4f}" for a in ATTRIBUTES)])
    tensorboard = RunWriter(output / "tensorboard")
    tensorboard.scalars({f"suppression/{r.key}/{a}": r.accuracy[a] for r in rows for a in ATTRIBUTES}, step)
    tensorboard.text("suppression/table", table)
    tensorboard.close()
    return table


def run(args: argparse.Namespace) -> int:
    from contrastlab.engine.preflight import check_device
    from contrastlab.engine.runfolder import claim_run_folder

    simclr_cfg, mcl_cfg = load_pair(args)
    check_device(simclr_cfg, args.simclr_config)
    with claim_run_folder(args.output) as output:  # both runs and the table: one owner
        return run_pair(simclr_cfg, mcl_cfg, output)


def run_pair(simclr_cfg: ExperimentConfig, mcl_cfg: ExperimentConfig, output: Path) -> int:
    from contrastlab.engine import train
    from contrastlab.engine.anchors import anchors_for_seed

    results: dict[str, dict[str, float]] = {}
    for name, cfg in (("simclr", simclr_cfg), ("mcl", mcl_cfg)):
        log.info("suppression: training %s for %d epochs into %s", name, cfg.optim.epochs, output / name)
        results[name] = train(cfg, output / name)
    log.info("suppression: anchors (raw pixels, untrained encoder) with the same probes")
    anchors = anchors_for_seed(simclr_cfg)
    (output / "metrics.json").write_text(json.dumps({**results, "anchors": anchors}, indent=1, sort_keys=True))
    rows = table_rows(results["simclr"], results["mcl"], mcl_cfg, anchors)
    note = (
        f"Linear-probe top-1 (%) per attribute on the {SPLIT} split (val numbers in metrics.json), "
        f"{simclr_cfg.optim.epochs} epochs each, "
        f"{simclr_cfg.data.trifeature_train} training images, MCL stage_epochs "
        f"{mcl_cfg.method.stage_epochs or 'even split'}; chance is 10%."
    )
    print(write_outputs(rows, output, note, simclr_cfg.optim.epochs))
    print(f"results: {output.resolve()}\ntensorboard --logdir {output.resolve()}")
    return 0
