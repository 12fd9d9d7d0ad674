"""``ccdn prepare DATASET``: the command line of :mod:`ccdn.data.prepare` (the benchmarks) and
:mod:`ccdn.data.custom` (``ccdn prepare custom``: a folder of your own annotated faces).

Kept apart from both so that neither imports the other's caller (no import circle).
"""

from __future__ import annotations

import argparse
import types
from dataclasses import fields
from pathlib import Path

from ccdn.data.custom import add_own_data_arguments, run_custom
from ccdn.data.prepare import PrepareSettings, parse_overrides, prepare_dataset
from ccdn.data.schemes import DATASETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="crop a raw dataset into the per-split cache",
        description="Crop every face of data/raw/DATASET into data/prepared/DATASET/<split>.npz "
        "(DATASET custom: a folder of your own annotated faces; docs/data.md, 'Your own data').",
    )
    parser.add_argument("dataset", choices=[*sorted(DATASETS), "custom"], help="dataset name, or custom")
    parser.add_argument("--raw", type=Path, default=None, help="raw root (default data/raw/DATASET)")
    parser.add_argument("--out", type=Path, default=None, help="cache directory (default data/prepared/DATASET)")
    parser.add_argument("--force", action="store_true", help="rebuild a cache made from other inputs/settings")
    add_own_data_arguments(parser)
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="key=value",
        help=f"prepare settings ({', '.join(f.name for f in fields(PrepareSettings))})",
    )
    parser.set_defaults(func=run)
    parser.parse_known_args = types.MethodType(_parse_known_intermixed, parser)


def _parse_known_intermixed(self: argparse.ArgumentParser, args=None, namespace=None):
    """Let ``key=value`` settings follow ``--raw``/``--out``: plain argparse ends the positionals at
    the first option after DATASET (bpo-15112), so this sub-parser parses intermixed."""
    if getattr(self, "_in_intermixed", False):
        return argparse.ArgumentParser.parse_known_args(self, args, namespace)
    self._in_intermixed = True
    try:
        return self.parse_known_intermixed_args(args, namespace)
    finally:
        self._in_intermixed = False


def run(args: argparse.Namespace) -> int:
    if run_custom(args, PrepareSettings.from_mapping(parse_overrides(args.settings))):
        return 0
    raw = args.raw or Path("data/raw") / args.dataset
    out = args.out or Path("data/prepared") / args.dataset
    settings = PrepareSettings.from_mapping(parse_overrides(args.settings))
    paths = prepare_dataset(args.dataset, raw, out, settings, force=args.force, partial=args.partial)
    for split, path in sorted(paths.items()):
        print(f"{split}: {path}")
    return 0
