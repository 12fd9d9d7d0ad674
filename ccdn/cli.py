"""The ``ccdn`` command line: collects one sub-command per pipeline step.

Each step's module owns its own ``add_parser(subparsers)`` and ``run(args) -> int``; this file only
wires them together, so a newcomer finds a command's code by the module named in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ccdn.errors import CCDNError, one_line

COMMANDS: dict[str, str] = {
    "synth": "ccdn.data.synth",
    "fetch": "ccdn.data.fetch",
    "prepare": "ccdn.data.prepare_cli",
    "train": "ccdn.train",
    "evaluate": "ccdn.evaluate",
    "track": "ccdn.track_import",
    "predict": "ccdn.predict",
    "report": "ccdn.report.cli",
    "benchmark": "ccdn.benchmarks.cli",
    "grid": "ccdn.grid.cli",
}
SUMMARIES: dict[str, str] = {
    "synth": "write synthetic faces in a dataset's real file format",
    "fetch": "download and verify a dataset (or say what to place where)",
    "prepare": "crop a raw dataset into the per-split cache",
    "train": "train a model from a config (resumes by itself)",
    "evaluate": "evaluate a run: metrics.json, predictions.npz, activation maps",
    "track": "log finished run directories into MLflow (runs trained with tracking.defer)",
    "predict": "landmarks of a trained run on your own images (.pts, JSON, overlay)",
    "report": "paper-vs-reproduced tables, CED figures, results/README.md",
    "benchmark": "print speed/size benchmark tables",
    "grid": "check a grid config and list its runs, or write it resolved",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, importing only the chosen command's module (start-up stays fast)."""
    parser = argparse.ArgumentParser(
        prog="ccdn",
        description="CCDN reproducibility harness. Commands: "
        + "; ".join(f"{name}: {text}" for name, text in SUMMARIES.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module_name).add_parser(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CCDNError as exc:  # bad input (data, config, checkpoint): one clear line, no traceback
        print(f"ccdn {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
