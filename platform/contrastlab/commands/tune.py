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
        help="continue the study in --output after an interruption (the spec must be unchanged)",
    )
    add_set_option(parser, "a field of the base experiment", "optim.epochs=4")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")


def run(args: argparse.Namespace) -> int:
    from contrastlab.engine.runfolder import claim_run_folder
    from contrastlab.raytrain.session import check_address
    from contrastlab.tuning.preflight import check_study_request
    from contrastlab.tuning.runner import StudyError, resume_defaults, run_study
    from contrastlab.tuning.spec import load_spec
    from contrastlab.tuning.study import storage_from_environment

    check_address(args.address, "tune")
    spec = load_spec(args.spec, args.overrides, num_samples=args.samples, study_storage=args.storage_db)
    if not args.storage_db:  # the password may come from the environment, never from a file
        spec.study_storage = storage_from_environment(spec.study_storage)
    check_study_request(spec)  # before the folder, the database or Ray
    output = Path(args.output) if args.output else Path(spec.base.output.dir) / "tune" / spec.name
    if args.resume and not output.is_dir():  # checked before anything (study.db, ray/) is created
        raise InputError(f"{output}: a study folder to resume (not found); start the study without --resume")
    try:
        with claim_run_folder(output):  # one study per folder at a time
            ray_storage = args.storage
            if args.resume:
                spec, ray_storage = resume_defaults(spec, output, args.storage)
            outcome = run_study(
                spec, output, address=args.address, ray_storage=ray_storage, resume=args.resume, num_cpus=args.num_cpus
            )
    except StudyError as err:
        raise InputError(str(err)) from None
    print(outcome.summary)
    return 0
