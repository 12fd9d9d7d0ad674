"""Per-face values of one run on one test subset, read from its ``predictions.npz`` (Contract 6).

Tables bootstrap over these and compare methods face by face; CED figures plot them. Membership of a
subset comes from ``subset_names`` / ``subset_masks`` stored next to the errors, else from the
prepared test split matched by ``face_ids``; ``full`` is every face (Contract 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ccdn.report import ReportError, load_npz

FAILURE_THRESHOLD = 0.1  # FR@0.1: a face fails when its error is strictly above 10 % (ccdn.metrics.failure_rate)


def subset_errors(arrays: dict[str, np.ndarray], path: Path, subset: str, normaliser: str,
                  prepared_root: Path | None = None) -> np.ndarray:
    """Per-image errors (percent) of one subset from a loaded ``predictions.npz``."""
    return _subset(arrays, path, subset, normaliser, prepared_root)[1]


def _subset(arrays: dict[str, np.ndarray], path: Path, subset: str, normaliser: str,
            prepared_root: Path | None) -> tuple[np.ndarray, np.ndarray]:
    key = f"err_{normaliser}"
    if key not in arrays:
        raise ReportError(f"{path}: no per-image errors '{key}' (has {sorted(arrays)}); rerun `ccdn evaluate`")
    errors = np.asarray(arrays[key], dtype=np.float64) * 100.0
    if "subset_names" in arrays and "subset_masks" in arrays:
        mask = _mask_from(arrays["subset_names"], arrays["subset_masks"], subset, path)
    elif subset == "full":
        mask = np.ones(errors.shape, dtype=bool)
    elif prepared_root is not None and "face_ids" in arrays:
        mask = _mask_from_prepared(prepared_root, arrays["face_ids"], subset, path)
    else:
        raise ReportError(f"{path}: lacks 'subset_names'/'subset_masks' (or 'face_ids' to look the "
                          f"'{subset}' subset up in the prepared split); delete it and rerun "
                          f"`snakemake --cores all {path}`")
    if mask.shape != errors.shape:
        raise ReportError(f"{path}: subset mask has shape {mask.shape} but '{key}' has {errors.shape}")
    if not mask.any():
        raise ReportError(f"{path}: subset '{subset}' is empty")
    ids = np.asarray(arrays["face_ids"]).astype(str) if "face_ids" in arrays else np.arange(errors.size).astype(str)
    return ids[mask], errors[mask]


def _mask_from(names: np.ndarray, masks: np.ndarray, subset: str, source: Path) -> np.ndarray:
    names = [str(n) for n in names]
    if subset not in names:
        raise ReportError(f"{source}: no subset '{subset}' (has {names})")
    return np.asarray(masks[names.index(subset)], dtype=bool)


def _mask_from_prepared(prepared_root: Path, face_ids: np.ndarray, subset: str, source: Path) -> np.ndarray:
    """Subset membership of predicted faces looked up in the prepared test split by face id."""
    from ccdn.data import load_split  # only needed for prediction files without masks

    split = load_split(Path(prepared_root), "test")
    members = {str(f) for f in split.face_ids[_mask_from(split.subset_names, split.subset_masks, subset,
                                                          Path(prepared_root) / "test.npz")]}
    mask = np.array([str(f) in members for f in face_ids], dtype=bool)
    if not mask.any():
        raise ReportError(f"{source}: none of its face_ids is in subset '{subset}' of {prepared_root}/test.npz; "
                          "was it evaluated on another prepared cache? Rerun `ccdn evaluate`.")
    return mask


def prepared_root(grid: Any, dataset: str) -> Path | None:
    """The grid's prepared cache of ``dataset`` (for prediction files without subset masks)."""
    prepared_dir = getattr(grid, "prepared_dir", None)
    return Path(prepared_dir(dataset)) if callable(prepared_dir) else None


def npz_flag(arrays: dict[str, np.ndarray], key: str) -> bool:
    return key in arrays and bool(np.asarray(arrays[key]).any())


def run_face_values(grid: Any, run_name: str, dataset: str, subset: str, normaliser: str,
                    metric: str = "nme") -> tuple[np.ndarray, np.ndarray]:
    """(face ids, per-face value in percent) of one run: the NME, or 100 × failed for ``failure_rate``."""
    path = Path(grid.predictions_path(run_name, dataset))
    arrays = load_npz(path, f"predictions.npz on {dataset}", run_name, ())
    ids, errors = _subset(arrays, path, subset, normaliser, prepared_root(grid, dataset))
    if metric == "failure_rate":
        return ids, 100.0 * (errors > 100.0 * FAILURE_THRESHOLD)
    if metric != "nme":
        raise ReportError(f"per-face values exist for 'nme' and 'failure_rate', not {metric!r}")
    return ids, errors


def seed_averaged_face_values(grid: Any, run_names: list[str], dataset: str, subset: str, normaliser: str,
                              metric: str = "nme") -> tuple[np.ndarray, np.ndarray]:
    """Per-face values averaged over the runs (seeds) of one row; every run must cover the same faces."""
    ids0, total = None, None
    for name in run_names:
        ids, values = run_face_values(grid, name, dataset, subset, normaliser, metric)
        if ids0 is None:
            ids0, total = ids, values.copy()
            continue
        if ids.shape != ids0.shape or not np.array_equal(ids, ids0):
            raise ReportError(f"{grid.predictions_path(name, dataset)}: its '{subset}' faces differ from those of "
                              f"{grid.predictions_path(run_names[0], dataset)}; evaluate every run on the same "
                              "prepared cache (rerun `snakemake --cores all`)")
        total += values
    if ids0 is None:
        raise ValueError("seed_averaged_face_values needs at least one run")
    return ids0, total / len(run_names)
