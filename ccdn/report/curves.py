"""Learning curves: validation NME per epoch of the main runs, against the mean-shape floor.

The main runs are the experiments of the method tables (2, 4, 5), one panel per training set; each
curve is ``val_nme`` of ``runs/<run>/history.json`` (epoch 0 = the untrained model), mean over seeds
(band: ± sd), on a log axis. The mean-shape reference trained on the same set is the dashed
horizontal line: a curve that never goes below it has learned nothing a constant prediction would not
give. The plotted data also go to ``results/metrics/learning_curves.csv`` (``epoch``, then one column
per experiment id) for ``dvc plots show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ccdn.io import write_text  # noqa: E402
from ccdn.report import NORMALISER_NAMES, SYNTHETIC_MARK, ReportError, is_synthetic  # noqa: E402
from ccdn.report.compute import load_history  # noqa: E402
from ccdn.report.figures import save_figure  # noqa: E402
from ccdn.report.tables import is_reference_model  # noqa: E402

LEARNING_STEM = "learning_curves"
METHOD_TABLES = ("table2", "table4", "table5")
DATASET_TITLES = {"300w": "300W", "aflw": "AFLW", "wflw": "WFLW", "cofw68": "COFW-68"}


def learning_experiments(grid: Any) -> list[Any]:
    """The experiments whose curves are drawn (method tables), references included (drawn as lines)."""
    return [e for e in grid.experiments if set(e.tables) & set(METHOD_TABLES)]


def learning_paths(out_dir: Path | str, metrics_dir: Path | str) -> list[Path]:
    """The files ``write_learning_curves`` makes (for Snakemake outputs and the README)."""
    return [Path(out_dir) / f"{LEARNING_STEM}.png", Path(out_dir) / f"{LEARNING_STEM}.pdf",
            Path(metrics_dir) / f"{LEARNING_STEM}.csv"]


def learning_table(grid: Any) -> pd.DataFrame:
    """Long table: experiment, label, train, reference, run, seed, epoch, val_nme, val_norm, val_subset."""
    records = []
    for experiment in learning_experiments(grid):
        for run in (r for r in grid.runs if r.experiment.id == experiment.id):
            for record in load_history(grid, run.name):
                if record.get("val_nme") is None:
                    continue
                records.append({"experiment": experiment.id, "label": experiment.label, "train": experiment.train,
                                "reference": is_reference_model(experiment.model), "run": run.name,
                                "seed": int(run.seed), "epoch": int(record["epoch"]),
                                "val_nme": float(record["val_nme"]), "val_norm": str(record.get("val_norm", "")),
                                "val_subset": str(record.get("val_subset", ""))})
    if not records:
        raise ReportError("learning curves need the runs of Tables 2, 4 or 5 with a history.json; the grid has "
                          "none (config/config.yaml: experiments[].tables)")
    return pd.DataFrame.from_records(records)


def curves_csv(data: pd.DataFrame) -> str:
    """Wide CSV: epoch, then the mean over seeds of each experiment; a reference is constant over epochs."""
    learned = data[~data["reference"]]
    wide = learned.groupby(["epoch", "experiment"], sort=True)["val_nme"].mean().unstack("experiment")
    epochs = sorted(set(learned["epoch"])) or [0]
    wide = wide.reindex(index=epochs)
    order = list(dict.fromkeys(learned["experiment"]))
    wide = wide[order] if order else pd.DataFrame(index=epochs)
    for experiment, frame in data[data["reference"]].groupby("experiment", sort=False):
        wide[experiment] = float(frame.sort_values("epoch").groupby("run")["val_nme"].last().mean())
    wide.index.name = "epoch"
    return wide.reset_index().to_csv(index=False, float_format="%.6g")


def write_learning_curves(grid: Any, out_dir: Path | str, metrics_dir: Path | str) -> list[Path]:
    """Draw ``learning_curves.{png,pdf}`` (one panel per training set) and write their data as CSV."""
    data = learning_table(grid)
    png, pdf, csv = learning_paths(out_dir, metrics_dir)
    write_text(csv, curves_csv(data))
    trains = list(dict.fromkeys(data["train"]))
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(trains), figsize=(4.2 * len(trains), 3.6), squeeze=False)
    for ax, train in zip(axes[0], trains, strict=True):
        _panel(ax, data[data["train"] == train], train)
    synthetic = is_synthetic(grid) or _synthetic_runs(grid)
    fig.suptitle("Validation NME per epoch (log scale); dashed: mean-shape reference"
                 + (f"\n{SYNTHETIC_MARK}" if synthetic else ""), fontsize=9,
                 color="firebrick" if synthetic else "black")
    fig.tight_layout()
    paths = [save_figure(fig, png), save_figure(fig, pdf)]
    plt.close(fig)
    return paths + [csv]


def _panel(ax: Any, data: pd.DataFrame, train: str) -> None:
    learned, reference = data[~data["reference"]], data[data["reference"]]
    if len(learned):
        several = learned.groupby("experiment")["run"].nunique().max() > 1
        sns.lineplot(data=learned, x="epoch", y="val_nme", hue="label", errorbar="sd" if several else None,
                     marker="o", markersize=3, ax=ax)
    for label, frame in reference.groupby("label", sort=False):
        level = float(frame.sort_values("epoch").groupby("run")["val_nme"].last().mean())
        ax.axhline(level, linestyle="--", color="black", linewidth=1.2, label=f"{label}: {level:.2f}")
    ax.set_yscale("log")
    norms = sorted(set(data["val_norm"]) - {""})
    subsets = sorted(set(data["val_subset"]) - {""})
    label = "validation NME (%)"
    if len(norms) == 1:
        label += ", " + NORMALISER_NAMES.get(norms[0], norms[0]).split(" (")[0]
    ax.set_ylabel(label + (f", {subsets[0]}" if len(subsets) == 1 else ""))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"trained on {DATASET_TITLES.get(train, train)}", fontsize=9)
    ax.legend(title=None, fontsize=7, loc="best")


def _synthetic_runs(grid: Any) -> bool:
    """Whether any drawn run was evaluated on synthetic data (its metrics.json says so)."""
    import json

    for experiment in learning_experiments(grid):
        for run in (r for r in grid.runs if r.experiment.id == experiment.id):
            path = Path(grid.metrics_path(run.name, experiment.train))
            if path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("synthetic"):
                return True
    return False
