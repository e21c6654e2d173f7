"""contrastlab: contrastive self-supervised pretraining, tuning and ablation on Ray."""

__version__ = "0.1.0"
