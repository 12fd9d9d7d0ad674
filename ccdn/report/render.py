"""Rendering a computed table as Markdown, CSV (long format) and LaTeX, and writing the three files.

The Markdown and LaTeX show, per row of ours, the mean over seeds with its 95 % Student-t interval
over seeds ("n/a" with one seed: no interval, rather than a zero-width one), Δ against the paper and
"× mean shape"; then the recipe notes, the paired comparisons and the claim verdicts. The CSV holds
everything, including the sd and the bootstrap interval over test faces.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

from ccdn.io import write_text
from ccdn.report.analysis import analyse, load_claims
from ccdn.report.compute import COMPUTE_REPORT, count_text, total
from ccdn.report.reference import PaperReference, load_reference
from ccdn.report.stats import Interval
from ccdn.report.tables import TABLE_SPECS, Block, Cell, Row, TableResult, build_table, recipe_notes, row_recipe, \
    table_title


def _fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def interval_text(interval: Interval | None) -> str:
    """'[5.93, 6.27]', or '[n/a]' where no interval exists (one seed)."""
    return "[n/a]" if interval is None else f"[{_fmt(interval.low)}, {_fmt(interval.high)}]"


def _ours_text(cell: Cell | None, with_n: bool) -> str:
    if cell is None or not cell.values:
        return "–"
    return f"{_fmt(cell.mean)} {interval_text(cell.t)}" + (f" (n={cell.n})" if with_n else "")


def _delta_text(cell: Cell | None) -> str:
    if cell is None or cell.delta is None:
        return "–"
    pct = f" ({_fmt(cell.delta_pct, 1, signed=True)}%)" if cell.delta_pct is not None else ""
    return _fmt(cell.delta, signed=True) + pct


def _ratio_text(cell: Cell | None) -> str:
    return "–" if cell is None or cell.x_mean_shape is None else f"×{cell.x_mean_shape:.2f}"


def display_rows(result: TableResult, block: Block, rows: list[Row]) -> list[tuple[str, str, list[str]]]:
    """(method, source, cell texts) lines: paper row, then ours, Δ and × mean shape right below it."""
    lines: list[tuple[str, str, list[str]]] = []
    for row in rows:
        name = f"{row.label} ({row.cite})" if row.cite else row.label
        if row.in_paper:
            paper = [_fmt(row.cells[c].paper) if c in row.cells and row.cells[c].paper is not None else "–"
                     for c in block.columns]
            lines.append((name, "paper", paper))
        if not row.reproduced:
            continue
        counts = {row.cells[c].n for c in block.columns if c in row.cells and row.cells[c].values}
        uniform = len(counts) == 1
        kind = "ours" if row.in_paper else ("ours, reference" if row.reference else "ours, not in paper")
        source = kind + (f" (n={counts.pop()})" if uniform else "")
        lines.append((name, source, [_ours_text(row.cells.get(c), not uniform) for c in block.columns]))
        if row.in_paper:
            lines.append((name, "Δ (Δ%)", [_delta_text(row.cells.get(c)) for c in block.columns]))
        if any(row.cells[c].x_mean_shape is not None for c in block.columns if c in row.cells):
            lines.append((name, "× mean shape", [_ratio_text(row.cells.get(c)) for c in block.columns]))
    return lines


def comparison_lines(result: TableResult) -> list[str]:
    """One line per paired comparison: A − B, column, mean Δ [paired bootstrap 95 %], Wilcoxon p, Holm p."""
    lines = []
    for item in result.comparisons:
        where = f"{item.block}, " if item.block else ""
        paired = item.paired
        lines.append(f"{item.a} − {item.b} ({where}{item.column.header}): {paired.delta:+.2f} "
                     f"[{paired.interval.low:+.2f}, {paired.interval.high:+.2f}], n = {paired.n} faces, "
                     f"Wilcoxon p = {_p(paired.p_value)}, Holm p = {_p(item.p_holm)}")
    return lines


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else "< 1e-4"


COMPARISONS_NOTE = ("Paired on the same test faces (per-face values averaged over seeds): mean difference, "
                    "95 % paired-bootstrap (BCa) interval, two-sided Wilcoxon signed-rank p; Holm correction over "
                    "all comparisons of this table. Negative = the first method has the lower error.")


def verdict_lines(result: TableResult) -> list[str]:
    return [f"**{v.status}** — {v.claim.text} (`{v.claim.id}`): {v.detail}" for v in result.verdicts]


def compute_line(result: TableResult) -> str:
    """Deterministic compute behind the table's rows of ours (distinct runs); the seconds are elsewhere."""
    summed = total(result.computes())
    if not summed.runs:
        return ""
    devices = f" on {', '.join(summed.devices)}" if summed.devices else ""
    return (f"compute: {summed.runs} runs, {count_text(summed.images_seen)} images seen, "
            f"{count_text(summed.steps)} optimiser steps{devices} (sums over runs; measured seconds, which change "
            f"between reruns: {COMPUTE_REPORT} in the results folder)")


def render_markdown(result: TableResult) -> str:
    """GitHub Markdown: title, caption, one pipe table per block, recipe notes, comparisons, verdicts."""
    out = [f"# {table_title(result)}", "", f"*{result.caption}*", ""]
    for block, rows in result.blocks:
        if block.title:
            out += [f"**{block.title}**", ""]
        out.append("| Method | Source | " + " | ".join(c.header for c in block.columns) + " |")
        out.append("|---|---|" + "---:|" * len(block.columns))
        for name, source, cells in display_rows(result, block, rows):
            out.append(f"| {name} | {source} | " + " | ".join(cells) + " |")
        out.append("")
    if result.verdicts:
        out += ["**Claims of the paper, checked on our runs.**", ""] + [f"- {v}" for v in verdict_lines(result)]
        out.append("")
    out += ["**Recipe notes.**", ""] + [f"- {line}" for line in recipe_notes(result)]
    out += [f"- {line}" for line in [compute_line(result)] if line]
    out += [f"- note: {note}" for note in result.notes]
    if result.comparisons:
        out += ["", "**Paired comparisons.** " + COMPARISONS_NOTE, ""] + [f"- {c}" for c in comparison_lines(result)]
    return "\n".join(out) + "\n"


CSV_FIELDS = ("table", "kind", "block", "method", "citation", "in_paper", "dataset", "subset", "metric",
              "normaliser", "paper", "mean", "sd", "n", "t_low", "t_high", "boot_low", "boot_high", "delta",
              "delta_pct", "x_mean_shape", "p_wilcoxon", "p_holm", "runs", "recipe")


def render_csv(result: TableResult) -> str:
    """Long format, one line per (row, column) (``kind`` = cell), then one per paired comparison
    (``kind`` = paired: ``mean`` is the mean difference, ``boot_*`` its paired-bootstrap interval), with
    '#' comment lines carrying title, caption, notes and verdicts. Read it with
    ``pandas.read_csv(path, comment="#")``.
    """
    buffer = io.StringIO()
    comments = [table_title(result), result.caption] + recipe_notes(result) + [compute_line(result)] + \
        result.notes + verdict_lines(result)
    for line in comments:
        if line:
            buffer.write(f"# {line}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for block, rows in result.blocks:
        for row in rows:
            recipe = row_recipe(row) if row.reproduced else ""
            for column in block.columns:
                cell = row.cells.get(column)
                if cell is None or (cell.paper is None and not cell.values):
                    continue
                t, boot = cell.t, cell.bootstrap
                writer.writerow([
                    result.spec.number, "cell", block.title, row.label, row.cite, int(row.in_paper), column.dataset,
                    column.subset, column.metric, column.normaliser, _num(cell.paper), _num(cell.mean),
                    _num(cell.sd), cell.n, _num(t and t.low), _num(t and t.high), _num(boot and boot.low),
                    _num(boot and boot.high), _num(cell.delta), _num(cell.delta_pct), _num(cell.x_mean_shape),
                    "", "", " ".join(cell.runs), recipe,
                ])
    for item in result.comparisons:
        c, paired = item.column, item.paired
        writer.writerow([result.spec.number, "paired", item.block, f"{item.a} − {item.b}", "", 0, c.dataset,
                         c.subset, c.metric, c.normaliser, "", _num(paired.delta), "", paired.n, "", "",
                         _num(paired.interval.low), _num(paired.interval.high), "", "", "",
                         _sci(paired.p_value), _sci(item.p_holm), "", ""])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _sci(value: float) -> str:
    return f"{value:.4g}"


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
    notes = recipe_notes(result) + [line for line in [compute_line(result)] if line] + result.notes
    notes += [v.replace("**", "") for v in verdict_lines(result)]
    out += [tex_escape(line) + r"\\" for line in notes]
    out += [r"\end{flushleft}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_table(grid: Any, number: int, out_dir: Path | str, reference: PaperReference | Path | str | None = None,
                claims: Path | str | None = None) -> list[Path]:
    """Build Table ``number`` and write ``<out_dir>/table{N}_<slug>.{md,csv,tex}``; returns the paths."""
    if not isinstance(reference, PaperReference):
        reference = load_reference(reference)
    result = analyse(build_table(grid, number, reference), load_claims(claims))
    for note in result.notes:
        print(f"table {number}: note: {note}", file=sys.stderr)
    out_dir = Path(out_dir)
    renderers = {"md": render_markdown, "csv": render_csv, "tex": render_latex}
    return [write_text(out_dir / f"{result.spec.slug}.{ext}", render(result))
            for ext, render in renderers.items()]


def table_paths(out_dir: Path | str, number: int) -> list[Path]:
    """The files ``write_table`` makes for Table ``number`` (for Snakemake outputs and the README)."""
    slug = TABLE_SPECS[number].slug
    return [Path(out_dir) / f"{slug}.{ext}" for ext in ("md", "csv", "tex")]
