"""Tables 2-7: the paper's rows next to ours (mean ± sd over seeds, n, Δ, Δ%), as Markdown, CSV and LaTeX.

Our rows are matched to the paper's rows by key: the method label for Tables 2-5 (case, spaces and
punctuation ignored), γ = (γ1, γ2, γ3) for Table 6 and the number of excitation blocks P for Table 7.
An experiment of ours without a paper row (e.g. a re-implemented baseline) becomes an extra row marked
"not in paper". Δ = ours − paper and Δ% = 100 · Δ / paper; sd is the sample standard deviation (ddof 1)
over seeds, left empty for a single seed.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdn.report import (
    NORMALISER_NAMES,
    SYNTHETIC_MARK,
    ReportError,
    atomic_write_text,
    is_synthetic,
    load_metrics,
    load_run_config,
    metric_value,
)
from ccdn.report.reference import PaperReference, ReferenceCell, load_reference

PAPER_RECIPE = "paper: 128 px, 4 HG, Adam lr 2.5e-4 halved at epochs 40 and 100, P = 4, γ = (0.025, 0.01, 0.05)"
DEFAULT_GAMMAS = (0.025, 0.01, 0.05)


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
    """Paper value and our per-seed values for one (row, column)."""

    paper: float | None = None
    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

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
    experiments: list[str] = field(default_factory=list)
    recipes: dict[str, str] = field(default_factory=dict)  # run name -> recipe summary
    cells: dict[Column, Cell] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool:
        return any(cell.values for cell in self.cells.values())


@dataclass
class TableResult:
    """A fully computed table, ready to render in any format."""

    spec: TableSpec
    synthetic: bool
    blocks: list[tuple[Block, list[Row]]]
    caption: str
    notes: list[str]


# ----------------------------------------------------------------------------------------------------- building


def build_table(grid: Any, number: int, reference: PaperReference | None = None) -> TableResult:
    """Compute Table ``number`` (2-7) from the grid's metrics.json files and the paper's numbers."""
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
    if not experiments:
        notes.append(f"no experiment of the grid lists table{number}: only the paper's rows are shown")
    return TableResult(spec, synthetic, blocks, _caption(spec, reference, synthetic), notes)


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
        row = rows.setdefault(key, Row(key, _display_label(spec, key, experiment.label)))
        _fill_row(grid, block, experiment, row, metrics_seen, notes)
    extra = [row for key, row in rows.items() if key not in paper_keys and row.reproduced]
    return [rows[key] for key in paper_keys] + extra


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
        if experiment.id not in row.experiments:
            row.experiments.append(experiment.id)


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
    if spec.row_kind == "gammas":
        gammas = experiment_variant(grid, experiment, "gammas")
        if gammas is not None:
            return ("gammas", _round(gammas))
    elif spec.row_kind == "excitations":
        p = experiment_variant(grid, experiment, "num_excitations")
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
    if kind == "gammas":
        return "γ = (" + ", ".join(f"{g:g}" for g in value) + ")"
    if kind == "P":
        return f"P = {value}"
    return label


def recipe_summary(config: dict) -> str:
    """A short recipe from a run's resolved config (input size, stacks, channels, epochs, data limits)."""
    model = config.get("model") or {}
    options = model.get("options") or {}
    parts = [str(model.get("name", "?"))]
    if "input_size" in options:
        parts.append(f"{options['input_size']} px")
    if "stacks" in options:
        parts.append(f"{options['stacks']} HG" + (f" × {options['channels']} ch" if "channels" in options else ""))
    optim = config.get("optim") or {}
    if "epochs" in optim:
        parts.append(f"{optim['epochs']} epochs")
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
    parts.append("Paper rows as printed; ours: mean ± sd over seeds (n), Δ = ours − paper, Δ% = 100·Δ/paper.")
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


def recipe_notes(result: TableResult) -> list[str]:
    """One line per reproduced row with the distinct recipes of its runs, then the paper's recipe."""
    lines = []
    for _, rows in result.blocks:
        for row in rows:
            if not row.reproduced:
                continue
            recipes = sorted(set(row.recipes.values()))
            line = f"ours — {row.label} ({', '.join(row.experiments)}): {'; '.join(recipes)}"
            if line not in lines:
                lines.append(line)
    return lines + [PAPER_RECIPE]


# ---------------------------------------------------------------------------------------------------- rendering


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ours_text(cell: Cell | None, with_n: bool) -> str:
    if cell is None or not cell.values:
        return "–"
    text = _fmt(cell.mean) + (f" ± {_fmt(cell.sd)}" if cell.sd is not None else "")
    return text + (f" (n={cell.n})" if with_n else "")


def _delta_text(cell: Cell | None) -> str:
    if cell is None or cell.delta is None:
        return "–"
    pct = f" ({_fmt(cell.delta_pct, 1, signed=True)}%)" if cell.delta_pct is not None else ""
    return _fmt(cell.delta, signed=True) + pct


def display_rows(result: TableResult, block: Block, rows: list[Row]) -> list[tuple[str, str, list[str]]]:
    """(method, source, cell texts) lines: paper row, then ours and Δ right below it."""
    lines: list[tuple[str, str, list[str]]] = []
    for row in rows:
        name = f"{row.label} ({row.cite})" if row.cite else row.label
        if row.in_paper:
            paper = [_fmt(row.cells[c].paper) if c in row.cells and row.cells[c].paper is not None else "–"
                     for c in block.columns]
            lines.append((name, "paper", paper))
        if row.reproduced:
            counts = {row.cells[c].n for c in block.columns if c in row.cells and row.cells[c].values}
            uniform = len(counts) == 1
            source = ("ours" if row.in_paper else "ours, not in paper") + (f" (n={counts.pop()})" if uniform else "")
            lines.append((name, source, [_ours_text(row.cells.get(c), not uniform) for c in block.columns]))
            if row.in_paper:
                lines.append((name, "Δ (Δ%)", [_delta_text(row.cells.get(c)) for c in block.columns]))
    return lines


def render_markdown(result: TableResult) -> str:
    """GitHub Markdown: title, caption, one pipe table per block, notes and recipe notes."""
    out = [f"# {table_title(result)}", "", f"*{result.caption}*", ""]
    for block, rows in result.blocks:
        if block.title:
            out += [f"**{block.title}**", ""]
        out.append("| Method | Source | " + " | ".join(c.header for c in block.columns) + " |")
        out.append("|---|---|" + "---:|" * len(block.columns))
        for name, source, cells in display_rows(result, block, rows):
            out.append(f"| {name} | {source} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["**Recipe notes.**", ""] + [f"- {line}" for line in recipe_notes(result)]
    out += [f"- note: {note}" for note in result.notes]
    return "\n".join(out) + "\n"


CSV_FIELDS = ("table", "block", "method", "citation", "in_paper", "dataset", "subset", "metric", "normaliser",
              "paper", "mean", "sd", "n", "delta", "delta_pct", "runs", "recipe")


def render_csv(result: TableResult) -> str:
    """Long format, one line per (row, column), with '#' comment lines carrying title, caption and notes.

    Read it with ``pandas.read_csv(path, comment="#")``.
    """
    buffer = io.StringIO()
    for line in [table_title(result), result.caption] + recipe_notes(result) + result.notes:
        buffer.write(f"# {line}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for block, rows in result.blocks:
        for row in rows:
            recipe = "; ".join(sorted(set(row.recipes.values())))
            for column in block.columns:
                cell = row.cells.get(column)
                if cell is None or (cell.paper is None and not cell.values):
                    continue
                writer.writerow([
                    result.spec.number, block.title, row.label, row.cite, int(row.in_paper), column.dataset,
                    column.subset, column.metric, column.normaliser, _num(cell.paper), _num(cell.mean),
                    _num(cell.sd), cell.n, _num(cell.delta), _num(cell.delta_pct), " ".join(cell.runs), recipe,
                ])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "γ": r"$\gamma$", "Δ": r"$\Delta$", "≤": r"$\leq$", "×": r"$\times$",
                "−": r"$-$", "·": r"$\cdot$", "“": "``", "”": "''"}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials; keeps the em dash of the synthetic mark as UTF-8 (LaTeX ≥ 2018 reads it)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(result: TableResult) -> str:
    """A booktabs ``table`` float; the caption holds the title (and synthetic mark) and the normalisers."""
    width = max(len(block.columns) for block, _ in result.blocks)
    out = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
           r"\caption{\textbf{" + tex_escape(table_title(result)) + "} " + tex_escape(result.caption) + "}",
           rf"\label{{tab:{result.spec.slug}}}", r"\begin{tabular}{ll" + "r" * width + "}", r"\toprule"]
    for index, (block, rows) in enumerate(result.blocks):
        if index:
            out.append(r"\midrule")
        if block.title:
            out.append(rf"\multicolumn{{{width + 2}}}{{c}}{{\emph{{{tex_escape(block.title)}}}}} \\")
        headers = [tex_escape(c.header) for c in block.columns] + [""] * (width - len(block.columns))
        out += ["Method & Source & " + " & ".join(headers) + r" \\", r"\midrule"]
        for name, source, cells in display_rows(result, block, rows):
            cells = cells + [""] * (width - len(cells))
            out.append(" & ".join(tex_escape(x) for x in [name, source] + cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"\begin{flushleft}\footnotesize"]
    out += [tex_escape(line) + r"\\" for line in recipe_notes(result) + result.notes]
    out += [r"\end{flushleft}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_table(grid: Any, number: int, out_dir: Path | str, reference: PaperReference | Path | str | None = None
                ) -> list[Path]:
    """Build Table ``number`` and write ``<out_dir>/table{N}_<slug>.{md,csv,tex}``; returns the paths."""
    if not isinstance(reference, PaperReference):
        reference = load_reference(reference)
    result = build_table(grid, number, reference)
    for note in result.notes:
        print(f"table {number}: note: {note}", file=sys.stderr)
    out_dir = Path(out_dir)
    renderers = {"md": render_markdown, "csv": render_csv, "tex": render_latex}
    return [atomic_write_text(out_dir / f"{result.spec.slug}.{ext}", render(result))
            for ext, render in renderers.items()]


def table_paths(out_dir: Path | str, number: int) -> list[Path]:
    """The files ``write_table`` makes for Table ``number`` (for Snakemake outputs and the README)."""
    slug = TABLE_SPECS[number].slug
    return [Path(out_dir) / f"{slug}.{ext}" for ext in ("md", "csv", "tex")]
