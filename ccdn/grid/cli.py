"""``ccdn grid {check,resolve,run-config}``: check a grid config and list its runs, write it with
every default filled in (the pipeline records the grid it ran this way), or write one run's (or, with
``--all``, every run's) fully resolved training config: the pipeline's one hand-off from the grid to
``ccdn train --config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ccdn.grid.load import grid_from_mapping, load_grid, run_config
from ccdn.io import write_yaml
from ccdn.grid.model import GridError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "grid", help="check a grid config and list its runs, or write it resolved",
        description="Check or resolve an experiment grid config (config/*.yaml).")
    _add_actions(parser)
    parser.set_defaults(func=run)
    return parser


def _add_actions(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a config and list its runs")
    check.add_argument("config", type=Path)
    resolve = sub.add_parser("resolve", help="write the config with every default filled in")
    resolve.add_argument("config", type=Path, nargs="?", help="a grid YAML file (or use --json)")
    resolve.add_argument("--json", help="the config as a JSON string (how Snakemake passes its merged config)")
    resolve.add_argument("--out", type=Path, required=True)
    run_config = sub.add_parser("run-config", help="write one run's fully resolved training config (for ccdn train --config)")
    run_config.add_argument("config", type=Path, help="a grid YAML file (e.g. the resolved results/config.yaml)")
    which = run_config.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="the run name, {experiment id}-s{seed}")
    which.add_argument("--all", action="store_true",
                       help="every run's config into its run directory (one process for a whole grid)")
    run_config.add_argument("--out", type=Path, default=None, help="default: the run directory's run_config.yaml")


def run(args: argparse.Namespace) -> int:
    """Raises :class:`GridError` on a bad config (the CLI prints it as one line, exit 2)."""
    if args.action == "check":
        grid = load_grid(args.config)
        for run_ in grid.runs:
            print(run_.name, run_.experiment.model, run_.experiment.train, ",".join(run_.experiment.evaluate))
        print(f"{len(grid.runs)} runs, {len(grid.evaluations)} evaluations, tables {grid.tables}, "
              f"figures {grid.figures}", file=sys.stderr)
        return 0
    if args.action == "run-config":
        grid = load_grid(args.config)
        if args.all:
            if args.out is not None:
                raise GridError("ccdn grid run-config --all writes each run's run_config.yaml in its run directory; "
                                "drop --out (or name one run with --run)")
            for run_ in grid.runs:
                write_yaml(grid.run_config_path(run_.name), run_config(grid, run_.name))
            return 0
        if args.run not in {run_.name for run_ in grid.runs}:
            raise GridError(f"{args.config}: no run {args.run!r}; runs: {', '.join(r.name for r in grid.runs)}")
        write_yaml(args.out or grid.run_config_path(args.run), run_config(grid, args.run))
        return 0
    if args.json is not None:
        grid = grid_from_mapping(json.loads(args.json), source="--json")
    elif args.config is not None:
        grid = load_grid(args.config)
    else:
        raise GridError("ccdn grid resolve needs a config file or --json")
    write_yaml(args.out, grid.to_dict())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``ccdn grid`` called from Python: the same arguments, errors printed as one line (exit 2)."""
    parser = argparse.ArgumentParser(prog="ccdn grid", description="Check or resolve a grid config.")
    _add_actions(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GridError as exc:
        print(f"ccdn grid: error: {exc}", file=sys.stderr)
        return 2
