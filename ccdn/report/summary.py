"""Numbers for DVC: the full per-run detail in one file, and the headline numbers in small files.

``summary.json`` (full detail, for scripts and ``dvc metrics diff`` on demand): keys
``<run>/<dataset>/<subset>/<metric>_<normaliser>`` with metric ``nme``, ``failure_rate`` (FR@0.1)
or ``auc`` (AUC@0.1), all in percent, restricted to the normalisers the paper reports for that
dataset; ``synthetic`` says whether any of it came from synthetic data.

``headline/<table>_<dataset>_<subset>_<metric>_<normaliser>.json`` (what ``dvc metrics show`` reads):
one file per table column, holding our main row (CCDN; γ = (0.025, 0.01, 0.05) in Table 6; P = 4 in
Table 7) as ``ours`` (mean over seeds), the paper's ``paper`` and ``x_mean_shape``; a cell that a
later table repeats (Table 6's column and Table 7's P = 4 row are the main CCDN runs of Tables 2, 4,
5) is written once. DVC prints one line per file and one column per key, so the view stays three
numbers wide whatever the grid (17 columns × 3 = 51 numbers for the paper's grid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccdn.io import write_text
from ccdn.report import METRIC_KEYS, is_synthetic, load_metrics
from ccdn.report.tables import DEFAULT_EXCITATIONS, DEFAULT_GAMMAS, TABLE_SPECS, build_table

# The normalisers each dataset is reported with in the paper (Section 4.1).
DATASET_NORMALISERS: dict[str, tuple[str, ...]] = {
    "300w": ("inter_pupil", "inter_ocular"),
    "cofw68": ("inter_pupil",),
    "aflw": ("face_size",),
    "wflw": ("inter_ocular",),
}


def build_summary(grid: Any) -> dict[str, float | bool]:
    """Flat mapping of every run × evaluated dataset × subset × metric × paper normaliser."""
    summary: dict[str, float | bool] = {}
    seen = []
    for run in grid.runs:
        for dataset in run.experiment.evaluate:
            metrics = load_metrics(grid, run.name, dataset)
            seen.append(metrics)
            normalisers = DATASET_NORMALISERS.get(dataset)
            for subset, values in metrics["subsets"].items():
                for metric, key in METRIC_KEYS.items():
                    for normaliser, value in (values.get(key) or {}).items():
                        if normalisers is None or normaliser in normalisers:
                            summary[f"{run.name}/{dataset}/{subset}/{metric}_{normaliser}"] = round(float(value), 4)
    return {"synthetic": is_synthetic(grid, seen), **summary}


def write_summary(grid: Any, out_path: Path | str) -> Path:
    """Write ``build_summary`` to ``out_path`` (atomically)."""
    return write_text(Path(out_path), json.dumps(build_summary(grid), indent=1) + "\n")


MAIN_ROW_KEYS = {"method": ("method", "ccdn"), "gammas": ("gammas", DEFAULT_GAMMAS),
                 "excitations": ("P", DEFAULT_EXCITATIONS)}


def build_headline(grid: Any) -> dict[str, dict[str, float]]:
    """File stem -> {ours, paper, x_mean_shape} for every table column where our main row has a number."""
    headline: dict[str, dict[str, float]] = {}
    seen: set[tuple] = set()  # a cell repeated in a later table (same runs, column and paper value) is kept once
    for number, spec in TABLE_SPECS.items():
        if not any(f"table{number}" in e.tables for e in grid.experiments):
            continue
        result = build_table(grid, number)
        for block, rows in result.blocks:
            main = next((row for row in rows if row.key == MAIN_ROW_KEYS[spec.row_kind] and row.reproduced), None)
            for column in block.columns:
                cell = None if main is None else main.cells.get(column)
                if cell is None or not cell.values:
                    continue
                key = (column.dataset, column.subset, column.metric, column.normaliser, tuple(cell.runs), cell.paper)
                if key in seen:
                    continue
                seen.add(key)
                numbers = {"ours": round(cell.mean, 4)}
                if cell.paper is not None:
                    numbers["paper"] = round(cell.paper, 4)
                if cell.x_mean_shape is not None:
                    numbers["x_mean_shape"] = round(cell.x_mean_shape, 4)
                stem = f"table{number}_{column.dataset}_{column.subset}_{column.metric}_{column.normaliser}"
                headline[stem] = numbers
    return headline


def write_headline(grid: Any, out_dir: Path | str) -> list[Path]:
    """Write one JSON per headline column into ``out_dir`` and remove stale ones; returns the paths."""
    out_dir = Path(out_dir)
    headline = build_headline(grid)
    paths = [write_text(out_dir / f"{stem}.json", json.dumps(numbers, indent=1) + "\n")
             for stem, numbers in headline.items()]
    for old in out_dir.glob("*.json"):
        if old not in paths:
            old.unlink()
    return paths
