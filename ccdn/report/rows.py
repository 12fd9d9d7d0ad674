"""``ccdn report metrics``: one table row per subset of any ``metrics.json``, with what data it came from.

The paper tables (``tables.py``) follow the experiment grid; a set of one's own faces or a partial
release is evaluated outside it, and its numbers still need a row that cannot be mistaken for a
reproduction: every row carries the data label (synthetic, "partial: n of N faces", custom set).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ccdn.io import write_text
from ccdn.report import SYNTHETIC_MARK, ReportError

__all__ = ["data_label", "metrics_rows", "render_rows_markdown", "write_metrics_rows"]


def data_label(metrics: Mapping[str, Any]) -> str:
    """What a reader must know about the data behind ``metrics`` ("" for a complete official set)."""
    labels = []
    if metrics.get("synthetic"):
        labels.append(SYNTHETIC_MARK)
    partial = metrics.get("partial")
    if partial:
        labels.append(f"partial: {int(partial['n'])} of {int(partial['of'])} faces")
    if metrics.get("custom"):
        labels.append(f"custom set ({metrics.get('source') or metrics.get('dataset')})")
    return "; ".join(labels)


def metrics_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per subset: run, dataset, subset, n, NME/FR/AUC per normaliser (percent), data label."""
    label = data_label(metrics)
    rows = []
    for subset, entry in metrics["subsets"].items():
        row: dict[str, Any] = {"run": metrics["run"], "dataset": metrics["dataset"], "subset": subset, "n": entry["n"]}
        for measure in ("nme", "fr@0.1", "auc@0.1"):
            for norm, value in entry.get(measure, {}).items():
                row[f"{measure} {norm}"] = value
        row["data"] = label
        rows.append(row)
    return rows


def render_rows_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (columns in first-seen order; numbers with 2 decimals)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body]) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_metrics_rows(paths: Iterable[Path], out: Path) -> Path:
    """Rows of every ``metrics.json`` in ``paths`` as a Markdown table at ``out``."""
    rows = []
    for path in paths:
        try:
            rows.extend(metrics_rows(json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ReportError(f"{path}: not a readable metrics.json ({exc}); re-run `ccdn evaluate`") from exc
    return write_text(out, render_rows_markdown(rows))
