"""Contrastive methods, one module each, registered by name."""

from contrastlab.methods.base import (
    Component,
    DataInfo,
    LossOutput,
    Method,
    StepTools,
    TrainBatch,
    TwoViewMethod,
)
from contrastlab.methods.contract import BatchSampler, Distributed, EpochContext, ScalarWriter
from contrastlab.methods.registry import available_methods, get_method_class, register_method

__all__ = [
    "BatchSampler",
    "Distributed",
    "EpochContext",
    "ScalarWriter",
    "Component",
    "DataInfo",
    "LossOutput",
    "Method",
    "StepTools",
    "TrainBatch",
    "TwoViewMethod",
    "available_methods",
    "get_method_class",
    "register_method",
]
