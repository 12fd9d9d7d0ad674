"""Occlusion stress: the paper's robustness claim measured on the points that are hidden.

For every test set whose prepared split carries per-point occlusion flags (COFW-68's annotation; the
synthetic sets' occluders; real 300W, AFLW and WFLW have none, WFLW's per-face occlusion subset is a
column of Table 5), and for every method of the table that reads it:

- NME over the **visible** and over the **occluded** points (per-point errors normalised as in the
  table, pooled over faces and averaged over seeds) and their ratio;
- NME of a face as a function of the **fraction of its points that are occluded** (bins), drawn as
  one curve per method, the mean-shape reference dashed.

Writes ``results/tables/occlusion.{md,csv}``, ``results/figures/occlusion.{png,pdf}`` and the curves
as ``results/metrics/occlusion.csv`` (``occluded_pct``, then one column per "method (dataset)") for
``dvc plots show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ccdn.io import write_text  # noqa: E402
from ccdn.report import NORMALISER_NAMES, SYNTHETIC_MARK, ReportError, load_npz  # noqa: E402
from ccdn.report.figures import save_figure  # noqa: E402
from ccdn.report.tables import is_reference_model  # noqa: E402

OCCLUSION_STEM = "occlusion"
# (table whose methods are compared, test set, the table's normaliser)
SOURCES = (("table3", "cofw68", "inter_pupil"), ("table2", "300w", "inter_pupil"),
           ("table4", "aflw", "face_size"), ("table5", "wflw", "inter_ocular"))
BIN_EDGES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)  # occluded fraction of a face; the first bin is exactly 0
NO_FLAGS = ("No test set of the grid has per-point occlusion flags (COFW-68 and the synthetic sets have them), "
            "or no method of Tables 2-5 is evaluated on one: nothing to measure.")
CSV_COLUMNS = ("dataset", "method", "reference", "runs", "nme_visible", "nme_occluded", "occluded_over_visible",
               "visible_points", "occluded_points")


def occlusion_paths(tables_dir: Path | str, figures_dir: Path | str, metrics_dir: Path | str) -> list[Path]:
    """The files ``write_occlusion`` makes."""
    return [Path(tables_dir) / f"{OCCLUSION_STEM}.md", Path(tables_dir) / f"{OCCLUSION_STEM}.csv",
            Path(figures_dir) / f"{OCCLUSION_STEM}.png", Path(figures_dir) / f"{OCCLUSION_STEM}.pdf",
            Path(metrics_dir) / f"{OCCLUSION_STEM}.csv"]


def _flags(grid: Any, dataset: str) -> tuple[Any, dict[str, int]] | None:
    """The prepared test split (if it has occluded points) and its face-id index."""
    from ccdn.data import load_split

    root = Path(grid.prepared_dir(dataset))
    if not (root / "test.npz").is_file():
        return None
    split = load_split(root, "test")
    if not np.asarray(split.occluded).any():
        return None
    return split, {str(face): index for index, face in enumerate(split.face_ids)}


def run_point_errors(grid: Any, run_name: str, dataset: str, normaliser: str, split: Any,
                     index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(per-point errors in percent of the normaliser (N, L), occluded flags (N, L)) of one run."""
    from ccdn.metrics import normalizing_distance

    path = Path(grid.predictions_path(run_name, dataset))
    arrays = load_npz(path, f"predictions.npz on {dataset}", run_name, ("pred", "gt", "face_ids"))
    missing = [str(f) for f in arrays["face_ids"] if str(f) not in index]
    if missing:
        raise ReportError(f"{path}: faces {missing[:3]} are not in {grid.prepared_dir(dataset)}/test.npz; "
                          "rerun `ccdn evaluate` on the current prepared cache")
    rows = np.array([index[str(f)] for f in arrays["face_ids"]])
    gt = np.asarray(arrays["gt"], dtype=np.float64)
    distance = normalizing_distance(gt, normaliser, scheme=split.scheme, boxes=split.boxes[rows])
    errors = np.linalg.norm(np.asarray(arrays["pred"], dtype=np.float64) - gt, axis=-1) / distance[:, None] * 100.0
    return errors, np.asarray(split.occluded[rows], dtype=bool)


def occlusion_frames(grid: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one line per dataset × method, curves: NME per occluded-fraction bin)."""
    summary, curves = [], []
    for table, dataset, normaliser in SOURCES:
        experiments = [e for e in grid.experiments if table in e.tables and dataset in e.evaluate]
        loaded = _flags(grid, dataset) if experiments else None
        if loaded is None:
            continue
        split, index = loaded
        for experiment in experiments:
            runs = [r.name for r in grid.runs if r.experiment.id == experiment.id]
            per_run = [run_point_errors(grid, name, dataset, normaliser, split, index) for name in runs]
            errors = np.mean([e for e, _ in per_run], axis=0)  # seeds share the faces (same prepared split)
            occluded = per_run[0][1]
            reference = is_reference_model(experiment.model)
            visible, hidden = errors[~occluded], errors[occluded]
            summary.append({"dataset": dataset, "method": experiment.label, "reference": reference,
                            "runs": " ".join(runs), "nme_visible": float(visible.mean()) if visible.size else np.nan,
                            "nme_occluded": float(hidden.mean()) if hidden.size else np.nan,
                            "occluded_over_visible": float(hidden.mean() / visible.mean())
                            if hidden.size and visible.size and visible.mean() > 0 else np.nan,
                            "visible_points": int(visible.size), "occluded_points": int(hidden.size),
                            "normaliser": normaliser})
            curves += _binned(dataset, experiment.label, reference, errors.mean(axis=1), occluded.mean(axis=1))
    summary_frame = pd.DataFrame(summary, columns=[*CSV_COLUMNS, "normaliser"])
    curve_frame = pd.DataFrame(curves, columns=["dataset", "method", "reference", "occluded_pct", "nme", "faces"])
    return summary_frame, curve_frame


def _binned(dataset: str, method: str, reference: bool, face_nme: np.ndarray, fraction: np.ndarray) -> list[dict]:
    """Mean face NME per occluded-fraction bin: exactly 0, then (0, 10 %], (10, 20 %], ..."""
    out = []
    edges = BIN_EDGES
    bins = [(fraction == 0.0, 0.0)] + [((fraction > lo) & (fraction <= hi), 100.0 * (lo + hi) / 2)
                                       for lo, hi in zip(edges[:-1], edges[1:])]
    for mask, centre in bins:
        if mask.any():
            out.append({"dataset": dataset, "method": method, "reference": reference, "occluded_pct": centre,
                        "nme": float(face_nme[mask].mean()), "faces": int(mask.sum())})
    return out


def render_markdown(summary: pd.DataFrame, synthetic: bool) -> str:
    mark = f" ({SYNTHETIC_MARK})" if synthetic else ""
    out = [f"# Occlusion stress: NME (%) on visible vs occluded points{mark}", "",
           "*Per-point errors normalised as in the dataset's table, pooled over faces, mean over seeds. "
           "Occluded/visible > 1: hidden points are harder. See the figure for NME against the fraction of a "
           "face's points that are occluded.*", ""]
    if summary.empty:
        out.append(NO_FLAGS)
    for dataset, frame in summary.groupby("dataset", sort=False):
        norm = NORMALISER_NAMES[frame["normaliser"].iloc[0]]
        out += [f"**{dataset}** (normalised by the {norm})", "",
                "| Method | NME visible | NME occluded | occluded ÷ visible | points (visible / occluded) |",
                "|---|---:|---:|---:|---:|"]
        for row in frame.itertuples():
            label = row.method + (" (reference)" if row.reference and "reference" not in row.method else "")
            out.append(f"| {label} | {row.nme_visible:.2f} | {row.nme_occluded:.2f} | "
                       f"{row.occluded_over_visible:.2f} | {row.visible_points} / {row.occluded_points} |")
        out.append("")
    return "\n".join(out)


def draw_method_curves(ax: Any, frame: pd.DataFrame) -> None:
    """NME against ``occluded_pct``, one coloured line per learning method, reference methods dashed black."""
    learned = frame[~frame["reference"]]
    if len(learned):
        sns.lineplot(data=learned, x="occluded_pct", y="nme", hue="method", marker="o", ax=ax)
    for method, ref in frame[frame["reference"]].groupby("method", sort=False):
        ax.plot(ref["occluded_pct"], ref["nme"], linestyle="--", color="black", marker="o", label=method)


def write_occlusion(grid: Any, tables_dir: Path | str, figures_dir: Path | str, metrics_dir: Path | str,
                    synthetic: bool | None = None) -> list[Path]:
    """Write the occlusion table (md, csv), figure (png, pdf) and curve data (csv)."""
    summary, curves = occlusion_frames(grid)
    synthetic = bool(getattr(grid, "synthetic", False)) if synthetic is None else synthetic
    md, csv, png, pdf, data = occlusion_paths(tables_dir, figures_dir, metrics_dir)
    write_text(md, render_markdown(summary, synthetic))
    mark = f"# {SYNTHETIC_MARK}\n" if synthetic else ""
    write_text(csv, mark + summary.to_csv(index=False, float_format="%.4f"))
    curves["column"] = curves["method"] + " (" + curves["dataset"] + ")"
    wide = curves.pivot_table(index="occluded_pct", columns="column", values="nme", sort=False)
    wide = wide[list(dict.fromkeys(curves["column"]))].sort_index()
    write_text(data, wide.reset_index().to_csv(index=False, float_format="%.6g"))
    _figure(curves, synthetic, png, pdf)
    return [md, csv, png, pdf, data]


def _figure(curves: pd.DataFrame, synthetic: bool, png: Path, pdf: Path) -> None:
    datasets = list(dict.fromkeys(curves["dataset"]))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.2 * max(1, len(datasets)), 3.6), squeeze=False)
    if not datasets:
        axes[0, 0].text(0.5, 0.5, NO_FLAGS, ha="center", va="center", wrap=True, fontsize=8)
        axes[0, 0].set_axis_off()
    for ax, dataset in zip(axes[0][:len(datasets)], datasets, strict=True):
        draw_method_curves(ax, curves[curves["dataset"] == dataset])
        ax.set_xlabel("occluded points of the face (%, bin centre; 0 = none)")
        ax.set_ylabel("face NME (%)")
        ax.set_title(dataset, fontsize=9)
        ax.legend(title=None, fontsize=7, loc="best")
    fig.suptitle("Occlusion stress: NME against the fraction of occluded points"
                 + (f"\n{SYNTHETIC_MARK}" if synthetic else ""), fontsize=9,
                 color="firebrick" if synthetic else "black")
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
