"""Paired comparisons between our rows of a table and verdicts on the paper's claims (``config/claims.yaml``).

Comparisons are made on the same test faces (per-face values averaged over seeds): for a method table
CCDN − FCDN, FCDN − Baseline, CCDN − Baseline, then every other row of ours − CCDN; for Tables 6 and
7 every row of ours − the paper's chosen setting (γ = (0.025, 0.01, 0.05), P = 4). Each gives the mean
difference, its 95 % paired-bootstrap interval and the Wilcoxon signed-rank p-value, Holm-adjusted
over all comparisons of the table (one family per table).

A claim is a set of requirements "this difference is negative" (lower NME is better). Each
difference gets one 95 % interval that covers both sources of noise: the hull of the paired
bootstrap over test faces and, with two or more seeds, the Student-t interval of the per-seed
differences (seed s of A minus seed s of B). Verdict: **reproduced** when every interval lies below
zero, **not reproduced** when some interval lies above zero, **inconclusive** otherwise (some
interval crosses zero), **not tested** when the grid has none of the rows or columns the claim needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ccdn.report import ReportError
from ccdn.report.stats import Interval, Paired, holm, paired_comparison, t_interval
from ccdn.report.tables import (
    DEFAULT_EXCITATIONS,
    DEFAULT_GAMMAS,
    Block,
    Cell,
    Column,
    Row,
    TableResult,
    normalise_label,
)

CLAIMS_NAME = "claims.yaml"
CLAIM_KINDS = ("order", "best", "beats_paper")
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not tested")
MAIN_PAIRS = (("ccdn", "fcdn"), ("fcdn", "baseline"), ("ccdn", "baseline"))


@dataclass(frozen=True)
class Comparison:
    """Row ``a`` minus row ``b`` in one column, on the same faces."""

    block: str
    column: Column
    a: str
    b: str
    paired: Paired
    p_holm: float


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as data: which table, which rows (best first) and which columns."""

    id: str
    table: int
    text: str
    kind: str
    rows: tuple[str, ...]
    columns: tuple[str, ...] = ()  # column headers; empty = every column where the rows have numbers


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str
    detail: str


# --------------------------------------------------------------------------------------------- comparisons


def _faces(cell: Cell | None) -> np.ndarray | None:
    return None if cell is None or not cell.values else cell.faces


def _paired(a: Cell | None, b: Cell | None) -> Paired | None:
    """A − B on the same faces, or None when either has no per-face values or the faces differ."""
    fa, fb = _faces(a), _faces(b)
    if fa is None or fb is None or fa.shape != fb.shape:
        return None
    if a.face_ids is not None and b.face_ids is not None and not np.array_equal(a.face_ids, b.face_ids):
        return None
    return paired_comparison(fa, fb)


def comparison_pairs(result: TableResult, rows: list[Row]) -> list[tuple[Row, Row]]:
    """Which rows of ours are compared in one block (see the module docstring)."""
    ours = [row for row in rows if row.reproduced]
    if result.spec.row_kind == "method":
        by_label = {normalise_label(row.label): row for row in ours}
        pairs = [(by_label[a], by_label[b]) for a, b in MAIN_PAIRS if a in by_label and b in by_label]
        if "ccdn" in by_label:
            pairs += [(row, by_label["ccdn"]) for row in ours if normalise_label(row.label) not in
                      {"ccdn", "fcdn", "baseline"}]
        return pairs
    chosen_key = ("gammas", DEFAULT_GAMMAS) if result.spec.row_kind == "gammas" else ("P", DEFAULT_EXCITATIONS)
    chosen = next((row for row in ours if row.key == chosen_key), None)
    return [] if chosen is None else [(row, chosen) for row in ours if row is not chosen]


def compare(result: TableResult) -> list[Comparison]:
    """Every paired comparison of the table, Holm-adjusted as one family."""
    found: list[tuple[Block, Column, Row, Row, Paired]] = []
    for block, rows in result.blocks:
        for a, b in comparison_pairs(result, rows):
            for column in block.columns:
                paired = _paired(a.cells.get(column), b.cells.get(column))
                if paired is not None:
                    found.append((block, column, a, b, paired))
    adjusted = holm([paired.p_value for *_, paired in found]) if found else []
    return [Comparison(block.title, column, a.label, b.label, paired, p)
            for (block, column, a, b, paired), p in zip(found, adjusted, strict=True)]


# -------------------------------------------------------------------------------------------------- claims


def default_claims_path() -> Path:
    """``config/claims.yaml`` of the working directory, else the one of this checkout."""
    local = Path("config") / CLAIMS_NAME
    return local if local.is_file() else Path(__file__).resolve().parents[2] / "config" / CLAIMS_NAME


def load_claims(path: Path | str | None = None) -> list[Claim]:
    """Read and validate the claims file; a bad entry raises ``ReportError`` naming the file and the entry."""
    path = Path(path) if path is not None else default_claims_path()
    if not path.is_file():
        raise ReportError(f"{path}: the paper's claims are missing; restore config/{CLAIMS_NAME} from the repository")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ReportError(f"{path}: expected a mapping with a 'claims' list (see the header of config/{CLAIMS_NAME})")
    claims = [_parse_claim(path, index, entry) for index, entry in enumerate(data["claims"])]
    ids = [claim.id for claim in claims]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ReportError(f"{path}: claim ids {repeated} are used more than once; make each id unique")
    return claims


def _parse_claim(path: Path, index: int, entry: Any) -> Claim:
    where = f"{path}: claims[{index}]"
    allowed = {"id", "table", "claim", "kind", "rows", "columns"}
    if not isinstance(entry, dict) or not {"id", "table", "claim", "kind", "rows"} <= set(entry) \
            or set(entry) - allowed:
        raise ReportError(f"{where}: expected keys id, table, claim, kind, rows (and optionally columns), "
                          f"got {entry!r}")
    if entry["kind"] not in CLAIM_KINDS:
        raise ReportError(f"{where}: kind {entry['kind']!r} is not one of {list(CLAIM_KINDS)}")
    if entry["table"] not in range(2, 8):
        raise ReportError(f"{where}: table must be 2-7, got {entry['table']!r}")
    rows, columns = entry["rows"], entry.get("columns", [])
    if not isinstance(rows, list) or not rows or (entry["kind"] == "order" and len(rows) < 2):
        raise ReportError(f"{where}: rows must be a list of row labels (two or more, best first, for 'order')")
    if not isinstance(columns, list):
        raise ReportError(f"{where}: columns must be a list of column headers")
    return Claim(str(entry["id"]), int(entry["table"]), str(entry["claim"]), str(entry["kind"]),
                 tuple(str(r) for r in rows), tuple(str(c) for c in columns))


def _find(rows: list[Row], label: str) -> Row | None:
    wanted = normalise_label(label)
    return next((row for row in rows if normalise_label(row.label) == wanted and row.reproduced), None)


def _columns(claim: Claim, block: Block) -> list[Column]:
    wanted = {c.casefold() for c in claim.columns}
    return [c for c in block.columns if not wanted or c.header.casefold() in wanted]


def _requirements(claim: Claim, result: TableResult) -> list[tuple[str, Interval]]:
    """(description, interval of a difference that must be negative) for every testable part of the claim."""
    found: list[tuple[str, Interval]] = []
    for block, rows in result.blocks:
        where = f"{block.title}: " if block.title else ""
        for column in _columns(claim, block):
            for a, b in _claim_pairs(claim, rows):
                ca, cb = a.cells.get(column), b.cells.get(column)
                paired = _paired(ca, cb)
                if paired is None:
                    continue
                seeds = seed_difference_interval(ca, cb)
                interval = paired.interval if seeds is None else hull(paired.interval, seeds)
                text = f"faces {_iv(paired.interval)}" + ("" if seeds is None else f", seeds {_iv(seeds)}")
                found.append((f"{where}{a.label} − {b.label} on {column.header}: {paired.delta:+.2f} ({text})",
                              interval))
            if claim.kind == "beats_paper":
                found += _beats_paper(claim, rows, column, where)
    return found


def _iv(interval: Interval) -> str:
    return f"[{interval.low:+.2f}, {interval.high:+.2f}]"


def hull(*intervals: Interval) -> Interval:
    """The smallest interval containing all of them (a difference must clear every source of noise)."""
    return Interval(min(i.low for i in intervals), max(i.high for i in intervals))


def seed_difference_interval(a: Cell, b: Cell) -> Interval | None:
    """t-interval of the per-seed differences (runs in seed order); None with fewer than two common seeds."""
    seeds_a = [name.rsplit("-s", 1)[-1] for name in a.runs]
    seeds_b = [name.rsplit("-s", 1)[-1] for name in b.runs]
    if seeds_a != seeds_b or len(seeds_a) < 2:
        return None
    return t_interval([x - y for x, y in zip(a.values, b.values, strict=True)])


def _claim_pairs(claim: Claim, rows: list[Row]) -> list[tuple[Row, Row]]:
    if claim.kind == "order":
        found = [_find(rows, label) for label in claim.rows]
        return [(a, b) for a, b in zip(found, found[1:]) if a is not None and b is not None]
    if claim.kind == "best":
        best = _find(rows, claim.rows[0])
        others = [row for row in rows if row.in_paper and row.reproduced and row is not best]
        return [] if best is None else [(best, other) for other in others]
    return []


def _beats_paper(claim: Claim, rows: list[Row], column: Column, where: str) -> list[tuple[str, Interval]]:
    """Our row's interval minus the best number the paper prints for any other method in the column."""
    ours = _find(rows, claim.rows[0])
    cell = None if ours is None else ours.cells.get(column)
    if cell is None or not cell.values:
        return []
    printed = [row.cells[column].paper for row in rows if row is not ours and row.in_paper
               and column in row.cells and row.cells[column].paper is not None]
    intervals = [i for i in (cell.t, cell.bootstrap) if i is not None]
    if not printed or not intervals:
        return []
    interval = hull(*intervals)
    best = min(printed)
    kind = "hull of t over seeds and bootstrap over faces" if cell.t is not None else "bootstrap over faces"
    return [(f"{where}{ours.label} (ours) − best other printed ({best:.2f}) on {column.header}: "
             f"{cell.mean - best:+.2f} [{interval.low - best:+.2f}, {interval.high - best:+.2f}] ({kind})",
             Interval(interval.low - best, interval.high - best))]


def verdict(claim: Claim, result: TableResult) -> Verdict:
    """Check one claim on a computed table (see the module docstring for the rule)."""
    requirements = _requirements(claim, result)
    if not requirements:
        return Verdict(claim, "not tested", "the grid has no runs for the rows/columns this claim needs")
    against = [text for text, interval in requirements if interval.low > 0.0]
    crossing = [text for text, interval in requirements if interval.low <= 0.0 <= interval.high]
    if against:
        return Verdict(claim, "not reproduced", f"{len(against)} of {len(requirements)} differences are "
                                                f"significantly positive, e.g. {against[0]}")
    if crossing:
        return Verdict(claim, "inconclusive", f"{len(crossing)} of {len(requirements)} intervals cross zero, "
                                              f"e.g. {crossing[0]}")
    weakest = max(requirements, key=lambda item: item[1].high)[0]
    return Verdict(claim, "reproduced", f"all {len(requirements)} intervals below zero; closest: {weakest}")


def analyse(result: TableResult, claims: list[Claim]) -> TableResult:
    """Add the paired comparisons and the verdicts of the table's claims to ``result`` (returned)."""
    result.comparisons = compare(result)
    result.verdicts = [verdict(claim, result) for claim in claims if claim.table == result.spec.number]
    return result
