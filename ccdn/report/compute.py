"""What stood behind a run, deterministically: epochs, training faces, images seen, optimiser steps, device.

Two kinds of numbers, kept apart so that a rerun of the pipeline leaves every committed file of
``results/`` byte-identical (``git status`` clean):

- **deterministic** (fixed by the config and the data): epochs (``runs/<run>/history.json`` records after
  the epoch-0 validation), training faces per epoch (the prepared training split, capped by
  ``train.limit_train_images``), images seen (epochs × faces), optimiser steps (``global_step`` of
  ``runs/<run>/DONE``) and the device kind (``device`` of the history records and of each
  ``metrics.json`` ``timing``). Tables, recipe notes and the README summary show only these (``describe``).
- **measured** (wall-clock, different on every rerun): training and evaluation seconds. This module
  never reads them; ``ccdn.report.timings`` does, and writes them to ``results/compute.md`` and
  ``results/metrics/compute.json`` only (``compute_paths``), two git-ignored files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ccdn.report import ReportError, load_metrics, load_run_config

COMPUTE_REPORT = "compute.md"  # in the results folder, git-ignored; results/README.md names it, never links it
COMPUTE_DATA = "compute.json"  # in <results>/metrics


def compute_paths(results_dir: Path | str) -> list[Path]:
    """The only two results files that hold measured seconds: ``<results>/compute.md`` and
    ``<results>/metrics/compute.json`` (they change on every rerun, so git ignores them; everything else is
    byte-stable and committed)."""
    return [Path(results_dir) / COMPUTE_REPORT, Path(results_dir) / "metrics" / COMPUTE_DATA]


@dataclass(frozen=True)
class RunCompute:
    """The compute of one run (and of the evaluations a table reads from it)."""

    run: str
    datasets: tuple[str, ...]  # the evaluations read (a table's or figure's datasets of this run)
    epochs: int  # epochs trained (history records after the epoch-0 validation)
    train_faces: int | None  # faces per epoch (the prepared training split, capped by limit_train_images)
    steps: int | None  # optimiser steps (DONE's global_step); None when the run has no DONE record
    devices: tuple[str, ...]  # device kinds of the training and of the evaluations read

    @property
    def images_seen(self) -> int | None:
        """Epochs × training faces."""
        return None if self.train_faces is None else self.epochs * self.train_faces


def load_history(grid: Any, run_name: str) -> list[dict]:
    """The per-epoch records of ``runs/<run>/history.json`` (Contract 5)."""
    path = Path(grid.run_dir(run_name)) / "history.json"
    if not path.is_file():
        model = Path(grid.run_dir(run_name)) / "model.pt"
        raise ReportError(f"{path}: the training history of run '{run_name}' is missing; training writes it: "
                          f"delete {model} and run `snakemake --cores all {model}`")
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); retrain the run") from exc
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r for r in history):
        raise ReportError(f"{path}: expected a list of per-epoch records with an 'epoch' key (Contract 5); "
                          "retrain the run")
    return history


def optimiser_steps(grid: Any, run_name: str) -> int | None:
    """``global_step`` of ``runs/<run>/DONE`` (written when training finishes); None without that record."""
    path = Path(grid.run_dir(run_name)) / "DONE"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError) as exc:
        model = Path(grid.run_dir(run_name)) / "model.pt"
        raise ReportError(f"{path}: not valid JSON ({exc}); delete it and {model}, then run "
                          f"`snakemake --cores all {model}`") from exc
    step = done.get("global_step") if isinstance(done, dict) else None
    return int(step) if isinstance(step, int) else None


def train_faces(grid: Any, run: Any, config: dict) -> int | None:
    """Faces per training epoch: the prepared training split, capped by ``train.limit_train_images``."""
    prepared = getattr(grid, "prepared_dir", None)
    if not callable(prepared):
        return None
    path = Path(prepared(run.experiment.train)) / f"{(config.get('data') or {}).get('train_split', 'train')}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        count = int(data["face_size"].shape[0]) if "face_size" in data.files else None
    limit = (config.get("train") or {}).get("limit_train_images")
    return min(count, int(limit)) if count is not None and limit else count


def run_compute(grid: Any, run: Any, datasets: Iterable[str]) -> RunCompute:
    """The deterministic compute of ``run`` and of its evaluations on ``datasets`` (those a table reads)."""
    datasets = tuple(datasets)
    trained = [r for r in load_history(grid, run.name) if int(r["epoch"]) >= 1]
    timings = [load_metrics(grid, run.name, d).get("timing") or {} for d in datasets]
    devices = sorted({str(t["device"]) for t in timings if t.get("device")}
                     | {str(r["device"]) for r in trained if r.get("device")})
    return RunCompute(run=run.name, datasets=datasets, epochs=len(trained),
                      train_faces=train_faces(grid, run, load_run_config(grid, run.name)),
                      steps=optimiser_steps(grid, run.name), devices=tuple(devices))


def _variants(values: Iterable[int | None]) -> str:
    """'2', '2/3' (runs differ), '?' for an unknown value."""
    return "/".join("?" if v is None else f"{v:,}" for v in sorted(set(values), key=lambda v: -1 if v is None else v))


def describe(computes: list[RunCompute]) -> str:
    """One deterministic line for the runs of a row: per run epochs × faces (images seen) and optimiser
    steps, then the number of runs and the device kinds. Never seconds (they change between reruns)."""
    if not computes:
        return ""
    images = _variants(c.images_seen for c in computes)
    runs = f"{len(computes)} run" + ("s" if len(computes) > 1 else "")
    devices = sorted({d for c in computes for d in c.devices})
    text = (f"{_variants(c.epochs for c in computes)} epochs × {_variants(c.train_faces for c in computes)} "
            f"training faces = {images} images seen, {_variants(c.steps for c in computes)} optimiser steps per run; "
            f"{runs}")
    return text + (f" ({', '.join(devices)})" if devices else "")


@dataclass(frozen=True)
class TableCompute:
    """Deterministic compute summed over the distinct runs behind one table or figure."""

    runs: int
    images_seen: int | None  # None when a run's training faces are unknown
    steps: int | None  # None when a run has no DONE record
    devices: tuple[str, ...]


def distinct_runs(computes: Iterable[RunCompute]) -> list[RunCompute]:
    """One entry per run (a run feeding two rows or blocks counts once), with the union of its datasets."""
    merged: dict[str, RunCompute] = {}
    for c in computes:
        seen = merged.get(c.run)
        if seen is None:
            merged[c.run] = c
        else:
            merged[c.run] = RunCompute(c.run, tuple(dict.fromkeys(seen.datasets + c.datasets)), seen.epochs,
                                       seen.train_faces, seen.steps, tuple(sorted(set(seen.devices + c.devices))))
    return list(merged.values())


def total(computes: Iterable[RunCompute]) -> TableCompute:
    """Runs, images seen and optimiser steps summed over distinct runs, and their device kinds."""
    runs = distinct_runs(computes)
    images = [c.images_seen for c in runs]
    steps = [c.steps for c in runs]
    return TableCompute(runs=len(runs), images_seen=None if None in images else sum(images),  # type: ignore[arg-type]
                        steps=None if None in steps else sum(steps),  # type: ignore[arg-type]
                        devices=tuple(sorted({d for c in runs for d in c.devices})))


def count_text(value: int | None) -> str:
    """'1,024'; '?' when unknown."""
    return "?" if value is None else f"{value:,}"
