"""`contrastlab tune SPEC`: a hyperparameter study on Ray Tune + Optuna (TPE, ASHA)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from contrastlab.commands import add_set_option
from contrastlab.errors import InputError

HELP = "tune a method's hyperparameters from a search-space spec (Ray Tune + Optuna TPE, ASHA)"
log = logging.getLogger("contrastlab")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="study spec YAML (see search_spaces/)")
    parser.add_argument("--samples", type=int, help="number of trials (default: the spec's num_samples)")
    parser.add_argument("--output", help="study folder (default: runs/tune/<spec name>)")
    parser.add_argument(
        "--address", help="join this Ray cluster (auto or HOST:6379; for a remote cluster use ray job submit)"
    )
    parser.add_argument("--storage", help="Ray storage path or URI for Tune and the Train runs (default: OUTPUT/ray)")
    parser.add_argument(
        "--storage-db",
        help="SQLAlchemy URL of the Optuna database, e.g. postgresql://user@host/db "
        "(default: the spec's study_storage, else OUTPUT/study.db; CONTRASTLAB_STUDY_STORAGE can hold "
        "the URL with its password). The password is never written to the study folder",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the study in --output after an interruption (the spec must be unchanged); "
        "with --samples N above the study's num_samples, grow it to N trials in all",
    )
    parser.add_argument(
        "--warm-start",
        metavar="PREVIOUS_STUDY_FOLDER",
        help="start the study with the best configurations of a previous study of the same objectives "
        "(the parameters both spaces sample, inside the new ranges)",
    )
    parser.add_argument(
        "--warm-start-top",
        type=int,
        default=3,
        metavar="K",
        help="how many of the previous study's best trials --warm-start enqueues (default: 3)",
    )
    add_set_option(parser, "a field of the base experiment", "optim.epochs=4")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")


def run(args: argparse.Namespace) -> int:
    from contrastlab.engine.runfolder import claim_run_folder
    from contrastlab.raytrain.session import check_address
    from contrastlab.tuning.grow import growth_target, saved_record
    from contrastlab.tuning.preflight import check_study_request
    from contrastlab.tuning.runner import StudyError, resume_defaults, run_study
    from contrastlab.tuning.spec import load_spec
    from contrastlab.tuning.study import storage_from_environment
    from contrastlab.tuning.warmstart import warm_start_points

    check_address(args.address, "tune")
    spec = load_spec(args.spec, args.overrides, num_samples=args.samples, study_storage=args.storage_db)
    if not args.storage_db:  # the password may come from the environment, never from a file
        spec.study_storage = storage_from_environment(spec.study_storage)
    check_study_request(spec)  # before the folder, the database or Ray
    if args.warm_start:
        if args.resume:
            raise InputError("--warm-start: only when a study starts (a resumed study keeps the points it began with)")
        spec.warm_start = warm_start_points(
            args.warm_start, spec.space, spec.base, spec.metrics, spec.modes, args.warm_start_top
        )
    output = Path(args.output) if args.output else Path(spec.base.output.dir) / "tune" / spec.name
    if args.resume and not output.is_dir():  # checked before anything (study.db, ray/) is created
        raise InputError(f"{output}: a study folder to resume (not found); start the study without --resume")
    try:
        with claim_run_folder(output):  # one study per folder at a time
            ray_storage, grow_to = args.storage, None
            if args.resume:
                spec, ray_storage = resume_defaults(spec, output, args.storage)
                grow_to = growth_target(spec, output, args.samples)  # refuses a shrink before Ray starts
                spec.warm_start = saved_record(output).get("warm_start", [])
            outcome = run_study(
                spec,
                output,
                address=args.address,
                ray_storage=ray_storage,
                resume=args.resume,
                num_cpus=args.num_cpus,
                grow_to=grow_to,
            )
    except StudyError as err:
        raise InputError(str(err)) from None
    print(outcome.summary)
    return 0
