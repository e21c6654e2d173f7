"""Subcommands of the `contrastlab` command line."""

from __future__ import annotations

import argparse


def add_set_option(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    """`--set KEY=VALUE` (repeatable, collected in `args.overrides`): every command's way to
    override a config field; `what` says which config, `example` shows one."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}, e.g. --set {example} (repeatable)",
    )
