"""Evaluation: kNN monitor, linear probe, alignment and uniformity."""

from contrastlab.evaluation.metrics import (
    LinearProbe,
    alignment,
    extract_features,
    knn_top1,
    linear_probe,
    uniformity,
)

__all__ = ["LinearProbe", "alignment", "extract_features", "knn_top1", "linear_probe", "uniformity"]
