"""The paper's own numbers (Tables 2-7), loaded from ``config/paper_reference.yaml`` and validated.

Keeping the reference as data, one entry per printed cell, lets the tables put every state-of-the-art
row next to ours and compute deltas without a number ever being typed into code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccdn.report import ReportError

TABLES = (2, 3, 4, 5, 6, 7)
METRICS = ("nme", "failure_rate")
NORMALISERS = ("inter_pupil", "inter_ocular", "face_size")
DATASET_SUBSETS: dict[str, tuple[str, ...]] = {
    "300w": ("common", "challenging", "full"),
    "cofw68": ("full",),
    "aflw": ("full", "frontal"),
    "wflw": ("full", "pose", "expression", "illumination", "makeup", "occlusion", "blur"),
}
REQUIRED_KEYS = ("table", "row", "column", "dataset", "metric", "normaliser", "value")
OPTIONAL_KEYS = ("gammas", "excitations")
REFERENCE_NAME = "paper_reference.yaml"


@dataclass(frozen=True)
class ReferenceCell:
    """One number printed in the paper, with everything needed to find our matching number."""

    table: int
    row: str
    column: str
    dataset: str
    metric: str
    normaliser: str
    value: float
    gammas: tuple[float, float, float] | None = None
    excitations: int | None = None


@dataclass(frozen=True)
class PaperReference:
    """All cells of Tables 2-7 plus the printed captions and citations."""

    path: Path
    cells: tuple[ReferenceCell, ...]
    captions: dict[int, str] = field(default_factory=dict)
    citations: dict[int, dict[str, str]] = field(default_factory=dict)

    def table(self, number: int) -> list[ReferenceCell]:
        """The cells of one table in the paper's order."""
        return [cell for cell in self.cells if cell.table == number]

    def rows(self, number: int, normaliser: str | None = None) -> list[str]:
        """Row names of one table (optionally one normaliser block) in the paper's order."""
        names: list[str] = []
        for cell in self.table(number):
            if (normaliser is None or cell.normaliser == normaliser) and cell.row not in names:
                names.append(cell.row)
        return names

    def value(self, table: int, row: str, column: str, metric: str = "nme",
              normaliser: str | None = None, dataset: str | None = None) -> float | None:
        """The printed number of one cell, or ``None`` where the paper has no such cell."""
        for cell in self.table(table):
            if (cell.row == row and cell.column == column and cell.metric == metric
                    and normaliser in (None, cell.normaliser) and dataset in (None, cell.dataset)):
                return cell.value
        return None

    def cite(self, table: int, row: str) -> str:
        """Venue and reference as printed next to a method (empty for the paper's own rows)."""
        return self.citations.get(table, {}).get(row, "")


def default_reference_path() -> Path:
    """``config/paper_reference.yaml`` of the working directory, else the one of this checkout."""
    local = Path("config") / REFERENCE_NAME
    if local.is_file():
        return local
    return Path(__file__).resolve().parents[2] / "config" / REFERENCE_NAME


def load_reference(path: Path | str | None = None) -> PaperReference:
    """Load and validate the paper's numbers; any malformed entry raises ``ReportError`` naming it."""
    path = Path(path) if path is not None else default_reference_path()
    if not path.is_file():
        raise ReportError(f"{path}: the paper's reference numbers are missing; restore "
                          f"config/{REFERENCE_NAME} from the repository or pass --reference FILE")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ReportError(f"{path}: expected a mapping with a 'cells' list (see the header of "
                          f"config/{REFERENCE_NAME})")
    cells = tuple(_parse_cell(path, index, entry) for index, entry in enumerate(data["cells"]))
    _check_unique(path, cells)
    captions = {int(n): str(t.get("caption", "")) for n, t in (data.get("tables") or {}).items()}
    citations = {int(n): {str(r): str(c) for r, c in rows.items()} for n, rows in (data.get("citations") or {}).items()}
    return PaperReference(path=path, cells=cells, captions=captions, citations=citations)


def _parse_cell(path: Path, index: int, entry: Any) -> ReferenceCell:
    where = f"{path}: cells[{index}]"
    if not isinstance(entry, dict):
        raise ReportError(f"{where}: expected a mapping with keys {list(REQUIRED_KEYS)}, got {entry!r}")
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise ReportError(f"{where}: missing keys {missing}, unknown keys {unknown}; "
                          f"allowed: {list(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    table = _choice(where, "table", entry["table"], TABLES)
    dataset = _choice(where, "dataset", entry["dataset"], tuple(DATASET_SUBSETS))
    column = _choice(where, "column", entry["column"], DATASET_SUBSETS[dataset])
    metric = _choice(where, "metric", entry["metric"], METRICS)
    normaliser = _choice(where, "normaliser", entry["normaliser"], NORMALISERS)
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ReportError(f"{where}: value must be a percentage between 0 and 100, got {value!r}")
    gammas = _gammas(where, entry.get("gammas"), required=table == 6)
    excitations = _excitations(where, entry.get("excitations"), required=table == 7)
    return ReferenceCell(table=table, row=str(entry["row"]), column=column, dataset=dataset, metric=metric,
                         normaliser=normaliser, value=float(value), gammas=gammas, excitations=excitations)


def _choice(where: str, key: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        raise ReportError(f"{where}: {key} {value!r} is not one of {list(allowed)}")
    return value


def _gammas(where: str, value: Any, *, required: bool) -> tuple[float, float, float] | None:
    if value is None:
        if required:
            raise ReportError(f"{where}: Table 6 entries need gammas: [g1, g2, g3]")
        return None
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(g, (int, float)) for g in value):
        raise ReportError(f"{where}: gammas must be a list of three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _excitations(where: str, value: Any, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise ReportError(f"{where}: Table 7 entries need excitations: P (a positive integer)")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReportError(f"{where}: excitations must be a positive integer, got {value!r}")
    return value


def _check_unique(path: Path, cells: tuple[ReferenceCell, ...]) -> None:
    seen: dict[tuple, int] = {}
    for index, cell in enumerate(cells):
        key = (cell.table, cell.row, cell.column, cell.dataset, cell.metric, cell.normaliser)
        if key in seen:
            raise ReportError(f"{path}: cells[{index}] repeats cells[{seen[key]}] "
                              f"(table {cell.table}, row {cell.row!r}, column {cell.column}, {cell.metric}, "
                              f"{cell.normaliser}); keep one")
        seen[key] = index
