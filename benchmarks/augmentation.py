"""Two-view augmentation throughput: the device pipeline against the alternatives.

Measures source images per second (each image gives two augmented views) for
  device      contrastlab's TwoViewAugment on a batch already on the device
              (per-sample crop, flip, colour jitter in random order, grayscale, normalise)
  kornia      the same ops with kornia.augmentation (per-sample parameters); only if kornia
              is installed, as the "use a library" alternative
  pil_loader  the conventional pipeline: torchvision PIL transforms (RandomResizedCrop, flip,
              ColorJitter, RandomGrayscale, ToTensor, Normalize) in a DataLoader with as many
              workers as cores, two views per image, batches moved to the device

Timing: warm-up first, then blocks timed with perf_counter after a device synchronise;
the median block. Writes the results into benchmarks/results/augmentation.md, replacing
only this device kind's section (CPU and CUDA results live side by side).

    python benchmarks/augmentation.py            # CUDA when available, else CPU (about a minute)
    python benchmarks/augmentation.py --device cpu --batch 512
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from contrastlab.config import AugmentConfig
from contrastlab.data import TwoViewAugment

RESULTS = Path(__file__).resolve().parent / "results" / "augmentation.md"
HEADER = """# Two-view augmentation throughput

Produced by `python benchmarks/augmentation.py` (see its docstring for what each row
measures). Numbers are source images per second; every image yields two views. Each
device kind has its own section, replaced when the script runs on that kind.
"""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int = 2, min_blocks: int = 3, budget_s: float = 8.0) -> float:
    """Median seconds per call: at least `min_blocks` timed calls, then more while within budget."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_blocks or (time.perf_counter() - start < budget_s and len(times) < 20):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def device_rate(images: torch.Tensor, cfg: AugmentConfig, device: torch.device) -> float:
    channels, size = images.shape[1], images.shape[-1]
    aug = TwoViewAugment(cfg, channels, size, (0.5,) * channels, (0.25,) * channels)
    batch = images.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    return batch.shape[0] / timed(lambda: aug.two_views(batch, generator), device)


def kornia_rate(images: torch.Tensor, cfg: AugmentConfig, device: torch.device) -> float | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    channels, size = images.shape[1], images.shape[-1]
    ops = [
        K.RandomResizedCrop((size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio),
        K.RandomHorizontalFlip(p=cfg.hflip_prob),
    ]
    if channels == 3:
        ops += [
            K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_prob),
            K.RandomGrayscale(p=cfg.grayscale_prob),
        ]
    else:
        ops += [K.ColorJitter(cfg.brightness, cfg.contrast, p=cfg.jitter_prob)]
    ops.append(K.Normalize(torch.full((channels,), 0.5), torch.full((channels,), 0.25)))
    pipeline = K.AugmentationSequential(*ops).to(device)
    batch = images.to(device)

    def two_views():
        x = batch.float() / 255
        return pipeline(x), pipeline(x)

    return batch.shape[0] / timed(two_views, device)


class _PilTwoViews(torch.utils.data.Dataset):
    """What a torchvision dataset does: a PIL image per index, then the transform twice."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return self.transform(image), self.transform(image)


def pil_rate(images: torch.Tensor, cfg: AugmentConfig, device: torch.device, batches: int) -> float:
    from torchvision import transforms as T

    channels, size = images.shape[1], images.shape[-1]
    ops = [
        T.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
        T.RandomHorizontalFlip(cfg.hflip_prob),
    ]
    if channels == 3:
        jitter = T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        ops += [T.RandomApply([jitter], p=cfg.jitter_prob), T.RandomGrayscale(cfg.grayscale_prob)]
    else:
        ops += [T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast)], p=cfg.jitter_prob)]
    ops += [T.ToTensor(), T.Normalize((0.5,) * channels, (0.25,) * channels)]
    array = images.permute(0, 2, 3, 1).numpy()
    array = array[..., 0] if channels == 1 else array
    batch_size = images.shape[0]
    # Enough images for the warm-up batches and the timed ones.
    pool = np.concatenate([array] * (batches + 2))
    loader = torch.utils.data.DataLoader(
        _PilTwoViews(pool, T.Compose(ops)),
        batch_size=batch_size,
        num_workers=os.cpu_count() or 1,
        shuffle=True,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    iterator = iter(loader)
    for _ in range(2):  # worker start-up and first batches are not steady state
        next(iterator)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        v1, v2 = next(iterator)
        v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def write_section(device: torch.device, rows: list[tuple[str, str, float | None]], batch: int, notes: str) -> None:
    kind = device.type
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        import kornia

        versions = f"torch {torch.__version__}, kornia {kornia.__version__}"
    except ImportError:
        versions = f"torch {torch.__version__}"
    lines = [
        f"<!-- results:{kind} -->",
        f"## {kind.upper()}: {machine(device)}",
        "",
        f"{versions}, Python {platform.python_version()}, batch {batch}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average {load} (1/5/15 min).",
        "",
        "| images | pipeline | images/s (x2 views) | vs pil_loader |",
        "|---|---|---:|---:|",
    ]
    baselines = {shape: rate for shape, name, rate in rows if name == "pil_loader"}
    for shape, name, rate in rows:
        text = "n/a (not installed)" if rate is None else f"{rate:,.0f}"
        ratio = "" if rate is None or not baselines.get(shape) else f"{rate / baselines[shape]:.2f}x"
        lines.append(f"| {shape} | {name} | {text} | {ratio} |")
    if notes:
        lines += ["", notes]
    lines.append(f"<!-- /results:{kind} -->")
    section = "\n".join(lines)
    text = RESULTS.read_text() if RESULTS.is_file() else HEADER
    pattern = re.compile(rf"<!-- results:{kind} -->.*?<!-- /results:{kind} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--pil-batches", type=int, default=None, help="timed DataLoader batches")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--notes", default="", help="a line to add under the table")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = AugmentConfig()
    # (channels, size): Fashion-MNIST-like grey, CIFAR-like colour; STL-10-like on a GPU.
    shapes = [(1, 28), (3, 32)] + ([(3, 96)] if device.type == "cuda" else [])
    pil_batches = args.pil_batches or (20 if device.type == "cuda" else 4)
    rows: list[tuple[str, str, float | None]] = []
    for channels, size in shapes:
        images = torch.randint(
            0, 256, (args.batch, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        shape = f"{channels}x{size}x{size}"
        for name, rate in (
            ("device", device_rate(images, cfg, device)),
            ("kornia", kornia_rate(images, cfg, device)),
            ("pil_loader", pil_rate(images, cfg, device, pil_batches)),
        ):
            rows.append((shape, name, rate))
            print(f"{shape:>9}  {name:<11} {'n/a' if rate is None else f'{rate:>10,.0f}'} images/s", flush=True)
    if not args.no_write:
        write_section(device, rows, args.batch, args.notes)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
