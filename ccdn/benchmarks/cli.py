"""``ccdn benchmark {models,data,train,cff,gpu}``: print the tables of docs/performance.md (``cff``: docs/method.md).

Each benchmark lives in ``ccdn/benchmarks/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; benchmarks print tables, they never assert timings (tests don't time things).
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "models": "ccdn.benchmarks.models",
    "data": "ccdn.benchmarks.data",
    "train": "ccdn.benchmarks.train",
    "cff": "ccdn.benchmarks.cff_norm",
    "gpu": "ccdn.benchmarks.gpu",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("benchmark", help="print speed/size benchmark tables")
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, module_name in BENCHMARKS.items():
        p = sub.add_parser(name, help=f"{name} benchmark")
        p.set_defaults(func=_runner(module_name))
        p.set_defaults(_benchmark_module=module_name)
        importlib.import_module(module_name).add_arguments(p)


def _runner(module_name: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module_name).run(args)

    return run
