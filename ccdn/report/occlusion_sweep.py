"""Occlusion sweep: face NME against a *set* share of hidden points, on synthetic data.

``ccdn.report.occlusion`` bins faces by the share of their points that happen to be occluded, which on
real data moves with pose and expression too. The sweep controls it: ``ccdn synth cofw68
--occlusion-levels`` renders every face of one synthetic set once per level with a bar that hides that
percentage of its 68 points (the grid's ``occlusion_sweep``), so a curve of NME against the level
measures occlusion alone. Each face's level is read back from its per-point flags in the prepared set
(the nearest configured level: a level is exact up to a pair of coincident points).

Writes ``results/figures/occlusion_sweep.{png,pdf}`` (one curve per method, the mean-shape reference
dashed, marked as synthetic data) and ``results/metrics/occlusion_sweep.csv`` (``occluded_pct``, then
one column per method label) for ``dvc plots show``. NME: inter-pupil, in percent, mean over faces and
seeds.
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
from ccdn.report import NORMALISER_NAMES, SYNTHETIC_MARK, ReportError  # noqa: E402
from ccdn.report.figures import save_figure  # noqa: E402
from ccdn.report.occlusion import draw_method_curves, run_point_errors  # noqa: E402
from ccdn.report.tables import is_reference_model  # noqa: E402

SWEEP_STEM = "occlusion_sweep"  # = ccdn.grid.SWEEP_STEM
NORMALISER = "inter_pupil"  # COFW-68's (Table 3), the format of the sweep set
CAPTION = ("Occlusion sweep (synthetic data): face NME against the share of its 68 points hidden by a bar, "
           "the same faces at every level; mean shape dashed.")


def sweep_paths(figures_dir: Path | str, metrics_dir: Path | str) -> list[Path]:
    """The files ``write_occlusion_sweep`` makes (= ``ccdn.grid.Grid.sweep_outputs``)."""
    return [Path(figures_dir) / f"{SWEEP_STEM}.png", Path(figures_dir) / f"{SWEEP_STEM}.pdf",
            Path(metrics_dir) / f"{SWEEP_STEM}.csv"]


def nearest_levels(fraction: np.ndarray, levels: list[float]) -> np.ndarray:
    """Each face's configured level (percent) nearest to its hidden share of points."""
    grid = np.asarray(sorted(float(v) for v in levels))
    return grid[np.abs(100.0 * np.asarray(fraction)[:, None] - grid[None, :]).argmin(axis=1)]


def _prepared(grid: Any, dataset: str) -> tuple[Any, dict[str, int]]:
    from ccdn.data import load_split

    root = Path(grid.prepared_dir(dataset))
    if not (root / "test.npz").is_file():
        raise ReportError(f"{root}/test.npz: the occlusion sweep's prepared set is missing; run "
                          f"`snakemake --cores all {root}`")
    split = load_split(root, "test")
    return split, {str(face): index for index, face in enumerate(split.face_ids)}


def sweep_frame(grid: Any) -> pd.DataFrame:
    """Long table: method, reference, occluded_pct, nme (face NME, mean over faces and seeds), faces, runs."""
    evaluations = list(getattr(grid, "sweep_evaluations", []) or [])
    if not evaluations:
        raise ReportError(f"{getattr(grid, 'source', 'the grid')}: no `occlusion_sweep` (or none of its experiments "
                          "has runs); add one to the grid config (workflow/schemas/config.schema.yaml)")
    dataset = evaluations[0][1]
    split, index = _prepared(grid, dataset)
    levels = list(grid.occlusion_sweep["levels"])
    rows = []
    experiments = {run.experiment.id: run.experiment for run, _ in evaluations}
    order = list(grid.occlusion_sweep["experiments"])  # curves in the order the config lists them
    for experiment in sorted(experiments.values(), key=lambda e: order.index(e.id) if e.id in order else len(order)):
        runs = [run.name for run, _ in evaluations if run.experiment.id == experiment.id]
        per_run = [run_point_errors(grid, name, dataset, NORMALISER, split, index) for name in runs]
        face_nme = np.mean([errors.mean(axis=1) for errors, _ in per_run], axis=0)  # seeds share the faces
        level = nearest_levels(per_run[0][1].mean(axis=1), levels)
        for pct in sorted(set(level.tolist())):
            mask = level == pct
            rows.append({"method": experiment.label, "reference": is_reference_model(experiment.model),
                         "occluded_pct": float(pct), "nme": float(face_nme[mask].mean()), "faces": int(mask.sum()),
                         "runs": " ".join(runs)})
    return pd.DataFrame(rows, columns=["method", "reference", "occluded_pct", "nme", "faces", "runs"])


def write_occlusion_sweep(grid: Any, figures_dir: Path | str, metrics_dir: Path | str) -> list[Path]:
    """Write the sweep figure (png, pdf) and its curves as CSV (``occluded_pct``, one column per method)."""
    frame = sweep_frame(grid)
    png, pdf, data = sweep_paths(figures_dir, metrics_dir)
    wide = frame.pivot_table(index="occluded_pct", columns="method", values="nme", sort=False)
    wide = wide[list(dict.fromkeys(frame["method"]))].sort_index()
    write_text(data, wide.reset_index().to_csv(index=False, float_format="%.6g"))
    _figure(frame, bool(getattr(grid, "synthetic", True)), png, pdf)
    return [png, pdf, data]


def _figure(frame: pd.DataFrame, synthetic: bool, png: Path, pdf: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    draw_method_curves(ax, frame)
    ax.set_xlabel("points of the face hidden by the occluder (%)")
    ax.set_ylabel(f"face NME (%, {NORMALISER_NAMES[NORMALISER]})")
    ax.legend(title=None, fontsize=7, loc="best")
    # the sweep set is always synthetic (rendered faces), whatever data the models were trained on
    mark = SYNTHETIC_MARK if synthetic else "synthetic test faces"
    fig.suptitle(f"Occlusion sweep: NME against the hidden share of points\n{mark}", fontsize=9,
                 color="firebrick")
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
