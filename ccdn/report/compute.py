"""What stood behind a run: epochs, training faces, training and evaluation seconds, the device.

Training seconds are the sum of ``epoch_seconds`` in ``runs/<run>/history.json`` (the optimisation
steps of every epoch; validation, start-up and checkpoints are not counted); evaluation seconds and
the devices come from the ``timing`` record of each ``metrics.json`` (``ccdn evaluate``) and the
``device`` of the history records (training). They are
measured wall-clock times: the one part of the report that changes when the runs are retrained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ccdn.report import ReportError, load_metrics, load_run_config


@dataclass(frozen=True)
class RunCompute:
    """The compute of one run (and of the evaluations a table reads from it)."""

    run: str
    epochs: int  # epochs trained (history records after the epoch-0 validation)
    train_faces: int | None  # faces per epoch (the prepared training split, capped by limit_train_images)
    train_seconds: float
    eval_seconds: float | None  # None when the metrics.json files carry no timing (older evaluations)
    device: str | None


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
    """Compute of ``run`` with the evaluation time of ``datasets`` (those a table reads)."""
    history = load_history(grid, run.name)
    trained = [r for r in history if int(r["epoch"]) >= 1]
    seconds = [load_metrics(grid, run.name, d).get("timing") or {} for d in datasets]
    eval_seconds = None if not seconds or any("seconds" not in s for s in seconds) else \
        float(sum(float(s["seconds"]) for s in seconds))
    devices = sorted({str(s["device"]) for s in seconds if s.get("device")}
                     | {str(r["device"]) for r in trained if r.get("device")})
    return RunCompute(run=run.name, epochs=len(trained),
                      train_faces=train_faces(grid, run, load_run_config(grid, run.name)),
                      train_seconds=float(sum(float(r.get("epoch_seconds", 0.0)) for r in trained)),
                      eval_seconds=eval_seconds, device=", ".join(devices) or None)


def format_seconds(seconds: float | None) -> str:
    """Seconds for people: '4.2 s', '3.1 min', '2.5 h'; '?' when unknown."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe(computes: list[RunCompute]) -> str:
    """One line for the runs of a row: epochs × faces, summed training and evaluation time, device."""
    if not computes:
        return ""
    epochs = sorted({c.epochs for c in computes})
    faces = sorted({c.train_faces for c in computes}, key=lambda f: -1 if f is None else f)
    face_text = "/".join("?" if f is None else str(f) for f in faces)
    training = sum(c.train_seconds for c in computes)
    evals = [c.eval_seconds for c in computes]
    evaluation = None if any(e is None for e in evals) else sum(evals)
    devices = sorted({c.device for c in computes if c.device})
    runs = f"{len(computes)} run" + ("s" if len(computes) > 1 else "")
    text = (f"{'/'.join(map(str, epochs))} epochs × {face_text} training faces; {runs}: training "
            f"{format_seconds(training)}, evaluation {format_seconds(evaluation)}")
    return text + (f" ({', '.join(devices)})" if devices else "")


@dataclass(frozen=True)
class TableCompute:
    """Compute summed over the distinct runs behind one table."""

    runs: int
    train_seconds: float
    eval_seconds: float | None
    devices: tuple[str, ...]


def total(computes: Iterable[RunCompute]) -> TableCompute:
    """Sum over distinct runs (a run feeding two rows or blocks is counted once)."""
    unique = {c.run: c for c in computes}
    evals = [c.eval_seconds for c in unique.values()]
    return TableCompute(runs=len(unique), train_seconds=sum(c.train_seconds for c in unique.values()),
                        eval_seconds=None if any(e is None for e in evals) else float(sum(evals)),
                        devices=tuple(sorted({c.device for c in unique.values() if c.device})))
