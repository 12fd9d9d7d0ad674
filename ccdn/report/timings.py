"""Measured compute: training and evaluation seconds per run, summed per table and figure, with the device.

Wall-clock seconds differ on every rerun and are a property of the machine, not of the results, so they
live in exactly two files, written by every pipeline run (``ccdn report compute``) and git-ignored (no DVC
outputs either): ``results/compute.md`` (for people) and ``results/metrics/compute.json`` (data). Every
committed file of ``results/`` shows only deterministic compute (``ccdn.report.compute``) and is
byte-identical when the pipeline is rerun, so two runs leave ``git status`` clean. Training seconds are
the sum of ``epoch_seconds`` in ``runs/<run>/history.json`` (the optimisation steps of every epoch;
validation, start-up and checkpoints are not counted); evaluation seconds are ``timing.seconds`` of each
``metrics.json`` (``ccdn evaluate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdn.io import write_text
from ccdn.report import SYNTHETIC_MARK, is_synthetic, load_metrics
from ccdn.report.compute import RunCompute, compute_paths, distinct_runs, load_history, run_compute
from ccdn.report.readme import figure_computes
from ccdn.report.tables import TABLE_SPECS, build_table


def train_seconds(grid: Any, run_name: str) -> float:
    """Sum of ``epoch_seconds`` over the trained epochs of ``history.json``."""
    return float(sum(float(r.get("epoch_seconds", 0.0)) for r in load_history(grid, run_name) if int(r["epoch"]) >= 1))


def eval_seconds(grid: Any, run_name: str, dataset: str) -> float | None:
    """``timing.seconds`` of the run's ``metrics.json`` on ``dataset``; None for an evaluation without timing."""
    timing = load_metrics(grid, run_name, dataset).get("timing") or {}
    return float(timing["seconds"]) if "seconds" in timing else None


@dataclass(frozen=True)
class Seconds:
    """Measured seconds summed over distinct runs (training) and distinct (run, dataset) pairs (evaluation)."""

    runs: int
    training: float
    evaluation: float | None  # None when an evaluation has no timing
    devices: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "train_seconds": round(self.training, 3),
                "eval_seconds": None if self.evaluation is None else round(self.evaluation, 3),
                "devices": list(self.devices)}


def measure(grid: Any, computes: Iterable[RunCompute]) -> Seconds:
    """The seconds behind a table or figure, each run trained once and each evaluation counted once."""
    runs = distinct_runs(computes)
    evals = [eval_seconds(grid, c.run, d) for c in runs for d in c.datasets]
    return Seconds(runs=len(runs), training=sum(train_seconds(grid, c.run) for c in runs),
                   evaluation=None if None in evals else float(sum(evals)),  # type: ignore[arg-type]
                   devices=tuple(sorted({d for c in runs for d in c.devices})))


def table_computes(grid: Any) -> dict[str, list[RunCompute]]:
    """'Table N' -> the runs (and datasets) behind every table the grid feeds, as the table itself counts them."""
    return {TABLE_SPECS[n].title.split(":")[0]: build_table(grid, n).computes() for n in TABLE_SPECS
            if any(f"table{n}" in e.tables for e in grid.experiments)}


def build_compute(grid: Any) -> dict[str, Any]:
    """The content of ``compute.json``: per table, per figure, all tables, and per run."""
    tables = table_computes(grid)
    runs = {}
    for run in grid.runs:
        datasets = tuple(run.experiment.evaluate)
        runs[run.name] = {"train_seconds": round(train_seconds(grid, run.name), 3),
                          "eval_seconds": {d: _rounded(eval_seconds(grid, run.name, d)) for d in datasets},
                          "devices": list(run_compute(grid, run, datasets).devices)}
    return {
        "measured": "wall-clock seconds of this machine; they change between reruns, so git ignores this file",
        "synthetic": is_synthetic(grid),
        "tables": {name: measure(grid, computes).to_dict() for name, computes in tables.items()},
        "all_tables": measure(grid, [c for computes in tables.values() for c in computes]).to_dict(),
        "figures": {name: measure(grid, computes).to_dict() for name, computes in figure_computes(grid).items()},
        "runs": runs,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_seconds(seconds: float | None) -> str:
    """Seconds for people: '4.2 s', '3.1 min', '2.5 h'; '?' when unknown."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _group_rows(groups: dict[str, dict]) -> list[str]:
    return [f"| {name} | {g['runs']} | {format_seconds(g['train_seconds'])} | {format_seconds(g['eval_seconds'])} | "
            f"{', '.join(g['devices']) or '?'} |" for name, g in groups.items()]


def render_compute(data: dict[str, Any], command: str) -> str:
    """``compute.md``: what was measured, then per table, per figure and per run."""
    out = ["# Compute: measured seconds behind the results", ""]
    if data["synthetic"]:
        out += [f"> **{SYNTHETIC_MARK.capitalize()}.** The seconds are those of the embedded synthetic default.", ""]
    out += [f"Generated by `{command}`; do not edit by hand.", "",
            "This file and `metrics/compute.json` are the only outputs of the pipeline that change between reruns: "
            "they measure wall-clock time on this machine, they do not report results, so they are git-ignored "
            "(not committed, no DVC outputs). Every other file of the results folder shows only deterministic "
            "compute (epochs, training faces, images seen, optimiser steps, device) and is byte-identical when the "
            "pipeline is rerun.", "",
            "Training = the sum of `epoch_seconds` in `history.json` (optimisation steps only; validation, start-up "
            "and checkpoints are not counted). Evaluation = the wall clock of `ccdn evaluate` (`timing` in "
            "`metrics.json`). Sums over distinct runs; a run's evaluations are those its table or figure reads.", "",
            "## Per table", "", "| Table | Runs | Training | Evaluation | Device |", "|---|---:|---:|---:|---|"]
    out += _group_rows(data["tables"]) + _group_rows({"All tables": data["all_tables"]})
    if data["figures"]:
        out += ["", "## Per figure", "", "| Figure | Runs | Training | Evaluation | Device |", "|---|---:|---:|---:|---|"]
        out += _group_rows(data["figures"])
    out += ["", "## Per run", "", "| Run | Training | Evaluation | Device |", "|---|---:|---|---|"]
    for name, run in data["runs"].items():
        evaluations = ", ".join(f"{d} {format_seconds(s)}" for d, s in run["eval_seconds"].items()) or "–"
        out.append(f"| `{name}` | {format_seconds(run['train_seconds'])} | {evaluations} | "
                   f"{', '.join(run['devices']) or '?'} |")
    return "\n".join(out) + "\n"


def write_compute(grid: Any, out_path: Path | str | None = None, data_path: Path | str | None = None,
                  config_path: str = "config/config.yaml") -> list[Path]:
    """Write ``compute.md`` and ``compute.json`` (defaults: ``compute_paths(grid.results_dir)``), atomically."""
    default_md, default_json = compute_paths(grid.results_dir)
    out_path = Path(out_path) if out_path is not None else default_md
    data_path = Path(data_path) if data_path is not None else default_json
    data = build_compute(grid)
    command = f"ccdn report compute --config {config_path} --out {out_path} --data {data_path}"
    return [write_text(out_path, render_compute(data, command)),
            write_text(data_path, json.dumps(data, indent=2, sort_keys=False) + "\n")]
