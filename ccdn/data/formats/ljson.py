"""menpo's landmark JSON (LJSON, versions 2 and 3), as written by menpo and landmarker.io.

Points are stored ``[y, x]`` (menpo's array order: the first axis is the image's y), 0-based. A
``null`` coordinate marks an unannotated point; the cache needs every point, so it is an error
naming the point. Version 3 files hold named groups; the one group with the scheme's point count
is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ccdn.data.formats.common import format_error

__all__ = ["read_ljson"]

_FIX = "re-export the file with menpo (menpo.io.export_landmark_file) or fix the points by hand"


def read_ljson(path: Path, num_points: int) -> np.ndarray:
    """The ``(num_points, 2)`` 0-based x, y landmarks of an LJSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise format_error(path, f"cannot read the file ({exc})", _FIX) from exc
    except json.JSONDecodeError as exc:
        raise format_error(path, f"not valid JSON ({exc.msg})", _FIX, line=exc.lineno) from exc
    points = _points(path, data, num_points)
    array = np.array([[np.nan if v is None else v for v in p] for p in points], dtype=np.float64)
    if array.shape != (len(points), 2):
        raise format_error(path, f"points must be [y, x] pairs; found shape {array.shape}", _FIX)
    if len(array) != num_points:
        raise format_error(path, f"has {len(array)} points, expected {num_points}", _FIX)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        problem = f"point(s) {bad[:5].tolist()} are null or not finite; every point must be annotated"
        raise format_error(path, problem, _FIX)
    return array[:, ::-1].copy()


def _points(path: Path, data: object, num_points: int) -> list:
    if not isinstance(data, dict) or data.get("version") not in (2, 3):
        version = data.get("version") if isinstance(data, dict) else None
        raise format_error(path, f"not an LJSON v2/v3 file (version {version!r})", _FIX)
    if data["version"] == 2:
        return _group_points(path, data, "the file")
    groups = data.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise format_error(path, "LJSON v3 file has no 'groups' mapping", _FIX)
    sizes = {name: len(_group_points(path, group, f"group {name!r}")) for name, group in groups.items()}
    matching = [name for name, size in sizes.items() if size == num_points]
    if len(matching) != 1:
        found = ", ".join(f"{name!r}: {size}" for name, size in sizes.items())
        problem = f"needs exactly one group of {num_points} points; groups and sizes: {found}"
        raise format_error(path, problem, _FIX)
    return _group_points(path, groups[matching[0]], f"group {matching[0]!r}")


def _group_points(path: Path, group: object, where: str) -> list:
    landmarks = group.get("landmarks") if isinstance(group, dict) else None
    points = landmarks.get("points") if isinstance(landmarks, dict) else None
    if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
        raise format_error(path, f"{where} has no landmarks.points list of [y, x] pairs", _FIX)
    return points
