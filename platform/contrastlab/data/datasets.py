"""Datasets as uint8 tensors: Fashion-MNIST, CIFAR-10/100, STL-10 and image folders.

Every loader returns a `DataBundle` whose images are uint8 [N, C, H, W] tensors, so the
training loop can keep a whole dataset in device memory and never touch a per-image
Python path. (The synthetic Trifeature set lives in `trifeature.py`.)
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from contrastlab.progress import Progress, track

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


@dataclass
class DataBundle:
    """One dataset in memory, in three splits.

    `train_images` is the labelled training part: pretraining reads it, and it is the kNN
    bank and the linear probes' training set. `val_images` is carved from the training split
    (`load_dataset`): every number that selection reads (the per-epoch kNN monitor, Tune's
    objective, ASHA, retuning) is measured on it. `test_images` is read once, at the end of
    a run. Where a dataset has extra unlabelled images (STL-10), `unlabeled_images` holds
    them and `pretrain_images` the pool pretraining draws from (train part + unlabelled);
    `None` means "pretrain on `train_images`".
    """

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
    unlabeled_images: torch.Tensor | None = None
    val_images: torch.Tensor | None = None
    val_labels: dict[str, torch.Tensor] | None = None

    # Derived from the tensors rather than stored, so they cannot disagree with them after
    # subsetting or resizing.
    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def pretraining_images(self) -> torch.Tensor:
        return self.train_images if self.pretrain_images is None else self.pretrain_images

    @property
    def has_val(self) -> bool:
        return self.val_images is not None and self.val_images.shape[0] > 0

    def split(self, name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images and labels of `train`, `val` or `test`."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "val":
            if not self.has_val:
                raise ValueError(f"{self.name}: no validation split (data.val_size is 0)")
            return self.val_images, self.val_labels  # type: ignore[return-value]
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"split: expected train, val or test, got {name!r}")


def cache_dir(data_cfg) -> Path:
    """data.cache_dir, else $CONTRASTLAB_CACHE, else ~/.cache/contrastlab (created)."""
    root = data_cfg.cache_dir or os.environ.get("CONTRASTLAB_CACHE") or Path.home() / ".cache" / "contrastlab"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0-1 scale, from (at most) the first 10,000 images."""
    sample = images[:10000].float() / 255
    return tuple(sample.mean((0, 2, 3)).tolist()), tuple(sample.std((0, 2, 3)).clamp_min(1e-3).tolist())


# -- Fashion-MNIST -----------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzipped) IDX file of unsigned bytes in one vectorised step."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    offset = 4 + 4 * dims
    if len(raw) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, but {len(raw) - offset} bytes follow (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _fashion_dir(root: str | os.PathLike | None) -> Path | None:
    """The first folder holding the IDX files: root, root/FashionMNIST/raw, the system copy."""
    candidates = [Path(root)] if root else []
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    for folder in candidates:
        for sub in (folder, folder / "FashionMNIST" / "raw"):  # the second is torchvision's layout
            first = sub / FASHION_FILES["train_images"]
            if first.is_file() or first.with_suffix("").is_file():
                return sub
    return None


def _idx_file(folder: Path, name: str) -> Path:
    gz = folder / FASHION_FILES[name]
    return gz if gz.is_file() else gz.with_suffix("")


def load_fashion_mnist(data_cfg) -> DataBundle:
    folder = _fashion_dir(data_cfg.root)
    if folder is None and data_cfg.download:
        from torchvision.datasets import FashionMNIST

        root = Path(data_cfg.root or cache_dir(data_cfg))
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
        folder = _fashion_dir(root)
    if folder is None:
        raise DatasetNotFound(
            f"fashion_mnist: IDX files not found in {data_cfg.root or FASHION_MNIST_SYSTEM_DIR}; "
            "install the Debian package (apt-get install dataset-fashion-mnist), point data.root at a "
            "folder with the IDX files, or set data.download: true (or run `contrastlab data prepare "
            "fashion_mnist --download`) on a machine that is online"
        )
    arrays = {
        name: read_idx(_idx_file(folder, name)) for name in track(FASHION_FILES, "reading fashion_mnist", unit="files")
    }
    return DataBundle(
        "fashion_mnist",
        torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
        {"label": torch.from_numpy(arrays["train_labels"].astype(np.int64))},
        torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        {"label": torch.from_numpy(arrays["test_labels"].astype(np.int64))},
        {"label": 10},
        mean=(0.2860,),
        std=(0.3530,),
    )


# -- torchvision datasets ----------------------------------------------------------------
def _torchvision(data_cfg, name: str, build: Callable[[str, bool], Any]) -> Any:
    root = data_cfg.root or str(cache_dir(data_cfg))
    try:
        return build(root, data_cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFound(
            f"{name}: not found under {root} ({err}); put torchvision's {name} files there "
            f"(data.root), or set data.download: true, or run `contrastlab data prepare {name} "
            "--download` on a machine that is online"
        ) from None


def _nhwc_to_nchw(array: np.ndarray) -> torch.Tensor:
    """One vectorised conversion of a [N, H, W, C] uint8 array into a contiguous NCHW tensor."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def load_cifar(data_cfg, classes: int) -> DataBundle:
    from torchvision.datasets import CIFAR10, CIFAR100

    if classes == 10:
        cls, name = CIFAR10, "cifar10"
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    else:
        cls, name = CIFAR100, "cifar100"
        mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    with Progress(f"loading {name}", 2, "splits") as progress:
        train = _torchvision(data_cfg, name, lambda r, d: cls(r, train=True, download=d))
        progress.update()
        test = _torchvision(data_cfg, name, lambda r, d: cls(r, train=False, download=d))
        progress.update()
    return DataBundle(
        name,
        _nhwc_to_nchw(train.data),
        {"label": torch.tensor(train.targets)},
        _nhwc_to_nchw(test.data),
        {"label": torch.tensor(test.targets)},
        {"label": classes},
        mean=mean,
        std=std,
    )


def load_stl10(data_cfg) -> DataBundle:
    """Pretraining pool = labelled train part + unlabelled (100k) images, as in the STL-10
    protocol; the kNN monitor and probes train on the labelled train part, and are measured on
    the validation images carved from the labelled 5k and on the 8k test images."""
    from torchvision.datasets import STL10

    splits = {}
    for split in track(("train", "test", "unlabeled"), "loading stl10", unit="splits"):
        splits[split] = _torchvision(data_cfg, "stl10", lambda r, d, s=split: STL10(r, split=s, download=d))
    train, test, unlabeled = splits["train"], splits["test"], splits["unlabeled"]
    train_images = torch.from_numpy(train.data)  # torchvision keeps STL-10 as NCHW uint8 already
    # The pretraining pool (train part + unlabelled) is assembled by load_dataset once the
    # validation images are carved out, so pretraining never sees them.
    return DataBundle(
        "stl10",
        train_images,
        {"label": torch.from_numpy(train.labels.astype(np.int64))},
        torch.from_numpy(test.data),
        {"label": torch.from_numpy(test.labels.astype(np.int64))},
        {"label": 10},
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        unlabeled_images=torch.from_numpy(unlabeled.data),
    )


# -- image folders -------------------------------------------------------------------------
def _read_folder(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    files = [
        (file, index)
        for index, cls in enumerate(classes)
        for file in (sorted((folder / cls).iterdir()) if (folder / cls).is_dir() else [])
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    images, labels = [], []
    for file, index in track(files, f"decoding images in {folder}", unit="images", rate_unit="img"):
        # Decoding is per file anyway; resizing here keeps memory at the final size.
        with Image.open(file) as image:
            images.append(np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)))
        labels.append(index)
    if not images:
        raise DatasetNotFound(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}/<class>/")
    return _nhwc_to_nchw(np.stack(images)), torch.tensor(labels)


def load_image_folder(data_cfg) -> DataBundle:
    """root/<class>/*.png|jpg (split 90/10 with a fixed seed, the same for every run), or
    root/train/<class> and root/test/<class>. Resized once to data.image_size (default 32)."""
    root = Path(data_cfg.root) if data_cfg.root else None
    if root is None or not root.is_dir():
        raise DatasetNotFound(
            f"image_folder: data.root {data_cfg.root!r} is not a folder; set data.root to a folder of "
            "class sub-folders (root/<class>/*.png), or with root/train/<class> and root/test/<class>"
        )
    size = data_cfg.image_size or 32
    split = (root / "train").is_dir() and (root / "test").is_dir()
    source = root / "train" if split else root
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    if split:
        unknown = {p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes)
        if unknown:
            raise ValueError(f"image_folder: test classes {sorted(unknown)} have no train folder in {source}")
        train, y_train = _read_folder(source, classes, size)
        test, y_test = _read_folder(root / "test", classes, size)
    else:
        images, labels = _read_folder(root, classes, size)
        if len(labels) < 2:
            raise ValueError(f"image_folder: {root} holds {len(labels)} image; need at least 2 to split")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        cut = min(len(labels) - 1, max(1, round(0.9 * len(labels))))
        train, y_train = images[order[:cut]], labels[order[:cut]]
        test, y_test = images[order[cut:]], labels[order[cut:]]
    mean, std = channel_stats(train)
    return DataBundle(
        "image_folder", train, {"label": y_train}, test, {"label": y_test}, {"label": len(classes)}, mean=mean, std=std
    )


# -- common post-processing ----------------------------------------------------------------
def default_val_size(total: int) -> int:
    """10% of the training split, capped at 5,000 images."""
    return min(5000, round(0.1 * total))


def val_count(val_size: int | float | None, total: int) -> int:
    """How many validation images `data.val_size` asks for out of `total` training images."""
    if val_size is None:
        return default_val_size(total)
    if isinstance(val_size, float):
        return max(1, round(val_size * total))
    return int(val_size)


def stratified_split(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train part, val part) index tensors, both sorted; `count` indices go to val.

    Each class gives its share of `count` (largest remainders settle the rounding), chosen at
    random from a generator seeded with `seed`, so the split depends on the data seed alone.
    """
    total = labels.shape[0]
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * count / total
    quota = exact.floor().long()
    short = count - int(quota.sum())
    if short > 0:
        quota[torch.argsort(exact - quota, descending=True, stable=True)[:short]] += 1
    shuffled = labels[order]
    chosen = [order[shuffled == cls][: int(q)] for cls, q in zip(classes.tolist(), quota.tolist())]
    val = torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
    keep = torch.ones(total, dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val


def subset_indices(total: int, count: int | None, seed: int) -> torch.Tensor | None:
    """A seeded, class-agnostic random subset (sorted, so images keep their file order)."""
    if count is None or count >= total:
        return None
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]
    return order.sort().values


def resize(images: torch.Tensor, size: int | None, chunk: int = 4096, what: str = "resizing images") -> torch.Tensor:
    """Antialiased bilinear resize of uint8 images, in chunks to bound the float copy."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    if images.shape[0] == 0:
        return images.new_empty((0, images.shape[1], size, size))
    out = []
    with Progress(what, images.shape[0], "images", rate_unit="img") as progress:
        for start in range(0, images.shape[0], chunk):
            part = images[start : start + chunk].float()
            part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(part.round_().clamp_(0, 255).to(torch.uint8))
            progress.update(part.shape[0])
    return torch.cat(out)
