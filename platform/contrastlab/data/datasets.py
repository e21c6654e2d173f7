"""Datasets as uint8 tensors: Fashion-MNIST, CIFAR-10/100, STL-10, image folders, Trifeature.

Every loader returns a `DataBundle` whose images are uint8 [N, C, H, W] tensors, so the
training loop can keep a whole dataset in device memory and never touch a per-image
Python path.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


@dataclass
class DataBundle:
    name: str
    train_images: torch.Tensor
    train_labels: dict[str, torch.Tensor]
    test_images: torch.Tensor
    test_labels: dict[str, torch.Tensor]
    num_classes: dict[str, int]
    primary_label: str = "label"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    pretrain_images: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


def cache_dir(data_cfg) -> Path:
    root = data_cfg.cache_dir or os.environ.get("CONTRASTLAB_CACHE") or Path.home() / ".cache" / "contrastlab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0–1 scale, from (at most) 10,000 images."""
    sample = images[:10000].float() / 255
    return tuple(sample.mean((0, 2, 3)).tolist()), tuple(sample.std((0, 2, 3)).clamp_min(1e-3).tolist())


# -- Fashion-MNIST ---------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzipped) IDX file into a numpy array in one step."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_dir(data_cfg) -> Path | None:
    candidates = [Path(data_cfg.root)] if data_cfg.root else []
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    for folder in candidates:
        for sub in (folder, folder / "FashionMNIST" / "raw"):
            if (sub / FASHION_FILES["train_images"]).is_file() or (sub / "train-images-idx3-ubyte").is_file():
                return sub
    return None


def _idx_file(folder: Path, name: str) -> Path:
    gz = folder / FASHION_FILES[name]
    return gz if gz.is_file() else gz.with_suffix("")


def load_fashion_mnist(data_cfg) -> DataBundle:
    folder = _fashion_dir(data_cfg)
    if folder is None and data_cfg.download:
        from torchvision.datasets import FashionMNIST

        root = Path(data_cfg.root or cache_dir(data_cfg))
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
        folder = _fashion_dir(type("C", (), {"root": str(root)})())
    if folder is None:
        raise DatasetNotFound(
            "fashion_mnist: files not found in "
            f"{data_cfg.root or FASHION_MNIST_SYSTEM_DIR}; install the Debian package "
            "(apt-get install dataset-fashion-mnist), point data.root at the IDX files, "
            "or set data.download: true where the machine is online"
        )
    arrays = {name: read_idx(_idx_file(folder, name)) for name in FASHION_FILES}
    train = torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1)
    test = torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1)
    return DataBundle(
        "fashion_mnist", train, {"label": torch.from_numpy(arrays["train_labels"].astype(np.int64))},
        test, {"label": torch.from_numpy(arrays["test_labels"].astype(np.int64))}, {"label": 10},
        mean=(0.286,), std=(0.353,),
    )


# -- torchvision datasets ------------------------------------------------------------------
def _torchvision(data_cfg, name: str, build: Callable[[str, bool], object]):
    root = data_cfg.root or str(cache_dir(data_cfg))
    try:
        return build(root, data_cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFound(
            f"{name}: not found under {root} ({err}); put the torchvision files there (data.root), "
            "or set data.download: true, or run `contrastlab data prepare "
            f"{name} --download` on a machine that is online"
        ) from None


def _as_uint8_nchw(array) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array))
    return tensor.permute(0, 3, 1, 2).contiguous() if tensor.shape[-1] in (1, 3) else tensor.contiguous()


def load_cifar(data_cfg, classes: int) -> DataBundle:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, name = (CIFAR10, "cifar10") if classes == 10 else (CIFAR100, "cifar100")
    train = _torchvision(data_cfg, name, lambda r, d: cls(r, train=True, download=d))
    test = _torchvision(data_cfg, name, lambda r, d: cls(r, train=False, download=d))
    return DataBundle(
        name, _as_uint8_nchw(train.data), {"label": torch.tensor(train.targets)},
        _as_uint8_nchw(test.data), {"label": torch.tensor(test.targets)}, {"label": classes},
        mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.243, 0.261),
    )


def load_stl10(data_cfg) -> DataBundle:
    """Pretrain on train+unlabeled (105k images); kNN and probes use the labelled splits."""
    from torchvision.datasets import STL10

    train = _torchvision(data_cfg, "stl10", lambda r, d: STL10(r, split="train", download=d))
    test = _torchvision(data_cfg, "stl10", lambda r, d: STL10(r, split="test", download=d))
    unlabeled = _torchvision(data_cfg, "stl10", lambda r, d: STL10(r, split="unlabeled", download=d))
    train_images = torch.from_numpy(train.data)
    return DataBundle(
        "stl10", train_images, {"label": torch.from_numpy(train.labels.astype(np.int64))},
        torch.from_numpy(test.data), {"label": torch.from_numpy(test.labels.astype(np.int64))}, {"label": 10},
        mean=(0.447, 0.440, 0.405), std=(0.260, 0.256, 0.271),
        pretrain_images=torch.cat([train_images, torch.from_numpy(unlabeled.data)]),
    )


def load_image_folder(data_cfg) -> DataBundle:
    """root/<class>/*.png|jpg, or root/train/<class> and root/test/<class>; resized once."""
    from PIL import Image

    if not data_cfg.root or not Path(data_cfg.root).is_dir():
        raise DatasetNotFound(f"image_folder: data.root {data_cfg.root!r} is not a folder of class sub-folders")
    root, size = Path(data_cfg.root), data_cfg.image_size or 32
    splits = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
    classes = sorted(p.name for p in splits[0].iterdir() if p.is_dir())

    def load(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for index, cls in enumerate(classes):
            for file in sorted((folder / cls).glob("*")):
                if file.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"}:
                    image = Image.open(file).convert("RGB").resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(image))
                    labels.append(index)
        if not images:
            raise DatasetNotFound(f"image_folder: no images under {folder}/<class>/")
        return _as_uint8_nchw(np.stack(images)), torch.tensor(labels)

    if len(splits) == 2:
        (train, y_train), (test, y_test) = load(splits[0]), load(splits[1])
    else:
        images, labels = load(root)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        cut = max(1, int(0.9 * len(labels)))
        train, y_train = images[order[:cut]], labels[order[:cut]]
        test, y_test = images[order[cut:]], labels[order[cut:]]
    mean, std = channel_stats(train)
    return DataBundle("image_folder", train, {"label": y_train}, test, {"label": y_test},
                      {"label": len(classes)}, mean=mean, std=std)


# -- common post-processing ------------------------------------------------------------------
def take_subset(images: torch.Tensor, labels: dict[str, torch.Tensor], count: int | None, seed: int):
    if count is None or count >= images.shape[0]:
        return images, labels
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:count]
    order = order.sort().values
    return images[order], {k: v[order] for k, v in labels.items()}


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or images.shape[-1] == size:
        return images
    out = []
    for start in range(0, images.shape[0], 4096):
        chunk = images[start : start + 4096].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)
