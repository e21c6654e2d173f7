"""Encoders (small-image ResNets, a small CNN for CPU runs) and projection heads."""

from contrastlab.models.encoders import build_encoder, build_projector, resolve_projector_bn

__all__ = ["build_encoder", "build_projector", "resolve_projector_bn"]
