"""Headline numbers of every run as one flat JSON file, for ``dvc metrics show`` / ``dvc metrics diff``.

Keys are ``<run>/<dataset>/<subset>/<metric>_<normaliser>`` with metric ``nme``, ``failure_rate``
(FR@0.1) or ``auc`` (AUC@0.1), all in percent, restricted to the normalisers the paper reports for
that dataset; ``synthetic`` says whether any of it came from synthetic data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ccdn.report import METRIC_KEYS, atomic_write_text, is_synthetic, load_metrics

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
    return atomic_write_text(Path(out_path), json.dumps(build_summary(grid), indent=1) + "\n")
