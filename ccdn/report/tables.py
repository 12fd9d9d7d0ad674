"""Tables 2-7: the paper's rows next to ours (mean, 95 % intervals, n, Δ, Δ%, × mean shape).

Our rows are matched to the paper's rows by key: the method label for Tables 2-5 (case, spaces and
punctuation ignored), γ = (γ1, γ2, γ3) for Table 6 and the number of excitation blocks P for Table 7.
An experiment of ours without a paper row (e.g. a re-implemented baseline) becomes an extra row marked
"not in paper". Two rows are special:

- the **mean-shape reference** (model ``mean_shape``, no learning): a row of its own in every table,
  and the denominator of "× mean shape" (our NME ÷ the mean-shape NME of the same column);
- **Table 7, P = 1**: the paper's P = 1 cells equal its Baseline cells (a CCDN without excitation
  branches is the Baseline), so our P = 1 row is filled from the Baseline runs; our ``ccdn`` runs with
  P = 1 become the extra row "CCDN, P = 1 (ours, not in the paper)".

Δ = ours − paper and Δ% = 100 · Δ / paper. Per cell: the sample sd (ddof 1) and Student-t 95 %
interval over seeds (none for a single seed), and the BCa bootstrap 95 % interval over the test faces
of the per-face values averaged over seeds (``ccdn.report.stats``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ccdn.models import model_info
from ccdn.report import (
    NORMALISER_NAMES,
    SYNTHETIC_MARK,
    ReportError,
    is_synthetic,
    load_metrics,
    load_run_config,
    metric_value,
)
from ccdn.report.compute import RunCompute, describe, run_compute
from ccdn.report.faces import seed_averaged_face_values
from ccdn.report.reference import PaperReference, ReferenceCell, load_reference
from ccdn.report.stats import Interval, bootstrap_interval, t_interval

# What §4.1 of the paper states, and what it leaves open (our choices, from the first author's MMDN code).
PAPER_RECIPE = ("paper (§4.1): 128 × 128 input, 4 stacked hourglasses, lr 2.5e-4 halved at epochs 40 and 100, "
                "augmentation (rotation, scaling, translation, flip); P = 4, γ = (0.025, 0.01, 0.05) "
                "(Tables 6, 7)")
OUR_RECIPE_CHOICES = ("not stated in the paper, our choice (from the first author's MMDN code): Adam "
                      "(β = 0.5, 0.999), batch 6, 120 epochs")
DEFAULT_GAMMAS = (0.025, 0.01, 0.05)
DEFAULT_EXCITATIONS = model_info("ccdn").default_options["num_excitations"]  # the paper's P, registered once
REFERENCE_MODELS = frozenset({"mean_shape"})  # reference rows: no learning, the floor every model must beat
LEARNING_MODELS = frozenset({"ccdn", "fcdn", "baseline", "hg_heatmap"})
CCDN_P1_LABEL = "CCDN, P = 1 (ours, not in the paper)"
P1_FROM_BASELINE = ("P = 1 (ours) is filled from the Baseline runs: the paper's P = 1 cells equal its Baseline "
                    "cells; our ccdn runs with P = 1 are the row “" + CCDN_P1_LABEL + "”")


@dataclass(frozen=True)
class Column:
    """One numeric column: where our number comes from and which paper cells it compares with."""

    header: str
    dataset: str
    subset: str
    normaliser: str
    metric: str = "nme"


@dataclass(frozen=True)
class Block:
    """A group of rows sharing columns (Table 2 has an inter-pupil and an inter-ocular block)."""

    title: str
    columns: tuple[Column, ...]
    normaliser: str | None = None  # restricts the paper rows to one normaliser block


@dataclass(frozen=True)
class TableSpec:
    """The layout of one paper table."""

    number: int
    slug: str
    title: str
    row_kind: str  # "method" | "gammas" | "excitations"
    blocks: tuple[Block, ...]
    note: str = ""


def _subset_columns(dataset: str, normaliser: str, subsets: Sequence[tuple[str, str]]) -> tuple[Column, ...]:
    return tuple(Column(header, dataset, subset, normaliser) for subset, header in subsets)


_300W = (("common", "Common"), ("challenging", "Challenging"), ("full", "Full"))
_WFLW = (("full", "Test"), ("pose", "Pose"), ("expression", "Expression"), ("illumination", "Illumination"),
         ("makeup", "Make-up"), ("occlusion", "Occlusion"), ("blur", "Blur"))

TABLE_SPECS: dict[int, TableSpec] = {
    2: TableSpec(2, "table2_300w", "Table 2: NME (%) on the 300W test set", "method", (
        Block("Inter-pupil normalisation", _subset_columns("300w", "inter_pupil", _300W), "inter_pupil"),
        Block("Inter-ocular normalisation", _subset_columns("300w", "inter_ocular", _300W), "inter_ocular"),
    )),
    3: TableSpec(3, "table3_cofw68", "Table 3: NME and failure rate (%) on COFW-68", "method", (
        Block("", (Column("NME", "cofw68", "full", "inter_pupil"),
                   Column("FR@0.1", "cofw68", "full", "inter_pupil", "failure_rate"))),
    ), note="COFW-68 is evaluated with the model trained on 300W; failure = inter-pupil NME > 10%."),
    4: TableSpec(4, "table4_aflw", "Table 4: NME (%) on AFLW", "method", (
        Block("", _subset_columns("aflw", "face_size", (("full", "Full"), ("frontal", "Frontal")))),
    )),
    5: TableSpec(5, "table5_wflw", "Table 5: NME (%) on WFLW (test set and subsets)", "method", (
        Block("", _subset_columns("wflw", "inter_ocular", _WFLW)),
    )),
    6: TableSpec(6, "table6_gamma", "Table 6: effect of γ1, γ2, γ3 on 300W challenging, NME (%)", "gammas", (
        Block("", (Column("300W challenging", "300w", "challenging", "inter_pupil"),)),
    )),
    7: TableSpec(7, "table7_excitations", "Table 7: number of excitation blocks P, NME (%)", "excitations", (
        Block("", (Column("300W challenging", "300w", "challenging", "inter_pupil"),
                   Column("AFLW full", "aflw", "full", "face_size"),
                   Column("WFLW test", "wflw", "full", "inter_ocular"))),
    )),
}


@dataclass
class Cell:
    """Paper value, our per-seed values and per-face values (averaged over seeds) for one (row, column)."""

    paper: float | None = None
    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    faces: np.ndarray | None = None  # per-face value (percent), mean over the seeds; same face order in a table
    face_ids: np.ndarray | None = None
    x_mean_shape: float | None = None  # our mean ÷ the mean-shape reference's mean in this column

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def sd(self) -> float | None:
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def t(self) -> Interval | None:
        """95 % Student-t interval over seeds; None with one seed (unavailable, not zero width)."""
        return t_interval(self.values)

    @property
    def bootstrap(self) -> Interval | None:
        """95 % BCa bootstrap interval over the test faces (per-face values averaged over seeds)."""
        return None if self.faces is None else bootstrap_interval(self.faces)

    @property
    def delta(self) -> float | None:
        return None if self.paper is None or self.mean is None else self.mean - self.paper

    @property
    def delta_pct(self) -> float | None:
        return None if self.delta is None or self.paper == 0 else 100.0 * self.delta / self.paper


@dataclass
class Row:
    """One method (or γ / P setting): the paper's numbers, ours, or both."""

    key: Hashable
    label: str
    cite: str = ""
    in_paper: bool = False
    reference: bool = False  # the mean-shape reference row
    experiments: list[str] = field(default_factory=list)
    recipes: dict[str, str] = field(default_factory=dict)  # run name -> recipe summary
    computes: dict[str, RunCompute] = field(default_factory=dict)  # run name -> compute
    cells: dict[Column, Cell] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool:
        return any(cell.values for cell in self.cells.values())


@dataclass
class TableResult:
    """A fully computed table, ready to render in any format (``ccdn.report.analysis`` adds the tests)."""

    spec: TableSpec
    synthetic: bool
    blocks: list[tuple[Block, list[Row]]]
    caption: str
    notes: list[str]
    comparisons: list = field(default_factory=list)  # ccdn.report.analysis.Comparison
    verdicts: list = field(default_factory=list)  # ccdn.report.analysis.Verdict

    def rows(self) -> list[Row]:
        """Every row once, in block order (a row object belongs to one block)."""
        return [row for _, rows in self.blocks for row in rows]

    def computes(self) -> list[RunCompute]:
        return [c for row in self.rows() for c in row.computes.values()]


# ----------------------------------------------------------------------------------------------------- building


def build_table(grid: Any, number: int, reference: PaperReference | None = None) -> TableResult:
    """Compute Table ``number`` (2-7) from the grid's run outputs and the paper's numbers."""
    if number not in TABLE_SPECS:
        raise ReportError(f"no table {number}: the paper's tables are {sorted(TABLE_SPECS)}")
    spec = TABLE_SPECS[number]
    reference = reference or load_reference()
    experiments = [e for e in grid.experiments if f"table{number}" in e.tables]
    metrics_seen: list[dict] = []
    notes: list[str] = []
    blocks = [(block, _block_rows(grid, spec, block, reference, experiments, metrics_seen, notes))
              for block in spec.blocks]
    synthetic = is_synthetic(grid, metrics_seen)
    partial = partial_data_notes(metrics_seen)
    notes[:0] = partial
    if not experiments:
        notes.append(f"no experiment of the grid lists table{number}: only the paper's rows are shown")
    if spec.row_kind == "excitations" and any(is_p1_baseline(e) for e in experiments):
        notes.append(P1_FROM_BASELINE)
    caption = _caption(spec, reference, synthetic)
    return TableResult(spec, synthetic, blocks, " ".join([*partial, caption]) if partial else caption, notes)


def partial_data_notes(metrics: list[dict]) -> list[str]:
    """One line per test set that is a subset of its official release (``ccdn prepare --partial``)."""
    found = {f"{m.get('dataset')} {m.get('split', 'test')}": m["partial"] for m in metrics if m.get("partial")}
    return [f"Partial data: {where}: partial: {int(p['n'])} of {int(p['of'])} faces (not the full release, so "
            f"not comparable with the paper's numbers)." for where, p in sorted(found.items())]


def _block_rows(grid: Any, spec: TableSpec, block: Block, reference: PaperReference, experiments: list,
                metrics_seen: list[dict], notes: list[str]) -> list[Row]:
    rows: dict[Hashable, Row] = {}
    for cell in reference.table(spec.number):
        if block.normaliser not in (None, cell.normaliser):
            continue
        column = _column_for(block, cell)
        if column is None:
            continue
        key = _reference_key(spec, cell)
        row = rows.setdefault(key, Row(key, _display_label(spec, key, cell.row),
                                       reference.cite(spec.number, cell.row), in_paper=True))
        row.cells.setdefault(column, Cell()).paper = cell.value
    paper_keys = list(rows)
    for experiment in experiments:
        key = _experiment_key(grid, spec, experiment)
        row = rows.setdefault(key, Row(key, _display_label(spec, key, experiment.label),
                                       reference=is_reference_model(experiment.model)))
        _fill_row(grid, block, experiment, row, metrics_seen, notes)
    extra = [row for key, row in rows.items() if key not in paper_keys and row.reproduced]
    ordered = [rows[key] for key in paper_keys] + [r for r in extra if not r.reference] + \
        [r for r in extra if r.reference]
    _mean_shape_ratios(block, ordered)
    return ordered


def is_reference_model(model: str) -> bool:
    """Reference (no-learning) models: ``mean_shape``, or any registered model with ``needs_training=False``.

    The registry (which loads every plugin, torch and timm included) is only asked about names that are
    neither the known references nor the known learning models, so a report stays quick to start.
    """
    if model in REFERENCE_MODELS:
        return True
    if model in LEARNING_MODELS or model.startswith("timm/"):
        return False
    from ccdn.models.registry import is_model, model_info

    return is_model(model) and not model_info(model).needs_training


def is_p1_baseline(experiment: Any) -> bool:
    """A Baseline experiment: in Table 7 it is our P = 1 row (the paper's P = 1 cells are its Baseline's)."""
    return experiment.model == "baseline"


def _mean_shape_ratios(block: Block, rows: list[Row]) -> None:
    """Fill ``x_mean_shape`` of every learning row from the reference row of the same block."""
    reference = next((row for row in rows if row.reference and row.reproduced), None)
    if reference is None:
        return
    for row in rows:
        if row.reference:
            continue
        for column, cell in row.cells.items():
            floor = reference.cells.get(column)
            if cell.values and floor is not None and floor.values and floor.mean:
                cell.x_mean_shape = cell.mean / floor.mean


def _column_for(block: Block, cell: ReferenceCell) -> Column | None:
    for column in block.columns:
        if (column.dataset, column.subset, column.metric, column.normaliser) == (
                cell.dataset, cell.column, cell.metric, cell.normaliser):
            return column
    return None


def _fill_row(grid: Any, block: Block, experiment: Any, row: Row, metrics_seen: list[dict], notes: list[str]) -> None:
    runs = [run for run in grid.runs if run.experiment.id == experiment.id]
    for column in block.columns:
        if column.dataset not in experiment.evaluate:
            continue
        cell = row.cells.setdefault(column, Cell())
        if cell.values:
            notes.append(f"{column.header}: experiment '{experiment.id}' also matches row '{row.label}', "
                         f"already filled by '{row.experiments[0]}'; it is not pooled")
            continue
        for run in runs:
            metrics = load_metrics(grid, run.name, column.dataset)
            metrics_seen.append(metrics)
            cell.values.append(metric_value(metrics, column.subset, column.metric, column.normaliser))
            cell.runs.append(run.name)
            row.recipes.setdefault(run.name, recipe_summary(load_run_config(grid, run.name)))
        if runs:
            cell.face_ids, cell.faces = seed_averaged_face_values(
                grid, cell.runs, column.dataset, column.subset, column.normaliser, column.metric)
        if experiment.id not in row.experiments:
            row.experiments.append(experiment.id)
    for run in runs:
        datasets = [d for d in experiment.evaluate if any(c.dataset == d for c in block.columns)]
        if run.name not in row.computes and datasets:
            row.computes[run.name] = run_compute(grid, run, datasets)


def normalise_label(label: str) -> str:
    """Match key for method names: 'DU-Net', 'du net' and 'DUNet' are the same method."""
    return re.sub(r"[^0-9a-z]", "", label.casefold())


def _reference_key(spec: TableSpec, cell: ReferenceCell) -> Hashable:
    if spec.row_kind == "gammas":
        return ("gammas", _round(cell.gammas))
    if spec.row_kind == "excitations":
        return ("P", cell.excitations)
    return ("method", normalise_label(cell.row))


def _experiment_key(grid: Any, spec: TableSpec, experiment: Any) -> Hashable:
    """Row key of an experiment; one without the needed γ / P becomes its own (label-keyed) row."""
    if is_reference_model(experiment.model):
        return ("reference", normalise_label(experiment.label))
    if spec.row_kind == "excitations" and is_p1_baseline(experiment):
        return ("P", 1)
    if spec.row_kind == "gammas":
        gammas = experiment_variant(grid, experiment, "gammas")
        if gammas is not None:
            return ("gammas", _round(gammas))
    elif spec.row_kind == "excitations":
        p = experiment_variant(grid, experiment, "num_excitations")
        if p is not None and int(p) == 1:
            return ("method", normalise_label(CCDN_P1_LABEL))
        if p is not None:
            return ("P", int(p))
    return ("method", normalise_label(experiment.label))


def experiment_variant(grid: Any, experiment: Any, name: str) -> Any:
    """γ or P of an experiment: the grid's derived value, else what its first run's metrics.json records."""
    value = getattr(experiment, name, None)
    if value not in (None, (), []):
        return tuple(value) if name == "gammas" else value
    for run in grid.runs:
        if run.experiment.id == experiment.id and experiment.evaluate:
            value = (load_metrics(grid, run.name, experiment.evaluate[0]).get("variant") or {}).get(name)
            if value not in (None, (), []):
                return tuple(value) if name == "gammas" else value
            break
    return None


def _round(gammas: Sequence[float] | None) -> tuple[float, ...]:
    return tuple(round(float(g), 6) for g in gammas or ())


def _display_label(spec: TableSpec, key: Hashable, label: str) -> str:
    kind, value = key
    if key == ("method", normalise_label(CCDN_P1_LABEL)):
        return CCDN_P1_LABEL
    if kind == "gammas":
        return "γ = (" + ", ".join(f"{g:g}" for g in value) + ")"
    if kind == "P":
        return f"P = {value}"
    return label


def recipe_summary(config: dict) -> str:
    """A short recipe from a run's resolved config (model, input size, stacks, channels, optimiser, limits).

    Epochs, training faces, images seen and optimiser steps come from the run's outputs
    (``ccdn.report.compute``)."""
    model = config.get("model") or {}
    options = model.get("options") or {}
    parts = [str(model.get("name", "?"))]
    if "input_size" in options:
        parts.append(f"{options['input_size']} px")
    if "stacks" in options:
        parts.append(f"{options['stacks']} HG" + (f" × {options['channels']} ch" if "channels" in options else ""))
    optim = config.get("optim") or {}
    if "name" in optim:
        parts.append(f"{str(optim['name']).capitalize()} lr {optim.get('lr', '?')}")
    if "batch_size" in optim:
        parts.append(f"batch {optim['batch_size']}")
    train = config.get("train") or {}
    if train.get("limit_train_images"):
        parts.append(f"≤ {train['limit_train_images']} train images")
    if train.get("max_steps_per_epoch"):
        parts.append(f"≤ {train['max_steps_per_epoch']} steps/epoch")
    return ", ".join(parts)


def _caption(spec: TableSpec, reference: PaperReference, synthetic: bool) -> str:
    where: dict[str, list[str]] = {}  # normaliser -> the blocks (or columns) that use it
    for block in spec.blocks:
        for column in block.columns:
            place = f"{block.title} block" if block.title else column.header
            if place not in where.setdefault(column.normaliser, []):
                where[column.normaliser].append(place)
    if len(where) == 1:
        parts = [f"NME normalised by the {NORMALISER_NAMES[next(iter(where))]}."]
    else:
        parts = ["NME normalised by the " + "; by the ".join(
            f"{NORMALISER_NAMES[norm]} ({', '.join(places)})" for norm, places in where.items()) + "."]
    parts.append("Paper rows as printed; ours: mean over seeds [95 % Student-t interval over seeds; n/a with one "
                 "seed] (n), Δ = ours − paper, Δ% = 100·Δ/paper, × mean shape = ours ÷ the mean-shape reference "
                 "(no learning) in the same column. The CSV adds the sd and a bootstrap interval over test faces; "
                 "paired comparisons and claim verdicts follow the table.")
    if spec.note:
        parts.append(spec.note)
    if synthetic:
        parts.insert(0, f"{SYNTHETIC_MARK.capitalize()}.")
    paper_caption = reference.captions.get(spec.number)
    if paper_caption:
        parts.append(f"Paper caption: “{paper_caption}”")
    return " ".join(parts)


def table_title(result: TableResult) -> str:
    """The title line; a synthetic grid is marked in it so no format can lose the mark."""
    title = result.spec.title + " — paper vs reproduced"
    return f"{title} ({SYNTHETIC_MARK})" if result.synthetic else title


def row_recipe(row: Row) -> str:
    """The recipes of a row's runs, then the deterministic compute (epochs × faces, steps, device; no seconds)."""
    recipes = "; ".join(sorted(set(row.recipes.values())))
    if row.reference:
        recipes = "the mean of the training landmarks in the crop frame, no gradient steps"
    compute = describe(list(row.computes.values()))
    return f"{recipes}; {compute}" if compute else recipes


def recipe_notes(result: TableResult) -> list[str]:
    """One line per reproduced row (recipe, epochs, faces, steps), then what the paper states and what it does not."""
    lines = []
    for row in result.rows():
        if not row.reproduced:
            continue
        line = f"ours — {row.label} ({', '.join(row.experiments)}): {row_recipe(row)}"
        if line not in lines:
            lines.append(line)
    return lines + [PAPER_RECIPE, OUR_RECIPE_CHOICES]


