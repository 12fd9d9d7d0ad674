"""iBUG ``.pts`` landmark files: the format of 300W and of most hand-made face annotations.

Hand-edited files are read leniently (a UTF-8 byte-order mark, CRLF line ends, blank lines anywhere
and trailing spaces are all accepted) but judged exactly: a file is called *truncated* only when it
ends before its closing ``}``; a complete file whose body holds another number of points than its
header declares is a *count mismatch*. Every error names the file and line. Coordinates are
MATLAB-style 1-based on disk (trigeorgis/mdm#13) and 0-based in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdn.data.formats.common import format_error
from ccdn.io import write_text

__all__ = ["read_pts", "write_pts", "PTS_FIX"]

PTS_FIX = "re-export or hand-fix the .pts file (version: 1 / n_points: N / { one 'x y' line per point } )"


def read_pts(path: Path, num_points: int = 68, fix: str = PTS_FIX) -> np.ndarray:
    """Read an iBUG ``.pts`` file as a ``(num_points, 2)`` array of **0-based** x, y.

    ``fix`` is the advice appended to every error (the 300W reader points at the download instead).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise format_error(path, f"cannot read the file ({exc})", fix) from exc
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    declared, body = _header(path, lines, fix)
    points, closing = _body(path, body, declared, fix)
    if len(points) != declared:
        problem = f"count mismatch: n_points is {declared} but the body between '{{' and '}}' has {len(points)} points"
        raise format_error(path, problem, fix, line=closing)
    if declared != num_points:
        raise format_error(path, f"n_points is {declared}, expected {num_points}", fix, line=lines[1][0])
    trailing = [entry for entry in lines if entry[0] > closing]
    if trailing:
        line, text = trailing[0]
        raise format_error(path, f"unexpected text after the closing '}}': {text!r}", fix, line=line)
    return np.asarray(points, dtype=np.float64).reshape(num_points, 2) - 1.0


def _header(path: Path, lines: list[tuple[int, str]], fix: str) -> tuple[int, list[tuple[int, str]]]:
    """The declared point count and the non-blank lines after ``{``."""
    if len(lines) < 3:
        last = lines[-1][0] if lines else 0
        raise format_error(path, f"file is truncated: {len(lines)} non-blank lines, no complete header", fix, line=last)
    (n1, version), (n2, count), (n3, brace) = lines[:3]
    if not version.lower().startswith("version"):
        raise format_error(path, f"expected 'version: 1', found {version!r}", fix, line=n1)
    key, _, value = count.partition(":")
    if key.strip().lower() != "n_points":
        raise format_error(path, f"expected 'n_points: N', found {count!r}", fix, line=n2)
    try:
        declared = int(value.strip())
    except ValueError as exc:
        raise format_error(path, f"n_points is not an integer: {value.strip()!r}", fix, line=n2) from exc
    if brace != "{":
        raise format_error(path, f"expected '{{', found {brace!r}", fix, line=n3)
    return declared, lines[3:]


def _body(path: Path, body: list[tuple[int, str]], declared: int, fix: str) -> tuple[list[tuple[float, float]], int]:
    """The points up to the closing ``}`` and that brace's line; a missing brace means truncation."""
    points: list[tuple[float, float]] = []
    for number, text in body:
        if text == "}":
            return points, number
        points.append(_point(path, text, number, fix))
    last = body[-1][0] if body else 0
    if len(points) < declared:
        problem = f"file is truncated: ends after {len(points)} of {declared} points"
    else:
        problem = "file is truncated: the closing '}' is missing"
    raise format_error(path, problem, fix, line=last or None)


def _point(path: Path, text: str, number: int, fix: str) -> tuple[float, float]:
    fields = text.split()
    if len(fields) != 2:
        raise format_error(path, f"expected 'x y', found {text!r}", fix, line=number)
    try:
        x, y = float(fields[0]), float(fields[1])
    except ValueError as exc:
        raise format_error(path, f"non-numeric coordinate in {text!r}", fix, line=number) from exc
    if not (np.isfinite(x) and np.isfinite(y)):
        raise format_error(path, f"non-finite coordinate in {text!r}", fix, line=number)
    return x, y


def write_pts(path: Path, landmarks: np.ndarray) -> None:
    """Write 0-based ``(L, 2)`` landmarks as an iBUG ``.pts`` file (1-based, three decimals)."""
    points = np.asarray(landmarks, dtype=np.float64) + 1.0
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    write_text(Path(path), f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")
