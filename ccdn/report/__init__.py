"""The report step: the paper's tables and figures next to ours, built only from files on disk.

Everything here reads per-run outputs of ``ccdn evaluate`` through the experiment grid
(``ccdn.grid``) and never queries MLflow, so a table can always be rebuilt from ``runs/``.
This module holds what every report module shares: the error type, the synthetic-data mark,
and the readers of a run's evaluation files (each failing with the file and the
Snakemake target that makes it).

Modules: ``reference`` (the paper's numbers), ``tables`` (Tables 2-7), ``figures`` (Figs. 5, 7, 8),
``summary`` (flat metrics JSON for ``dvc metrics show``), ``readme`` (results/README.md), ``compute``
(deterministic compute: epochs, faces, steps), ``timings`` (measured seconds: results/compute.md, the one
output that changes between reruns), ``cli``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ccdn.errors import CCDNError

SYNTHETIC_MARK = "synthetic data — not a reproduction"

# Metric names of config/paper_reference.yaml -> keys of metrics.json (docs/architecture.md Contract 6).
METRIC_KEYS: dict[str, str] = {"nme": "nme", "failure_rate": "fr@0.1", "auc": "auc@0.1"}

NORMALISER_NAMES: dict[str, str] = {
    "inter_pupil": "inter-pupil distance",
    "inter_ocular": "inter-ocular distance (outer eye corners)",
    "face_size": "face size (sqrt(w*h) of the dataset's box)",
}


class ReportError(CCDNError):
    """Bad or missing report input; the message names the file and how to make or fix it."""


def is_synthetic(grid: Any, metrics: Iterable[dict] = ()) -> bool:
    """Synthetic if the grid says so or any run's metrics.json does (the data decides, not only the config)."""
    return bool(getattr(grid, "synthetic", False)) or any(bool(m.get("synthetic")) for m in metrics)


def missing_file_error(path: Path, what: str, run_name: str) -> ReportError:
    """The error for a run output that is not there: which file, and the Snakemake target that makes it."""
    return ReportError(
        f"{path}: {what} of run '{run_name}' is missing. Make it with `snakemake --cores all {path}` "
        "(or run the whole grid with `snakemake --cores all`)."
    )


def load_metrics(grid: Any, run_name: str, dataset: str) -> dict:
    """Read one run's ``metrics.json`` for ``dataset``; missing or malformed files raise ``ReportError``."""
    path = Path(grid.metrics_path(run_name, dataset))
    if not path.is_file():
        raise missing_file_error(path, f"metrics.json on {dataset}", run_name)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); delete it and rerun "
                          f"`snakemake --cores all {path}`") from exc
    if not isinstance(metrics, dict) or not isinstance(metrics.get("subsets"), dict):
        raise ReportError(f"{path}: has no 'subsets' mapping (docs/architecture.md Contract 6); "
                          f"rerun `snakemake --cores all {path}`")
    metrics["_path"] = str(path)
    return metrics


def metric_value(metrics: dict, subset: str, metric: str, normaliser: str) -> float:
    """One number (percent) from a metrics.json: ``subsets[subset][metric key][normaliser]``."""
    path = metrics.get("_path", "metrics.json")
    key = METRIC_KEYS[metric]
    subsets = metrics["subsets"]
    if subset not in subsets:
        raise ReportError(f"{path}: no subset '{subset}' (has {sorted(subsets)}); was it evaluated on the right "
                          "prepared split? Rerun `ccdn evaluate` for this run.")
    values = subsets[subset].get(key)
    if not isinstance(values, dict) or normaliser not in values:
        raise ReportError(f"{path}: no value at subsets.{subset}.{key}.{normaliser}; rerun `ccdn evaluate` "
                          "for this run (Contract 6 lists the keys).")
    return float(values[normaliser])


def load_npz(path: Path, what: str, run_name: str, required: Iterable[str]) -> dict[str, np.ndarray]:
    """Load a run's ``.npz`` output fully into memory, checking the keys the report needs."""
    path = Path(path)
    if not path.is_file():
        raise missing_file_error(path, what, run_name)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as .npz ({exc}); rerun `snakemake --cores all {path}`") from exc
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ReportError(f"{path}: lacks {missing} (has {sorted(arrays)}); it was written by an older "
                          f"`ccdn evaluate`; delete it and rerun `snakemake --cores all {path}`")
    return arrays


def load_run_config(grid: Any, run_name: str) -> dict:
    """The resolved training config of a run (``runs/<run>/config.yaml``, Contract 5)."""
    path = Path(grid.run_dir(run_name)) / "config.yaml"
    if not path.is_file():
        model = Path(grid.run_dir(run_name)) / "model.pt"
        raise ReportError(f"{path}: the resolved config of run '{run_name}' is missing; train the run with "
                          f"`snakemake --cores all {model}`")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc}); retrain the run") from exc
    if not isinstance(config, dict):
        raise ReportError(f"{path}: expected a mapping, got {type(config).__name__}; retrain the run")
    return config
