"""Evaluation inside a run: the kNN monitor and the final protocol.

Features are extracted once per evaluation (eval mode, no augmentation) and every probe
trains on those frozen features.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from contrastlab.config import ExperimentConfig
from contrastlab.data import DataBundle
from contrastlab.evaluation import alignment, extract_features, knn_top1, linear_probe, uniformity


def _eval_mode(module: torch.nn.Module):
    """Switch to eval mode for the block and restore the previous mode afterwards."""

    class _Scope:
        def __enter__(self):
            self.was_training = module.training
            module.eval()

        def __exit__(self, *exc):
            module.train(self.was_training)

    return _Scope()


class Evaluator:
    def __init__(self, cfg: ExperimentConfig, bundle: DataBundle, augment, device: torch.device):
        self.cfg, self.bundle, self.augment, self.device = cfg, bundle, augment, device
        self.ecfg = cfg.eval

    def _autocast(self):
        if self.cfg.optim.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def embed(self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return extract_features(fn, images, self.augment.normalize, self.ecfg.batch_size, self.device)

    def _split_features(self, method, fn) -> tuple[torch.Tensor, torch.Tensor]:
        with _eval_mode(method):
            return self.embed(fn, self.bundle.train_images), self.embed(fn, self.bundle.test_images)

    def _knn(self, train: torch.Tensor, test: torch.Tensor) -> float:
        label = self.bundle.primary_label
        return knn_top1(
            train, self.bundle.train_labels[label], test, self.bundle.test_labels[label],
            k=self.ecfg.knn_k, temperature=self.ecfg.knn_temperature,
            num_classes=self.bundle.num_classes[label],
        )

    def knn(self, method) -> dict[str, float]:
        train, test = self._split_features(method, method.features)
        return {"knn_top1": self._knn(train, test)}

    def _probes(self, train: torch.Tensor, test: torch.Tensor, prefix: str) -> dict[str, float]:
        results: dict[str, float] = {}
        labels = self.bundle.train_labels
        attributes = list(labels) if len(labels) > 1 else [self.bundle.primary_label]
        for attribute in attributes:
            accuracy = linear_probe(
                train, labels[attribute].to(train.device), test, self.bundle.test_labels[attribute].to(train.device),
                epochs=self.ecfg.probe_epochs, lr=self.ecfg.probe_lr, seed=self.cfg.seed,
            )
            name = f"{prefix}linear_top1" if attribute == self.bundle.primary_label else f"{prefix}probe_{attribute}"
            results[name] = accuracy
            if len(attributes) > 1 and attribute == self.bundle.primary_label:
                results[f"{prefix}probe_{attribute}"] = accuracy
        return results

    @torch.no_grad()
    def _align_uniform(self, method) -> dict[str, float]:
        count = min(2048, self.bundle.test_images.shape[0])
        images = self.bundle.test_images[:count].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 17)
        v1, v2 = self.augment.two_views(images, generator)
        with _eval_mode(method), self._autocast():
            z1 = F.normalize(method.projections(v1).float(), dim=1)
            z2 = F.normalize(method.projections(v2).float(), dim=1)
        return {"alignment": alignment(z1, z2), "uniformity": uniformity(torch.cat([z1, z2]))}

    def final(self, method) -> dict[str, float]:
        """kNN and linear probes on the primary representation and on each extra one."""
        train, test = self._split_features(method, method.features)
        results = {"knn_top1": self._knn(train, test)}
        if self.ecfg.linear_probe:
            results.update(self._probes(train, test, ""))
        if self.ecfg.align_uniform:
            results.update(self._align_uniform(method))
        for name, fn in method.eval_representations().items():
            train, test = self._split_features(method, fn)
            results[f"{name}/knn_top1"] = self._knn(train, test)
            if self.ecfg.linear_probe:
                results.update(self._probes(train, test, f"{name}/"))
        return results
