"""The `contrastlab` command. Each subcommand lives in `contrastlab.commands.<name>`,
which provides `HELP`, `add_arguments(parser)` and `run(args) -> int`.

Exit codes: 0 done, 1 a failed run or a bug (with its traceback), 2 a user error (one
line on stderr, see `contrastlab.errors`), 130/143 interrupted by SIGINT/SIGTERM (15 for
SIGTERM once Ray is connected: Ray's own handler exits with the signal's number). Either
way the command's `finally` blocks run and the processes it started are stopped.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from typing import NoReturn

from contrastlab.errors import InputError, user_message
from contrastlab.raytrain.ray_logs import VERBOSE_ENV
from contrastlab.shutdown import Terminated, handle_termination, stop_children

COMMANDS = ("train", "eval", "data", "tune", "ablate", "report", "suppression")

__all__ = ["COMMANDS", "InputError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastlab",
        description="Pretrain, tune and ablate contrastive self-supervised methods on Ray.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of every error, and contrastlab's debug log lines"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own output as Ray prints it (its workers' lines, Tune's tables); by default "
        "tune and ablate write it to OUTPUT/logs/ray.log and show a table of their runs",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"contrastlab.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen command; user errors become one line and exit code 2."""
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("contrastlab: interrupted; finished work is kept on disk", file=sys.stderr)
        return 130
    except Terminated as err:
        print(f"contrastlab: {err}; finished work is kept on disk", file=sys.stderr)
        return 128 + err.signum
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs right here
        message = user_message(err)
        if message is None or args.debug:
            traceback.print_exc()
        if message is None:
            return 1
        print(f"contrastlab: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.verbose:  # read where Ray starts and by the studies' consoles (contrastlab.raytrain.ray_logs)
        os.environ[VERBOSE_ENV] = "1"
    if args.debug and not args.quiet:  # e.g. the timing of short steps (`contrastlab.progress`)
        logging.getLogger("contrastlab").setLevel(logging.DEBUG)
    with handle_termination():
        try:
            return run_command(args)
        finally:
            stop_children()


def exit_process(code: int) -> NoReturn:
    """End the process with `code`, after `main` has run every cleanup step.

    Once Ray has been imported, the interpreter's own teardown is skipped: destroying Ray's
    core worker object at exit is not safe (Ray ends its own worker processes the same way),
    and after an interrupted study it could crash the driver with SIGSEGV and replace the
    exit code. Logs and the standard streams are flushed first; files the commands wrote
    are closed by their own `finally` blocks.
    """
    if "ray" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def console_main() -> NoReturn:
    """The `contrastlab` console script and `python -m contrastlab.cli`."""
    exit_process(main())


if __name__ == "__main__":
    console_main()
