"""The `contrastlab` command. Each subcommand lives in `contrastlab.commands.<name>`,
which provides `HELP`, `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from contrastlab.config import ConfigError

COMMANDS = ("train", "eval", "data", "tune", "ablate", "report", "suppression")


class InputError(ValueError):
    """Bad user input found by a command (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastlab",
        description="Pretrain, tune and ablate contrastive self-supervised methods on Ray.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"contrastlab.commands.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, InputError) as err:
        print(f"contrastlab: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"contrastlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("contrastlab: interrupted; finished work is kept on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
