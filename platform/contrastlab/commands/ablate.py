"""`contrastlab ablate SPEC`: an ablation study (variants × seeds) on Ray Tune over Ray Train."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from contrastlab.commands import add_set_option
from contrastlab.errors import InputError

HELP = "run an ablation study from a spec (variants × paired seeds on Ray) and write its report"
log = logging.getLogger("contrastlab")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="ablation spec YAML (see ablations/ and docs/ablation.md)")
    parser.add_argument("--seeds", type=int, help="run seeds 0..N-1 (default: the spec's seeds)")
    parser.add_argument("--output", help="study folder (default: output.dir/ablations/<spec name>)")
    parser.add_argument(
        "--address", help="join this Ray cluster (auto or HOST:6379; for a remote cluster use ray job submit)"
    )
    parser.add_argument(
        "--storage",
        help="Ray storage path or URI for Tune and the Train runs (default: OUTPUT/ray; "
        "shared storage on clusters of several machines)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue unfinished or failed runs from their last checkpoints (finished runs are "
        "always reused; without --resume unfinished ones restart)",
    )
    add_set_option(parser, "a field of the base experiment", "optim.epochs=4")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the variants and runs, run nothing")


def print_plan(spec, output: Path) -> None:
    from contrastlab.ablation.cache import CACHE_FILE, RunCache, code_version
    from contrastlab.ablation.runner import plan_runs

    code = code_version()
    plan = plan_runs(spec, output, code, RunCache(output / CACHE_FILE))
    print(
        f"{spec.title}\ndesign {spec.design}, reference {spec.reference!r}, seeds {spec.seeds}, "
        f"metrics {spec.metrics}\ncode version {code}"
    )
    for variant in spec.variants:
        runs = [r for r in plan if r.variant is variant]
        reused = sum(bool(r.cached) for r in runs)
        print(
            f"  {variant.name:<32} {json.dumps(variant.overrides, sort_keys=True)}  "
            f"[{len(runs) - reused} to run, {reused} reused]"
        )
    if spec.retune:
        print(f"retune: {spec.retune.note()}\n(reuse is decided after each variant's search; counts above ignore it)")


def run(args: argparse.Namespace) -> int:
    from contrastlab.ablation.runner import AblationError, run_ablation
    from contrastlab.ablation.spec import load_spec
    from contrastlab.raytrain.session import check_address

    check_address(args.address, "ablate")
    spec = load_spec(args.spec, args.overrides, seeds=args.seeds)
    output = Path(args.output) if args.output else Path(spec.full.output.dir) / "ablations" / spec.name
    if args.dry_run:
        print_plan(spec, output.resolve())
        return 0
    try:
        outcome = run_ablation(
            spec, output, address=args.address, storage=args.storage, resume=args.resume, num_cpus=args.num_cpus
        )
    except AblationError as err:
        raise InputError(str(err)) from None
    print(outcome.summary())
    return 1 if outcome.failed else 0
