"""`contrastlab data list|prepare`: what datasets exist and making them available."""

from __future__ import annotations

import argparse

from contrastlab.config import DATASET_NAMES, DataConfig

HELP = "list the datasets, or prepare one (check files, download if allowed, generate synthetic data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "prepare"])
    parser.add_argument("name", nargs="?", choices=DATASET_NAMES, help="dataset to prepare")
    parser.add_argument("--root", help="folder with the dataset files")
    parser.add_argument("--download", action="store_true", help="allow torchvision to download")


def run(args: argparse.Namespace) -> int:
    from contrastlab.data import describe_datasets, prepare_dataset

    if args.action == "list":
        print(describe_datasets())
        return 0
    if not args.name:
        from contrastlab.errors import InputError

        raise InputError("data prepare: NAME: expected a dataset name (see `contrastlab data list`)")
    cfg = DataConfig(name=args.name, root=args.root, download=args.download)
    print(prepare_dataset(cfg))
    return 0
