"""``results/README.md``: a one-screen summary (per table: the claim verdicts, how far our rows are
below the mean-shape floor, the deterministic compute), then what each table and figure is and which
Snakemake rule and command make it. Measured seconds are not here: they are a property of the machine,
not of the results, so ``ccdn report compute`` (``ccdn.report.timings``) writes them to two git-ignored
files that the README names as plain text, never as links (a fresh clone does not hold them); the
reference run's wall clock and the paper grid's estimated GPU-hours are in ``docs/performance.md``.

The rule names are read from ``workflow/`` (the rule whose body calls ``ccdn report table`` etc.), so
the README stays right when rules are renamed; the output file itself is always a valid Snakemake target.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccdn.io import write_text
from ccdn.report import SYNTHETIC_MARK, is_synthetic
from ccdn.report.analysis import analyse, load_claims
from ccdn.report.compute import COMPUTE_REPORT, compute_paths, count_text, run_compute, total
from ccdn.report.curves import LEARNING_STEM, learning_paths
from ccdn.report.learning_check import learning_line
from ccdn.report.figures import CED_FIGURES, FIG8_STEM, figure_paths
from ccdn.report.occlusion import OCCLUSION_STEM, occlusion_paths
from ccdn.report.occlusion_sweep import CAPTION as SWEEP_CAPTION
from ccdn.report.occlusion_sweep import SWEEP_STEM, sweep_paths
from ccdn.report.render import table_paths
from ccdn.report.tables import TABLE_SPECS, TableResult, build_table

FIGURE_CAPTIONS = {
    "fig5": "CED curves of our runs on the 300W challenging subset (inter-pupil NME).",
    "fig7": "CED curves of our runs on AFLW full (face-size NME).",
    "fig8": "Face activation maps of CCDN with two (first row) and four (second row) excitation blocks.",
    LEARNING_STEM: "Validation NME per epoch of the runs of Tables 2, 4 and 5 (log scale), with the mean-shape "
                   "reference as a dashed line.",
    OCCLUSION_STEM: "Occlusion stress: face NME against the share of its points that are occluded (mean shape "
                    "dashed).",
}
FIGURE_ORDER = ("fig5", "fig7", "fig8", LEARNING_STEM, OCCLUSION_STEM)
PERFORMANCE_DOC = Path("docs") / "performance.md"  # in the repository: reference wall clock, paper-grid GPU-hours


@dataclass(frozen=True)
class Product:
    """One table or figure: its files, the command that writes them and the rule that runs it."""

    name: str
    description: str
    files: list[Path]
    command: str
    rule: str
    committed: bool = True  # False: git-ignored output (measured seconds), named as plain text, never linked


def find_rule(workflow_dir: Path, needle: str, prefer: Sequence[str] = ()) -> str:
    """Name of the Snakemake rule whose body contains ``needle``, or "" if none does.

    Among several, the first string of ``prefer`` that some of them contain decides (e.g. the exact
    command ``report figure fig8`` before the output stem), so one rule per figure or one rule with a
    wildcard are both found.
    """
    blocks: list[tuple[str, str]] = []
    files = sorted(Path(workflow_dir).glob("rules/*.smk")) + [Path(workflow_dir) / "Snakefile"]
    for path in files:
        if path.is_file():
            parts = re.split(r"^rule\s+(\w+)\s*:", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
            blocks += list(zip(parts[1::2], parts[2::2], strict=True))
    matches = [(name, body) for name, body in blocks if needle in body]
    for wanted in prefer:
        preferred = [name for name, body in matches if wanted in body]
        if preferred:
            return preferred[0]
    return matches[0][0] if matches else ""


def products(grid: Any, config_path: str, workflow_dir: Path) -> list[Product]:
    """Every table, figure and metrics file the report step makes, in the paper's order."""
    results = Path(grid.results_dir)
    tables_dir, figures_dir, metrics_dir = results / "tables", results / "figures", results / "metrics"
    items = []
    for number, spec in TABLE_SPECS.items():
        if not made(grid, f"table{number}"):
            continue
        items.append(Product(f"Table {number}", spec.title.split(": ", 1)[1], table_paths(tables_dir, number),
                             f"ccdn report table {number} --config {config_path} --out {tables_dir}",
                             find_rule(workflow_dir, "report table", (f"report table {number}", spec.slug))))
    for name in FIGURE_ORDER[:-1]:  # the occlusion figure comes with its table (below)
        if not made(grid, name):
            continue
        files = (learning_paths(figures_dir, metrics_dir) if name == LEARNING_STEM
                 else figure_paths(name, figures_dir, metrics_dir))
        items.append(Product(figure_title(name), FIGURE_CAPTIONS[name], files,
                             f"ccdn report figure {name} --config {config_path} --out {figures_dir}",
                             find_rule(workflow_dir, "report figure",
                                       (f"report figure {name}", _figure_stem(name), f'"{name}"'))))
    items.append(Product("Summary", "Every run's numbers, flat (full detail).",
                         [metrics_dir / "summary.json"],
                         f"ccdn report summary --config {config_path} --out {metrics_dir / 'summary.json'}",
                         find_rule(workflow_dir, "report summary")))
    items.append(Product("Occlusion stress", "NME on occluded vs visible points per method, and against the share "
                         "of occluded points of a face (the robustness claim, measured).",
                         occlusion_paths(tables_dir, figures_dir, metrics_dir),
                         f"ccdn report occlusion --config {config_path} --out {tables_dir}",
                         find_rule(workflow_dir, "report occlusion")))
    if getattr(grid, "occlusion_sweep", None):
        items.append(Product("Occlusion sweep", SWEEP_CAPTION, sweep_paths(figures_dir, metrics_dir),
                             f"ccdn report figure {SWEEP_STEM} --config {config_path} --out {figures_dir}",
                             find_rule(workflow_dir, f"report figure {SWEEP_STEM}")))
    headline = metrics_dir / "headline"
    items.append(Product("Headline", "Our main row per table column, the paper's number and × mean shape, one "
                                     "file per column (`dvc metrics show`).", [headline],
                         f"ccdn report headline --config {config_path} --out {headline}",
                         find_rule(workflow_dir, "report headline")))
    items.append(Product("Compute (measured)", "Training and evaluation seconds per run, summed per table and figure, "
                         "with the device: written by every run, git-ignored (they measure the machine).",
                         compute_paths(results), f"ccdn report compute --config {config_path} --out "
                         f"{results / COMPUTE_REPORT}", find_rule(workflow_dir, "report compute"), committed=False))
    return items


def made(grid: Any, name: str) -> bool:
    """Whether the grid makes a table ('table3') or paper figure ('fig7'): ``ccdn.grid``'s ``tables`` and
    ``figures`` say so (a grid object without them makes everything); the other outputs are always made."""
    listed = getattr(grid, "tables" if name.startswith("table") else "figures", None)
    if listed is None or not (name.startswith("table") or name in ("fig5", "fig7", "fig8")):
        return True
    return name in listed


def figure_title(name: str) -> str:
    """'Fig. 5', 'Learning curves', 'Occlusion stress'."""
    return {LEARNING_STEM: "Learning curves", OCCLUSION_STEM: "Occlusion stress"}.get(name, f"Fig. {name[3:]}")


def _figure_stem(name: str) -> str:
    if name in (LEARNING_STEM, OCCLUSION_STEM):
        return name
    return CED_FIGURES[name].stem if name in CED_FIGURES else FIG8_STEM


def _link(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def table_results(grid: Any, claims: Any = None) -> list[TableResult]:
    """Every table the grid feeds, with its comparisons and verdicts."""
    loaded = load_claims(claims)
    return [analyse(build_table(grid, number), loaded) for number in TABLE_SPECS
            if any(f"table{number}" in e.tables for e in grid.experiments)]


def figure_evaluations(grid: Any, name: str) -> list[tuple[Any, str]]:
    """(run, dataset) pairs a figure is drawn from: ``ccdn.grid``'s ``figure_evaluations`` when the grid has
    it (Fig. 8: the P = 2 and P = 4 runs), else the runs of the figure's table on its dataset."""
    if name == LEARNING_STEM:
        return [(run, run.experiment.train) for run in grid.runs
                if set(run.experiment.tables) & {"table2", "table4", "table5"}]
    if callable(getattr(grid, "figure_evaluations", None)):
        return list(grid.figure_evaluations(name))
    table, dataset = {"fig5": ("table2", "300w"), "fig7": ("table4", "aflw"), "fig8": ("table7", "300w")}[name]
    return [(run, dataset) for run in grid.runs if table in run.experiment.tables and dataset in run.experiment.evaluate]


def figure_computes(grid: Any) -> dict[str, list]:
    """Figure title -> the deterministic compute of the (run, dataset) pairs it is drawn from."""
    computes = {}
    for name in (n for n in FIGURE_ORDER[:-1] if made(grid, n)):
        pairs = figure_evaluations(grid, name)
        if pairs:
            computes[figure_title(name)] = [run_compute(grid, run, [dataset]) for run, dataset in pairs]
    return computes


def performance_reference(base: Path, repository: Path) -> str:
    """``docs/performance.md`` as a link from ``base`` when the repository holding the workflow has it,
    else as plain text (a results folder outside a checkout links nothing it does not hold)."""
    doc = repository / PERFORMANCE_DOC
    return f"[{PERFORMANCE_DOC.as_posix()}]({_link(doc, base)})" if doc.is_file() else f"`{PERFORMANCE_DOC.as_posix()}`"


def measured_lines(grid: Any, base: Path, workflow_dir: Path) -> list[str]:
    """Where this run's measured seconds are (plain text: git-ignored) and where the reference numbers are."""
    repository = Path(workflow_dir).parent  # the checkout holding the workflow (and docs/)
    report, data = (_link(p, repository) for p in compute_paths(grid.results_dir))  # from the repository root
    performance = performance_reference(base, repository)
    rule = find_rule(workflow_dir, "report compute") or "compute"
    return [f"Measured training and evaluation seconds per run, table and figure of this run are written to "
            f"`{report}` (data: `{data}`) by the rule `{rule}`; they are git-ignored, not committed, because "
            "wall-clock seconds are a property of the machine, not of the results, and change on every rerun. "
            f"The reference run's wall clock (the embedded default on 2 CPU cores) is in {performance}, with the "
            "estimated GPU-hours per table of config/paper.yaml (a FLOP-based estimate: no GPU throughput has "
            "been measured yet).", ""]


def summary_lines(grid: Any, claims: Any = None, base: Path = Path("results"),
                  workflow_dir: Path = Path("workflow")) -> list[str]:
    """The one-screen summary: per table the verdicts, the worst ratio to the mean shape and the compute
    (deterministic: runs, images seen, optimiser steps; the measured seconds are named, not shown)."""
    results = table_results(grid, claims)
    out = ["## Summary", "",
           "| Table | Claims of the paper: verdict on our runs | Worst × mean shape | Runs | Images seen | "
           "Optimiser steps |", "|---|---|---:|---:|---:|---:|"]
    for result in results:
        verdicts = "; ".join(f"{v.claim.id}: **{v.status}**" for v in result.verdicts) or "–"
        ratios = [c.x_mean_shape for row in result.rows() for c in row.cells.values() if c.x_mean_shape is not None]
        worst = f"×{max(ratios):.2f}" if ratios else "–"
        compute = total(result.computes())
        link = _link(Path(grid.results_dir) / "tables" / f"{result.spec.slug}.md", base)
        out.append(f"| [{result.spec.title.split(':')[0]}]({link}) | {verdicts} | {worst} | "
                   f"{compute.runs} | {count_text(compute.images_seen)} | {count_text(compute.steps)} |")
    figures = [f"{title}: {summed.runs} runs, {count_text(summed.images_seen)} images seen, "
               f"{count_text(summed.steps)} optimiser steps"
               for title, summed in ((t, total(c)) for t, c in figure_computes(grid).items())]
    if figures:
        out += ["", "Figures (the runs each is drawn from): " + "; ".join(figures) + "."]
    learning = learning_line(grid)
    if learning:
        out += ["", learning]
    everything = total(c for result in results for c in result.computes())
    devices = ", ".join(everything.devices) or "unrecorded device"
    out += ["", f"All tables: {everything.runs} distinct runs, {count_text(everything.images_seen)} images seen "
                f"(epochs × training faces), {count_text(everything.steps)} optimiser steps ({devices}; summed over "
                "runs). Verdicts: reproduced = every 95 % "
                "interval of the claimed differences is below zero; not reproduced = one is above zero; "
                "inconclusive = one crosses zero (config/claims.yaml, details under each table). "
                "× mean shape = our NME ÷ the NME of predicting the mean training shape (below 1: learned "
                "something); worst = the largest over our learning rows in any column of the table (COFW-68 is "
                "scored with the 300W models).", ""]
    return out + measured_lines(grid, base, workflow_dir)


def render_readme(grid: Any, out_path: Path, config_path: str = "config/config.yaml",
                  workflow_dir: Path = Path("workflow"), claims: Any = None) -> str:
    """The README text (see module docstring)."""
    base = Path(out_path).parent
    synthetic = is_synthetic(grid)
    runs = list(grid.runs)
    out = ["# Results: CCDN reproduction (Wan et al., Neural Networks 2021)", ""]
    if synthetic:
        out += [f"> **{SYNTHETIC_MARK.capitalize()}.** These files come from the embedded synthetic default "
                f"(`{config_path}`): they show that the pipeline works, not what CCDN achieves. Run "
                "`snakemake --cores all --profile slurm` (config/paper.yaml) for the real experiments.", ""]
    out += [f"Generated by `ccdn report readme --config {config_path} --out {out_path}`; do not edit by hand.",
            f"Grid `{config_path}`: {len(grid.experiments)} experiments × seeds {list(grid.seeds)} = "
            f"{len(runs)} runs. Everything is rebuilt by `snakemake --cores all` (or `dvc repro`); any single file "
            "by `snakemake --cores all <file>`. Paper numbers: `config/paper_reference.yaml`.", ""]
    out += summary_lines(grid, claims, base, workflow_dir)
    out += ["## Outputs", "", "| Output | Content | Files | Snakemake rule | Command |", "|---|---|---|---|---|"]
    for item in products(grid, config_path, workflow_dir):
        files = " · ".join(f"[{p.name}]({_link(p, base)})" if item.committed
                           else f"`{_link(p, Path(workflow_dir).parent)}` (git-ignored)" for p in item.files)
        rule = f"`{item.rule}`" if item.rule else "(not found in workflow/)"
        out.append(f"| {item.name} | {item.description} | {files} | {rule} | `{item.command}` |")
    out += ["", "## Figures", ""]
    figures_dir = Path(grid.results_dir) / "figures"
    for name in (n for n in FIGURE_ORDER if made(grid, n)):
        png = figures_dir / f"{_figure_stem(name)}.png"
        mark = f" ({SYNTHETIC_MARK})" if synthetic else ""
        caption = f"{figure_title(name)}: {FIGURE_CAPTIONS[name]}{mark}"
        if png.is_file():
            out += [f"![{caption}]({_link(png, base)})", "", f"*{caption}*", ""]
        else:
            out += [f"*{caption}* — not generated yet: `snakemake --cores all {png}`", ""]
    if getattr(grid, "occlusion_sweep", None):  # always synthetic faces: its caption says so
        png = figures_dir / f"{SWEEP_STEM}.png"
        out += ([f"![{SWEEP_CAPTION}]({_link(png, base)})", "", f"*{SWEEP_CAPTION}*", ""] if png.is_file() else
                [f"*{SWEEP_CAPTION}* — not generated yet: `snakemake --cores all {png}`", ""])
    out += ["## Runs", "", "| Run | Label | Model | Trained on | Evaluated on | Tables |", "|---|---|---|---|---|---|"]
    for run in runs:
        e = run.experiment
        out.append(f"| `{run.name}` | {e.label} | {e.model} | {e.train} | {', '.join(e.evaluate)} | "
                   f"{', '.join(e.tables)} |")
    return "\n".join(out) + "\n"


def write_readme(grid: Any, out_path: Path | str, config_path: str = "config/config.yaml",
                 workflow_dir: Path | str = Path("workflow"), claims: Any = None) -> Path:
    """Write ``results/README.md`` (atomically)."""
    out_path = Path(out_path)
    return write_text(out_path, render_readme(grid, out_path, config_path, Path(workflow_dir), claims))
