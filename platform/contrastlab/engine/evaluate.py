"""Evaluation inside a run: the kNN monitor and the final protocol.

Features are extracted once per evaluation (eval mode, no augmentation) and every probe
trains on those frozen features.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from contrastlab.config import ConfigError, ExperimentConfig
from contrastlab.data import DataBundle
from contrastlab.data.registry import check_split_sizes
from contrastlab.data.trifeature import ATTRIBUTES
from contrastlab.evaluation import LinearProbe, alignment, extract_features, knn_top1, uniformity


def _eval_mode(module: torch.nn.Module):
    """Switch to eval mode for the block and restore the previous mode afterwards."""

    class _Scope:
        def __enter__(self):
            self.was_training = module.training
            module.eval()

        def __exit__(self, *exc):
            module.train(self.was_training)

    return _Scope()


HELD_OUT = ("val", "test")
# The one training metric a study may optimise; everything else it names is an evaluation.
TRAINING_OBJECTIVES = ("loss",)


def split_metric(split: str, name: str) -> str:
    """The reported name of a metric measured on a split: `val/knn_top1`, `test/stage0/linear_top1`."""
    return f"{split}/{name}"


def eval_metric_names(cfg: ExperimentConfig) -> list[str]:
    """Names (without the split) that the final evaluation of `cfg` reports."""
    names = ["knn_top1"]
    if cfg.eval.linear_probe:
        names.append("linear_top1")
        if cfg.data.name == "trifeature":
            names += [f"probe_{attribute}" for attribute in ATTRIBUTES]
    if cfg.eval.align_uniform:
        names += ["alignment", "uniformity"]
    return names


def check_eval_metric(name: str, cfg: ExperimentConfig, source: str, field: str) -> str:
    """`name` without its split, after checking that a run of `cfg` reports it; a method's extra
    representation is written `<representation>/<name>` (e.g. `stage0/knn_top1`)."""
    bare = name.split("/", 1)[1] if name.split("/", 1)[0] in HELD_OUT else name
    known = eval_metric_names(cfg)
    if bare.rpartition("/")[2] in known:
        return bare
    every = eval_metric_names(cfg.with_overrides({"eval.linear_probe": True, "eval.align_uniform": True}, source))
    if bare.rpartition("/")[2] in every:
        needed = "eval.linear_probe" if "probe" in bare or "linear" in bare else "eval.align_uniform"
        raise ConfigError(source, field, f"{needed}: true in the experiment to measure {bare!r}")
    raise ConfigError(
        source,
        field,
        f"a metric the runs report ({', '.join(known)}, or "
        f"<representation>/<name> for a method's extra representation); got {name!r}",
    )


def selection_metric(name: str, cfg: ExperimentConfig, source: str, field: str) -> str:
    """The name a study optimises: `val/<metric>` (a bare name means the validation split) or
    the training loss. The test split is never an objective, and selection needs a val split."""
    if name.startswith("test/"):
        raise ConfigError(
            source,
            field,
            f"a validation metric such as val/{name[5:]}: the test split is "
            "measured once at the end and is never an objective",
        )
    if name in TRAINING_OBJECTIVES:
        return name
    if cfg.data.val_size == 0:
        raise ConfigError(source, "data.val_size", "a validation split (not 0): selection reads only val")
    check_split_sizes(cfg.data, source)
    return split_metric("val", check_eval_metric(name, cfg, source, field))


class Evaluator:
    """kNN and linear probes with the training part as the bank and the probes' training set.

    `knn` (every epoch) reads only the validation split; `final` (once, after the last epoch)
    measures val and test with the same probes. Selection reads the `val/` names only.
    """

    def __init__(
        self, cfg: ExperimentConfig, bundle: DataBundle, augment, device: torch.device, show_progress: bool = True
    ):
        self.cfg, self.bundle, self.augment, self.device = cfg, bundle, augment, device
        self.ecfg = cfg.eval
        # Progress lines at INFO (on one worker of a multi-worker run; the others log them at DEBUG).
        self.show_progress = show_progress

    @property
    def held_out(self) -> tuple[str, ...]:
        return HELD_OUT if self.bundle.has_val else ("test",)

    def _autocast(self):
        if self.cfg.optim.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def embed(
        self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, what: str = "extracting features"
    ) -> torch.Tensor:
        with self._autocast():
            return extract_features(
                fn, images, self.augment.normalize, self.ecfg.batch_size, self.device, what, self.show_progress
            )

    def split_features(
        self, module: torch.nn.Module | None, fn, splits: tuple[str, ...], prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        """Features of the train part and of `splits`, in eval mode when `module` is given."""
        scope = _eval_mode(module) if module is not None else nullcontext()
        with scope:
            return {
                name: self.embed(fn, self.bundle.split(name)[0], f"extracting features ({prefix}{name})")
                for name in ("train", *splits)
            }

    def _knn(self, features: dict[str, torch.Tensor], split: str) -> float:
        label = self.bundle.primary_label
        return knn_top1(
            features["train"],
            self.bundle.train_labels[label],
            features[split],
            self.bundle.split(split)[1][label],
            k=self.ecfg.knn_k,
            temperature=self.ecfg.knn_temperature,
            num_classes=self.bundle.num_classes[label],
        )

    def knn(self, method) -> dict[str, float]:
        """The per-epoch monitor: kNN top-1 on the validation split (nothing without one)."""
        if not self.bundle.has_val:
            return {}
        features = self.split_features(method, method.features, ("val",))
        return {split_metric("val", "knn_top1"): self._knn(features, "val")}

    def _probes(self, features: dict[str, torch.Tensor], splits: tuple[str, ...], prefix: str) -> dict[str, float]:
        results: dict[str, float] = {}
        labels = self.bundle.train_labels
        attributes = list(labels) if len(labels) > 1 else [self.bundle.primary_label]
        for attribute in attributes:
            probe = LinearProbe(
                features["train"],
                labels[attribute].to(features["train"].device),
                self.bundle.num_classes[attribute],
                epochs=self.ecfg.probe_epochs,
                lr=self.ecfg.probe_lr,
                seed=self.cfg.seed,
                what=f"linear probe ({prefix}{attribute})",
                show_progress=self.show_progress,
            )
            names = [f"probe_{attribute}"] if len(attributes) > 1 else []
            if attribute == self.bundle.primary_label:
                names.insert(0, "linear_top1")
            for split in splits:
                accuracy = probe.accuracy(features[split], self.bundle.split(split)[1][attribute])
                results.update({split_metric(split, prefix + name): accuracy for name in names})
        return results

    @torch.no_grad()
    def _align_uniform(self, method, split: str) -> dict[str, float]:
        images = self.bundle.split(split)[0]
        images = images[: min(2048, images.shape[0])].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 17)
        v1, v2 = self.augment.two_views(images, generator)
        with _eval_mode(method), self._autocast():
            z1 = F.normalize(method.projections(v1).float(), dim=1)
            z2 = F.normalize(method.projections(v2).float(), dim=1)
        return {
            split_metric(split, "alignment"): alignment(z1, z2),
            split_metric(split, "uniformity"): uniformity(torch.cat([z1, z2])),
        }

    def representation(
        self, module: torch.nn.Module | None, fn, prefix: str = "", probes: bool | None = None
    ) -> dict[str, float]:
        """kNN (and linear probes) of one representation on val and test."""
        splits = self.held_out
        features = self.split_features(module, fn, splits, prefix)
        results = {split_metric(split, prefix + "knn_top1"): self._knn(features, split) for split in splits}
        if self.ecfg.linear_probe if probes is None else probes:
            results.update(self._probes(features, splits, prefix))
        return results

    def final(self, method) -> dict[str, float]:
        """kNN and linear probes on the primary representation and on each extra one, on val and
        test; alignment and uniformity on both."""
        results = self.representation(method, method.features)
        if self.ecfg.align_uniform:
            for split in self.held_out:
                results.update(self._align_uniform(method, split))
        for name, fn in method.eval_representations().items():
            results.update(self.representation(method, fn, f"{name}/"))
        return results
