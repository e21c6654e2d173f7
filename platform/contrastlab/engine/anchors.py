"""Anchors: what a representation must beat for a budget to count as having learned.

Two reference representations, measured with the run's own protocol (same train part as the
bank and probe set, same val and test splits, same kNN and probe settings):

- `raw_pixels`: the normalised pixels themselves, flattened;
- `untrained`: the run's encoder at initialisation (same architecture and seed).

A pretrained variant below the raw-pixel anchor has not learned anything a linear reader
could not already get from the images, so comparing its components says little.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from contrastlab.config import ExperimentConfig, config_hash
from contrastlab.data import DataBundle, TwoViewAugment, load_dataset
from contrastlab.distributed import LocalDistributed
from contrastlab.engine.evaluate import Evaluator
from contrastlab.engine.loop import resolve_device
from contrastlab.methods import DataInfo, get_method_class

log = logging.getLogger("contrastlab")
ANCHORS = {"raw_pixels": "raw pixels (normalised, flattened)", "untrained": "untrained encoder (same architecture)"}
ANCHORS_FILE = "anchors.json"


def _flatten(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1)


def anchors_for_seed(cfg: ExperimentConfig, bundle: DataBundle | None = None) -> dict[str, dict[str, float]]:
    """{anchor: {metric: value}} for `cfg` at its own seed (which picks the training subset and
    the encoder's initial weights)."""
    device = resolve_device(cfg.resources.device)
    bundle = bundle or load_dataset(cfg.data, cfg.seed)
    size = cfg.data.image_size or bundle.image_size
    augment = TwoViewAugment(cfg.augment, bundle.channels, size, bundle.mean, bundle.std)
    evaluator = Evaluator(cfg, bundle, augment, device)
    raw = evaluator.representation(None, _flatten)
    torch.manual_seed(cfg.seed)  # the same initial weights the run starts from
    info = DataInfo(bundle.channels, size, bundle.pretraining_images.shape[0], dict(bundle.num_classes))
    method = get_method_class(cfg.method.name)(cfg, info, LocalDistributed(device)).to(device)
    return {"raw_pixels": raw, "untrained": evaluator.representation(method, method.features)}


def compute_anchors(cfg: ExperimentConfig, seeds: Sequence[int]) -> dict[str, Any]:
    """Anchors averaged over `seeds` (each seed draws its own training subset and initial
    weights); the per-seed values are kept beside the means."""
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    for index, seed in enumerate(seeds):
        log.info(
            "anchors: raw pixels and untrained encoder on val and test (seed %d, %d of %d)", seed, index + 1, len(seeds)
        )
        per_seed[int(seed)] = anchors_for_seed(cfg.with_overrides({"seed": int(seed)}, "<anchors>"))
    means: dict[str, dict[str, float]] = {}
    for anchor in ANCHORS:
        names = dict.fromkeys(name for values in per_seed.values() for name in values[anchor])
        means[anchor] = {name: _mean([values[anchor].get(name) for values in per_seed.values()]) for name in names}
    return {**means, "seeds": list(per_seed), "per_seed": {str(s): v for s, v in per_seed.items()}}


def cached_anchors(cfg: ExperimentConfig, seeds: Sequence[int], path: Path) -> dict[str, Any]:
    """`compute_anchors`, kept in `path` and reused while the experiment and the seeds stay the same."""
    key = {"config_hash": config_hash(cfg), "seeds": [int(s) for s in seeds]}
    if path.is_file():
        saved = json.loads(path.read_text())
        if {k: saved.get(k) for k in key} == key:
            return saved
    anchors = {**compute_anchors(cfg, seeds), **key}
    path.write_text(json.dumps(anchors, indent=1) + "\n")
    return anchors


def _mean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def anchors_table(anchors: dict[str, Any], names: Sequence[str]) -> list[str]:
    """Plain-text lines of the anchors for a terminal summary, as points."""
    lines = ["anchors (same splits and probes): " + ", ".join(names)]
    for anchor, label in ANCHORS.items():
        values = anchors.get(anchor) or {}
        shown = ", ".join(f"{name} {100 * values[name]:.1f}" for name in names if name in values)
        lines.append(f"  {label}: {shown or 'not measured'}")
    return lines


__all__ = ["ANCHORS", "ANCHORS_FILE", "anchors_for_seed", "anchors_table", "cached_anchors", "compute_anchors"]
