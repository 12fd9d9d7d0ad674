"""The ``ccdn`` command line: collects one sub-command per pipeline step.

Each step's module owns its own ``add_parser(subparsers)`` and ``run(args) -> int``; this file only
wires them together, so a newcomer finds a command's code by the module named in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "synth": "ccdn.data.synth",
    "fetch": "ccdn.data.fetch",
    "prepare": "ccdn.data.prepare",
    "train": "ccdn.train",
    "evaluate": "ccdn.evaluate",
    "report": "ccdn.report.cli",
    "benchmark": "ccdn.benchmark",
}


class CCDNError(Exception):
    """An error with a message meant for the user (printed without a traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccdn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors: one clear line, no traceback
        if _is_user_error(exc):
            print(f"ccdn {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _is_user_error(exc: Exception) -> bool:
    """Errors from bad input (data, config) are reported plainly; bugs keep their traceback."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"CCDNError", "DataFormatError", "ConfigError", "FetchError", "NonFiniteLossError"})


if __name__ == "__main__":
    sys.exit(main())
