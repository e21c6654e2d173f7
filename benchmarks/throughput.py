"""Training-step throughput: the end-to-end step against the model's own limit.

Measures, in one process on one device:
  model_only     forward + backward of encoder and head on two pre-made views
                 (no augmentation, no loss extras), the ceiling for a step
  simclr_step    the full SimCLR step: data in device memory, per-sample two-view
                 augmentation, forward, NT-Xent, backward, optimiser
  pil_loader     the conventional pipeline: a torchvision PIL-transform DataLoader
                 (as many workers as cores) feeding the same SimCLR step
  <method>_step  every other method's full step, as a ratio to its base; MCL is timed in a
                 later stage (pseudo-labels set, other-cluster negatives masked), the
                 costlier of its two samplers (cluster_batches runs the base step as it is)
  kmeans         MCL's between-stage work (embed the training set + k-means, K = 10) as a
                 share of one stage's training time

Timing: warm-up first, then CUDA events (or perf_counter on CPU) around blocks of steps,
synchronised. The arms are interleaved: each round times one block of every arm, in an
order rotated from round to round, and every ratio is the median of per-round ratios, so
that a busy spell of a shared machine cannot make one arm look faster than it is. Writes
a Markdown table and a JSON file under benchmarks/results/.

    python benchmarks/throughput.py                       # GPU setting: resnet18, 32x32, batch 512, bf16
    python benchmarks/throughput.py --cpu-small           # the CPU setting used in CI-sized runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from contrastlab.config import config_from_dict
from contrastlab.data import DataBundle
from contrastlab.distributed import LocalDistributed
from contrastlab.engine import build_run
from contrastlab.methods import StepTools, TrainBatch

RESULTS = Path(__file__).resolve().parent / "results"

# Each method's step is compared with the base it builds on (docs/methods.md).
METHODS = {
    "simclr": ({"name": "simclr"}, None, None),
    "sscl": ({"name": "sscl"}, "simclr", 1.15),
    "mcl": ({"name": "mcl", "stages": 1, "sampling": "mask_other_clusters"}, "simclr", 1.05),
    "moco": ({"name": "moco", "queue_size": 4096}, None, None),
    "slr": ({"name": "slr", "queue_size": 4096}, "moco", 1.7),
    "metaug": ({"name": "metaug"}, "simclr", 3.0),
}


class Timer:
    def __init__(self, device: torch.device):
        self.device = device

    def block(self, fn, steps: int) -> float:
        """Seconds per step of one timed block of `steps` steps."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000 / steps
        started = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - started) / steps

    def rounds(self, arms: dict, steps: int, repeats: int, warmup: int) -> dict[str, list[float]]:
        """Seconds per step of every arm in each of `repeats` rounds.

        A round times one block of each arm, in an order rotated from round to round, so that
        a slow spell of a shared machine falls on all arms of a round alike; comparisons are
        then made within a round (`paired_ratio`), never between blocks timed far apart.
        """
        for fn in arms.values():
            for _ in range(warmup):
                fn()
        self.sync()
        names = list(arms)
        times: dict[str, list[float]] = {name: [] for name in names}
        self.loads: list[float] = []  # the 1-minute load average as each round starts
        for r in range(repeats):
            self.loads.append(os.getloadavg()[0])
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(self.block(arms[name], steps))
        return times

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of numerator / denominator, each pair timed in the same round."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def build_config(args, method: dict):
    return config_from_dict(
        {
            "data": {"name": "cifar10", "image_size": args.size},
            "model": {
                "encoder": args.encoder,
                "width": 16,
                "compile": args.compile,
                "projector_hidden": args.proj_hidden,
                "projector_out": 128,
            },
            "method": method,
            "optim": {"batch_size": args.batch, "precision": args.precision, "epochs": 10},
            "resources": {"device": args.device},
        },
        "<benchmark>",
    )


def synthetic_bundle(args, device: torch.device) -> DataBundle:
    """A random uint8 dataset resident on the device (labels only feed the evaluator, unused here)."""
    images = torch.randint(0, 256, (args.dataset_size, 3, args.size, args.size), dtype=torch.uint8, device=device)
    labels = {"label": torch.zeros(args.dataset_size, dtype=torch.long)}
    return DataBundle(
        "synthetic",
        images,
        labels,
        images[:1],
        {"label": labels["label"][:1]},
        {"label": 10},
        mean=(0.49, 0.48, 0.45),
        std=(0.25, 0.24, 0.26),
    )


class Setup:
    """Everything a step needs, assembled as a training run is (`build_run`), on a synthetic
    uint8 dataset resident on the device."""

    def __init__(self, args, method: dict, device: torch.device, bundle: DataBundle):
        self.cfg = build_config(args, method)
        self.device = device
        run = build_run(self.cfg, LocalDistributed(device), bundle=bundle)
        self.images, self.augment, self.method = run.train_images, run.augment, run.method
        self.channels_last = run.channels_last
        if method["name"] == "mcl":  # a later stage: pseudo-labels in place, as after a k-means
            self.method.active_stage.fill_(1)
            self.method.pseudo_labels.copy_(torch.randint(0, 10, (args.dataset_size,), device=device))
        self.optimizers = run.optimizers
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.batch = args.batch
        self.step_index = 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.optim.precision == "bf16")

    def views(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.images.shape[0], (self.batch,), device=self.device, generator=self.generator)
        v1, v2 = self.augment.two_views(self.images[idx], self.generator)
        if self.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        return v1, v2

    def full_step(self, views=None) -> None:
        views = views if views is not None else self.views()
        idx = torch.randint(0, self.images.shape[0], (self.batch,), device=self.device, generator=self.generator)
        batch = TrainBatch(views, idx, 0, self.step_index, self.generator)
        tools = StepTools(self.optimizers, self.autocast)
        self.method.train_step(self.method, batch, tools)
        self.step_index += 1

    def model_only_step(self, views) -> None:
        opt = self.optimizers[0]
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            z = self.method.projector(self.method.encoder(torch.cat(views)))
        z.float().pow(2).mean().backward()
        opt.step()


def pil_loader_step(args, setup: Setup):
    """The SimCLR step fed by a torchvision PIL-transform DataLoader, as a function."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    size = args.size
    transform = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.ToTensor(),
            T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
        ]
    )
    arrays = setup.images[: args.dataset_size].permute(0, 2, 3, 1).cpu().numpy()

    class TwoViews(Dataset):
        def __len__(self) -> int:
            return len(arrays)

        def __getitem__(self, i):
            image = Image.fromarray(arrays[i])
            return transform(image), transform(image)

    workers = os.cpu_count() or 1
    loader = DataLoader(
        TwoViews(),
        batch_size=args.batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=setup.device.type == "cuda",
        persistent_workers=True,
    )
    iterator = iter(loader)

    def step() -> None:
        nonlocal iterator
        try:
            v1, v2 = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            v1, v2 = next(iterator)
        views = (v1.to(setup.device, non_blocking=True), v2.to(setup.device, non_blocking=True))
        if setup.channels_last:
            views = tuple(v.contiguous(memory_format=torch.channels_last) for v in views)
        setup.full_step(views)

    return step


def kmeans_share(args, setup: Setup, step_seconds: float) -> dict[str, float]:
    """MCL's between-stage work on a `--kmeans-samples` training set, against one stage of
    `--stage-epochs` epochs at the measured MCL step time."""
    from contrastlab.methods.mcl_sampling import kmeans_assign

    timer = Timer(setup.device)
    images = torch.randint(
        0, 256, (args.kmeans_samples, 3, args.size, args.size), dtype=torch.uint8, device=setup.device
    )
    encoder = setup.method.encoder
    encoder.eval()
    chunks = 1024

    def embed() -> torch.Tensor:
        with torch.no_grad(), setup.autocast():
            return torch.cat(
                [encoder(images[i : i + chunks].float().div_(255)).float() for i in range(0, len(images), chunks)]
            )

    embed()  # warm-up (cuDNN autotuning for the eval batch shape)
    timer.sync()
    started = time.perf_counter()
    features = embed()
    timer.sync()
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    kmeans_assign(features, 10, seed=0, n_init=setup.cfg.method.kmeans_restarts)
    kmeans_s = time.perf_counter() - started
    encoder.train()
    stage_s = args.stage_epochs * (args.kmeans_samples // args.batch) * step_seconds
    return {"embed_s": embed_s, "kmeans_s": kmeans_s, "stage_s": stage_s, "share": (embed_s + kmeans_s) / stage_s}


def run(args) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    torch.manual_seed(0)
    bundle = synthetic_bundle(args, device)
    base = Setup(args, METHODS["simclr"][0], device, bundle)
    fixed = base.views()
    arms = {
        "model_only": lambda: base.model_only_step(fixed),
        "simclr_step": base.full_step,
        "augment_only": base.views,
    }
    setups = {name: Setup(args, METHODS[name][0], device, bundle) for name in args.methods if name != "simclr"}
    arms.update({f"{name}_step": setup.full_step for name, setup in setups.items()})
    if not args.skip_pil:
        arms["pil_loader"] = pil_loader_step(args, base)
    times = timer.rounds(arms, args.steps, args.repeats, args.warmup)
    rows = {name: args.batch / statistics.median(seconds) for name, seconds in times.items()}
    # Every ratio is taken within a round, then the median over rounds.
    ratios = {"simclr_of_model": paired_ratio(times["model_only"], times["simclr_step"])}
    if "pil_loader" in times:
        ratios["simclr_over_pil"] = paired_ratio(times["pil_loader"], times["simclr_step"])
    for method, (_, reference, _) in METHODS.items():
        key, ref = f"{method}_step", f"{reference}_step"
        if key in times and method != "simclr" and ref in times:
            ratios[f"{method}_cost"] = paired_ratio(times[key], times[ref])
    kmeans = kmeans_share(args, setups["mcl"], statistics.median(times["mcl_step"])) if "mcl" in setups else None
    per_round = [
        {
            "load_1min": load,
            "simclr_of_model": times["model_only"][r] / times["simclr_step"][r],
            **({"simclr_over_pil": times["pil_loader"][r] / times["simclr_step"][r]} if "pil_loader" in times else {}),
        }
        for r, load in enumerate(timer.loads)
    ]
    return {"device": device, "rows": rows, "ratios": ratios, "kmeans": kmeans, "rounds": per_round}


def report(args, result: dict) -> str:
    device, rows = result["device"], result["rows"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: {name}",
        "",
        f"load average at the end (1/5/15 min): {load}; torch {torch.__version__}, encoder {args.encoder}, "
        f"{args.size}x{args.size}, batch {args.batch}, "
        f"{args.precision}, compile {'on' if args.compile else 'off'}; {args.repeats} rounds of {args.steps} steps "
        "per arm, arms interleaved in each round; images/s: median over rounds; ratios: median of per-round ratios",
        "",
        "| measurement | images/s | ratio | target |",
        "|---|---:|---:|---|",
    ]
    ratios = result["ratios"]
    ceiling, simclr = rows["model_only"], rows["simclr_step"]
    lines.append(f"| model only (fwd+bwd, pre-made views) | {ceiling:,.0f} | 1.00 | |")
    lines.append(f"| SimCLR end-to-end step | {simclr:,.0f} | {ratios['simclr_of_model']:.2f} of model | >= 0.85 |")
    lines.append(f"| augmentation alone (two views) | {rows['augment_only']:,.0f} | | |")
    if "pil_loader" in rows:
        lines.append(
            f"| PIL DataLoader + same step | {rows['pil_loader']:,.0f} | "
            f"ours is {ratios['simclr_over_pil']:.2f}x this | ours >= 3x |"
        )
    for method, (_, base, target) in METHODS.items():
        key = f"{method}_step"
        if key not in rows or method == "simclr":
            continue
        if base is None:
            lines.append(f"| {method} step | {rows[key]:,.0f} | | |")
            continue
        cost = ratios.get(f"{method}_cost", float("nan"))
        lines.append(f"| {method} step | {rows[key]:,.0f} | {cost:.2f}x {base}'s step cost | <= {target} |")
    kmeans = result.get("kmeans")
    if kmeans:
        lines.append(
            f"| MCL between stages: embed {args.kmeans_samples:,} + k-means (K=10) | "
            f"{kmeans['embed_s']:.1f} s + {kmeans['kmeans_s']:.1f} s | "
            f"{100 * kmeans['share']:.1f}% of a {args.stage_epochs}-epoch stage | <= 5% |"
        )
    lines += [
        "",
        "| round | load average (1 min) at its start | SimCLR / model | ours / PIL |",
        "|---:|---:|---:|---:|",
    ]
    for index, r in enumerate(result["rounds"]):
        pil = f"{r['simclr_over_pil']:.2f}" if "simclr_over_pil" in r else ""
        lines.append(f"| {index + 1} | {r['load_1min']:.2f} | {r['simclr_of_model']:.2f} | {pil} |")
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    lines += ["", f"command: `{prefix}python benchmarks/throughput.py {' '.join(sys.argv[1:])}`", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--proj-hidden", type=int, default=2048)
    parser.add_argument("--dataset-size", type=int, default=8192)
    parser.add_argument("--steps", type=int, help="steps per timed block (default 20; 3 with --cpu-small)")
    parser.add_argument(
        "--repeats", type=int, help="timed blocks; the median is reported (default 5; 3 with --cpu-small)"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 10; 2 with --cpu-small)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--skip-pil", action="store_true")
    parser.add_argument(
        "--kmeans-samples", type=int, help="training-set size for MCL's k-means (default 50000; 2048 with --cpu-small)"
    )
    parser.add_argument("--stage-epochs", type=int, default=10, help="epochs of the MCL stage the k-means precedes")
    parser.add_argument(
        "--cpu-small",
        action="store_true",
        help="small CNN, batch 128, fp32 on CPU: a setting that finishes in minutes on 2 cores",
    )
    parser.add_argument("--output", default=None, help="results file (default: results/throughput_<device>.md)")
    args = parser.parse_args(argv)
    if args.cpu_small:
        args.device, args.encoder, args.batch, args.precision = "cpu", "small_cnn", 128, "fp32"
        args.proj_hidden, args.dataset_size = 256, 2048
    preset = (3, 3, 2, 2048) if args.cpu_small else (20, 5, 10, 50000)
    for name, value in zip(("steps", "repeats", "warmup", "kmeans_samples"), preset):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    text = report(args, result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    kind = "gpu" if result["device"].type == "cuda" else "cpu"
    path = Path(args.output) if args.output else RESULTS / f"throughput_{kind}.md"
    previous = path.read_text() if path.exists() else f"# Step throughput ({kind})\n\n"
    path.write_text(previous + text + "\n")
    json_path = path.with_suffix(".json")
    json_path.write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": result["rows"],
                "ratios": result["ratios"],
                "kmeans": result["kmeans"],
                "rounds": result["rounds"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
