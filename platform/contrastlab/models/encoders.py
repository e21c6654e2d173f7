"""Encoders and heads.

ResNets use the small-image stem (3x3 stride-1 first conv, no max-pool), as is standard
for 32x32 inputs; they are torchvision's ResNet with the stem replaced, so weights and
layer names stay familiar.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50

_RESNETS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def _small_image_resnet(name: str, channels: int) -> tuple[nn.Module, int]:
    net = _RESNETS[name](weights=None)
    net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


class SmallCNN(nn.Module):
    """Four conv blocks and global pooling: enough to learn on Fashion-MNIST on a CPU."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        previous = channels
        for index, out in enumerate(widths):
            layers += [
                nn.Conv2d(previous, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HalfAlexNet(nn.Module):
    """The half-width AlexNet of CMC, which MetAug's released code trains (one per view).

    Conv 48-128-192-192-128 and fc 2048-2048, BatchNorm after every layer. The stem is the
    small-image one (3x3, stride 1, as for the ResNets here) instead of ImageNet's 11x11
    stride 4, which would leave a 32x32 image almost no spatial extent; an adaptive pool
    to 2x2 before fc6 makes the net independent of the input size. The released fc8
    (2048 -> 128, then L2 normalisation) is the projection head: `projector_layers: 1`.
    """

    def __init__(self, channels: int):
        super().__init__()
        convs = [48, 128, 192, 192, 128]
        pooled_after = {0, 1, 4}
        layers: list[nn.Module] = []
        previous = channels
        for index, out in enumerate(convs):
            layers += [nn.Conv2d(previous, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if index in pooled_after:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            previous = out
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(previous * 4, 2048, bias=False),
            nn.BatchNorm1d(2048),
            nn.ReLU(inplace=True),
            nn.Linear(2048, 2048, bias=False),
            nn.BatchNorm1d(2048),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def build_encoder(model_cfg, channels: int) -> tuple[nn.Module, int]:
    """Return the backbone and the dimension of its features."""
    if model_cfg.encoder == "small_cnn":
        net = SmallCNN(channels, model_cfg.width)
        return net, net.feature_dim
    if model_cfg.encoder == "alexnet":
        alexnet = HalfAlexNet(channels)
        return alexnet, alexnet.feature_dim
    return _small_image_resnet(model_cfg.encoder, channels)


def build_mlp(in_dim: int, hidden: int, out: int, layers: int, batch_norm: bool) -> nn.Module:
    """An MLP head: (Linear, [BN], ReLU) x (layers-1), then Linear."""
    modules: list[nn.Module] = []
    previous = in_dim
    for _ in range(layers - 1):
        modules.append(nn.Linear(previous, hidden, bias=not batch_norm))
        if batch_norm:
            modules.append(nn.BatchNorm1d(hidden))
        modules.append(nn.ReLU(inplace=True))
        previous = hidden
    modules.append(nn.Linear(previous, out))
    return nn.Sequential(*modules)


def resolve_projector_bn(model_cfg, method_value: bool | None, published: bool) -> bool:
    """BN in the head: the method's own field, else `model.projector_bn`, else the method's published head."""
    if method_value is not None:
        return method_value
    return published if model_cfg.projector_bn is None else model_cfg.projector_bn


def build_projector(model_cfg, in_dim: int, batch_norm: bool | None = None) -> nn.Module:
    """The MLP head; `batch_norm` None follows `model.projector_bn` (BN when that is unset too)."""
    bn = resolve_projector_bn(model_cfg, batch_norm, True)
    return build_mlp(in_dim, model_cfg.projector_hidden, model_cfg.projector_out, model_cfg.projector_layers, bn)
