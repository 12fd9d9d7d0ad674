"""Figures 5, 7 and 8: CED curves of our runs and the face activation maps of two vs four excitation blocks.

CED curves come from the per-image errors in each run's ``predictions.npz`` (Contract 6); the curve of
an experiment is the mean over its seeds (band: ± sd across seeds). The plotted data also go to
``results/metrics/ced_fig{5,7}.csv`` in wide form (``nme`` in percent, then one column per method) so
``dvc plots`` can draw them. The x range is the paper-like default, widened to the 95th percentile of
the errors when the runs are worse (synthetic smoke runs), so the curves never leave the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display: works on cluster nodes and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ccdn.io import atomic_path, write_text
from ccdn.report import (  # noqa: E402
    NORMALISER_NAMES,
    SYNTHETIC_MARK,
    ReportError,
    is_synthetic,
    load_npz,
)
from ccdn.report.faces import npz_flag, prepared_root, subset_errors  # noqa: E402
from ccdn.report.tables import DEFAULT_GAMMAS, is_reference_model  # noqa: E402

CED_POINTS = 201


@dataclass(frozen=True)
class CedFigure:
    """A CED figure: which runs (those in ``table``), which test subset and which normaliser."""

    name: str
    stem: str
    title: str
    table: str
    dataset: str
    subset: str
    normaliser: str
    x_max: float  # percent; the paper-like default range


CED_FIGURES: dict[str, CedFigure] = {
    "fig5": CedFigure("fig5", "fig5_ced_300w_challenging", "Fig. 5: CED on 300W challenging (68 landmarks)",
                      "table2", "300w", "challenging", "inter_pupil", 20.0),
    "fig7": CedFigure("fig7", "fig7_ced_aflw_full", "Fig. 7: CED on AFLW full (19 landmarks)",
                      "table4", "aflw", "full", "face_size", 8.0),
}
FIG8_STEM = "fig8_activation_maps"
FIGURE_NAMES = ("fig5", "fig7", "fig8")


def figure_paths(name: str, out_dir: Path | str, metrics_dir: Path | str | None = None) -> list[Path]:
    """The files ``write_figure`` makes (for Snakemake outputs and the README)."""
    out_dir = Path(out_dir)
    if name == "fig8":
        return [out_dir / f"{FIG8_STEM}.png"]
    spec = CED_FIGURES[name]
    paths = [out_dir / f"{spec.stem}.png", out_dir / f"{spec.stem}.pdf"]
    return paths + ([Path(metrics_dir) / f"ced_{name}.csv"] if metrics_dir is not None else [])


def write_figure(grid: Any, name: str, out_dir: Path | str, metrics_dir: Path | str | None = None,
                 images: int = 4) -> list[Path]:
    """Make figure ``name`` (fig5, fig7, fig8) under ``out_dir``; returns the written paths.

    ``metrics_dir`` receives the CED data (default ``<grid.results_dir>/metrics``); ``images`` is the
    number of faces per row of Fig. 8.
    """
    if name == "fig8":
        return write_activation_figure(grid, out_dir, images=images)
    if name not in CED_FIGURES:
        raise ReportError(f"no figure {name!r}: choose one of {list(FIGURE_NAMES)}")
    metrics_dir = Path(metrics_dir) if metrics_dir is not None else Path(grid.results_dir) / "metrics"
    return write_ced_figure(grid, CED_FIGURES[name], Path(out_dir), metrics_dir)


# ------------------------------------------------------------------------------------------------------ CED


def ced_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Proportion of images whose error is at most each threshold (same unit as ``errors``)."""
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    if errors.size == 0:
        raise ValueError("a CED curve needs at least one error")
    return np.searchsorted(errors, thresholds, side="right") / errors.size


def _ced_runs(grid: Any, spec: CedFigure) -> tuple[list[tuple[str, str, int, np.ndarray]], bool, set[str]]:
    """(method, run, seed, errors %) for each run of the experiments in the figure's table, the synthetic
    flag and the methods that are references (drawn dashed)."""
    experiments = [e for e in grid.experiments if spec.table in e.tables and spec.dataset in e.evaluate]
    if not experiments:
        raise ReportError(f"{spec.name} plots the experiments that list {spec.table} and evaluate {spec.dataset}; "
                          "the grid has none (config/config.yaml: experiments[].tables / evaluate)")
    labels = [e.label for e in experiments]
    curves, synthetic, references = [], False, set()
    for experiment in experiments:
        method = experiment.label if labels.count(experiment.label) == 1 else f"{experiment.label} ({experiment.id})"
        if is_reference_model(experiment.model):
            references.add(method)
        for run in (r for r in grid.runs if r.experiment.id == experiment.id):
            path = Path(grid.predictions_path(run.name, spec.dataset))
            arrays = load_npz(path, f"predictions.npz on {spec.dataset}", run.name, ())
            errors = subset_errors(arrays, path, spec.subset, spec.normaliser, prepared_root(grid, spec.dataset))
            curves.append((method, run.name, int(run.seed), errors))
            synthetic = synthetic or npz_flag(arrays, "synthetic")
    return curves, synthetic, references


def ced_table(curves: list[tuple[str, str, int, np.ndarray]], x_max: float) -> pd.DataFrame:
    """Long table (method, run, seed, nme, proportion) on a common threshold grid from 0 to ``x_max`` %."""
    thresholds = np.linspace(0.0, x_max, CED_POINTS)
    frames = [pd.DataFrame({"method": method, "run": run, "seed": seed, "nme": thresholds,
                            "proportion": ced_curve(errors, thresholds)})
              for method, run, seed, errors in curves]
    return pd.concat(frames, ignore_index=True)


def _x_max(spec: CedFigure, curves: list[tuple[str, str, int, np.ndarray]]) -> float:
    q95 = float(np.quantile(np.concatenate([errors for *_, errors in curves]), 0.95))
    return float(min(100.0, max(spec.x_max, math.ceil(q95))))


def write_ced_figure(grid: Any, spec: CedFigure, out_dir: Path, metrics_dir: Path) -> list[Path]:
    """Plot the CED curves of one figure (png + pdf) and write the plotted data as CSV."""
    curves, synthetic_data, references = _ced_runs(grid, spec)
    synthetic = is_synthetic(grid) or synthetic_data
    data = ced_table(curves, _x_max(spec, curves))
    wide = data.groupby(["nme", "method"], sort=False)["proportion"].mean().unstack("method")
    wide = wide[list(dict.fromkeys(data["method"]))].reset_index()
    csv_path = write_text(metrics_dir / f"ced_{spec.name}.csv", wide.to_csv(index=False, float_format="%.6g"))

    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    several_seeds = data.groupby("method")["run"].nunique().max() > 1
    learned = data[~data["method"].isin(references)]
    if len(learned):
        sns.lineplot(data=learned, x="nme", y="proportion", hue="method", errorbar="sd" if several_seeds else None,
                     ax=ax)
    for method in references:  # the no-learning floor: one dashed black curve
        ax.plot(wide["nme"], wide[method], linestyle="--", color="black", linewidth=1.2, label=method)
    ax.set_xlabel(f"NME (%), normalised by the {NORMALISER_NAMES[spec.normaliser]}")
    ax.set_ylabel("Proportion of test images")
    ax.set_xlim(0, float(data["nme"].max()))
    ax.set_ylim(0, 1)
    ax.set_title(spec.title + (f"\n{SYNTHETIC_MARK}" if synthetic else ""), fontsize=9,
                 color="firebrick" if synthetic else "black")
    ax.legend(title=None, loc="best")
    fig.tight_layout()
    paths = [save_figure(fig, out_dir / f"{spec.stem}.png"), save_figure(fig, out_dir / f"{spec.stem}.pdf")]
    plt.close(fig)
    return paths + [csv_path]


# No creation date, producer version or software tag: a rerun writes byte-identical files.
STABLE_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
    "svg": {"Date": None, "Creator": None},
}


def save_figure(fig: Any, path: Path) -> Path:
    """Save atomically (temporary name, then rename) with byte-stable metadata (``STABLE_METADATA``)."""
    fmt = path.suffix.lstrip(".")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, metadata=STABLE_METADATA.get(fmt))
    return path


# ------------------------------------------------------------------------------------------ activation maps


def excitation_runs(grid: Any, counts: tuple[int, ...] = (2, 4)) -> dict[int, Any]:
    """For each P, the lowest-seed run of a CCDN experiment trained and evaluated on 300W with that P.

    Experiments with the paper's γ (or none recorded) are preferred, so a γ-sweep run is never shown.
    """
    chosen: dict[int, tuple[bool, int, Any]] = {}
    found: dict[Any, list[str]] = {}
    for run in grid.runs:
        experiment = run.experiment
        if experiment.model != "ccdn" or experiment.train != "300w" or "300w" not in experiment.evaluate:
            continue
        p = _excitations_of(grid, run)
        found.setdefault(p, []).append(run.name)
        gammas = tuple(round(float(g), 6) for g in (getattr(experiment, "gammas", None) or ()))
        rank = (gammas not in ((), DEFAULT_GAMMAS), int(run.seed))
        if p in counts and (p not in chosen or rank < chosen[p][:2]):
            chosen[p] = (*rank, run)
    missing = [p for p in counts if p not in chosen]
    if missing:
        raise ReportError(f"fig8 needs CCDN runs trained and evaluated on 300W with P = {list(counts)}; none for "
                          f"P = {missing} (found P: {sorted(found, key=str)}). Add an experiment with "
                          "overrides {model.options.num_excitations: N} to the grid config.")
    return {p: chosen[p][2] for p in counts}


def _excitations_of(grid: Any, run: Any) -> Any:
    p = getattr(run.experiment, "num_excitations", None)
    if p is not None:
        return int(p)
    path = Path(grid.activation_maps_path(run.name, "300w"))
    arrays = load_npz(path, "activation_maps.npz on 300w", run.name, ("num_excitations",))
    return int(np.asarray(arrays["num_excitations"]).reshape(-1)[0])


def _load_activation_maps(grid: Any, run: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    path = Path(grid.activation_maps_path(run.name, "300w"))
    arrays = load_npz(path, "activation_maps.npz on 300w", run.name, ("images", "maps"))
    images, maps = arrays["images"], arrays["maps"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ReportError(f"{path}: 'images' must be uint8 (K, S, S, 3), got {images.dtype} {images.shape}")
    if maps.ndim != 3 or len(maps) != len(images) or len(images) == 0:
        raise ReportError(f"{path}: 'maps' must be (K, h, w) with K = {len(images)} images, got {maps.shape}")
    return images, maps.astype(np.float32), npz_flag(arrays, "synthetic")


def write_activation_figure(grid: Any, out_dir: Path | str, images: int = 4) -> list[Path]:
    """Fig. 8: face activation maps over the test faces, first row P = 2, second row P = 4 (as in the paper)."""
    runs = excitation_runs(grid)
    loaded = {p: _load_activation_maps(grid, run) for p, run in runs.items()}
    synthetic = is_synthetic(grid) or any(flag for *_, flag in loaded.values())
    columns = max(1, min([images] + [len(faces) for faces, _, _ in loaded.values()]))
    fig, axes = plt.subplots(len(runs), columns, figsize=(2.1 * columns + 0.4, 2.3 * len(runs)), squeeze=False)
    for row, (p, (faces, maps, _)) in enumerate(loaded.items()):
        for col in range(columns):
            ax = axes[row, col]
            size = faces.shape[1]
            ax.imshow(faces[col])
            ax.imshow(np.clip(maps[col], 0.0, 1.0), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                      extent=(-0.5, size - 0.5, size - 0.5, -0.5), interpolation="bilinear")
            ax.set_axis_off()
        axes[row, 0].text(-0.06, 0.5, f"P = {p}\n{runs[p].name}", transform=axes[row, 0].transAxes,
                          rotation=90, ha="right", va="center", fontsize=8)
    title = "Fig. 8: face activation maps, two vs four excitation blocks (CCDN, 300W test)"
    fig.suptitle(title + (f"\n{SYNTHETIC_MARK}" if synthetic else ""), fontsize=9,
                 color="firebrick" if synthetic else "black")
    fig.tight_layout()
    path = save_figure(fig, Path(out_dir) / f"{FIG8_STEM}.png")
    plt.close(fig)
    return [path]
