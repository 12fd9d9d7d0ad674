"""WFLW: the 98-point list files with rectangles and six attribute flags, and the subset lists.

Layout (relative to the raw root)::

    WFLW_images/<event>/<file>.jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{train,test}.txt
    WFLW_annotations/list_98pt_test/list_98pt_test{,_largepose,_expression,_illumination,_makeup,_occlusion,_blur}.txt

A ``rect_attr`` line has 207 space-separated columns: 98 ``x y`` pairs (196), the rectangle
``x_min y_min x_max y_max`` (4), the flags ``pose expression illumination make-up occlusion blur``
(6, 0/1) and the image name relative to ``WFLW_images/`` (1). Coordinates are used as they are
(0-based pixels, like every public loader). The subset lists repeat lines of the test list; each
is matched to its test face by the key first-coordinate + image name (as PIPNet does), so a
subset line that matches no test face is an error rather than a silent drop. Subset lines may
have 207 columns or only the 196 coordinates and the name (197).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdn.data.formats.common import check_images, format_error
from ccdn.io import write_text
from ccdn.data.records import RawFace

__all__ = [
    "ATTRIBUTES",
    "SUBSET_FILES",
    "LIST_DIR",
    "SUBSET_DIR",
    "IMAGE_DIR",
    "read_wflw",
    "parse_line",
    "format_line",
    "write_lists",
    "list_path",
    "subset_path",
]

NUM_POINTS = 98
COLUMNS = 2 * NUM_POINTS + 4 + 6 + 1  # 207
SUBSET_COLUMNS = (2 * NUM_POINTS + 1, COLUMNS)  # 197 or 207
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
SUBSET_FILES = {
    "pose": "list_98pt_test_largepose.txt",
    "expression": "list_98pt_test_expression.txt",
    "illumination": "list_98pt_test_illumination.txt",
    "makeup": "list_98pt_test_makeup.txt",
    "occlusion": "list_98pt_test_occlusion.txt",
    "blur": "list_98pt_test_blur.txt",
}
FULL_TEST_LIST = "list_98pt_test.txt"
LIST_DIR = "WFLW_annotations/list_98pt_rect_attr_train_test"
SUBSET_DIR = "WFLW_annotations/list_98pt_test"
IMAGE_DIR = "WFLW_images"
_FIX_ANNOTATIONS = "re-download WFLW_annotations.tar.gz (wywu.github.io/projects/LAB) and unpack it into the raw root"
_FIX_IMAGES = "download WFLW_images.tar.gz (Google Drive or Baidu, see docs/data.md) and unpack it into the raw root"


def list_path(raw_root: Path, split: str) -> Path:
    """The ``rect_attr`` list of ``split`` ("train" or "test")."""
    return Path(raw_root) / LIST_DIR / f"list_98pt_rect_attr_{split}.txt"


def subset_path(raw_root: Path, subset: str) -> Path:
    """The list file of test subset ``subset`` (one of :data:`ATTRIBUTES`)."""
    return Path(raw_root) / SUBSET_DIR / SUBSET_FILES[subset]


def parse_line(line: str, path: Path, lineno: int) -> tuple[np.ndarray, np.ndarray, dict[str, bool], str]:
    """One 207-column line as ``(landmarks (98, 2), rect (4,), flags, image name)``."""
    fields = line.split()
    if len(fields) != COLUMNS:
        raise format_error(path, f"expected {COLUMNS} columns, found {len(fields)}", _FIX_ANNOTATIONS, line=lineno)
    numbers = _floats(fields[: COLUMNS - 1], path, lineno)
    landmarks = numbers[: 2 * NUM_POINTS].reshape(NUM_POINTS, 2)
    rect = numbers[2 * NUM_POINTS : 2 * NUM_POINTS + 4]
    raw_flags = numbers[2 * NUM_POINTS + 4 :]
    if not np.all(np.isin(raw_flags, (0.0, 1.0))):
        problem = f"attribute flags must be 0 or 1, found {raw_flags.tolist()}"
        raise format_error(path, problem, _FIX_ANNOTATIONS, line=lineno)
    flags = {name: bool(value) for name, value in zip(ATTRIBUTES, raw_flags)}
    return landmarks, rect, flags, fields[-1]


def _floats(fields: list[str], path: Path, lineno: int) -> np.ndarray:
    try:
        numbers = np.array([float(f) for f in fields], dtype=np.float64)
    except ValueError as exc:
        raise format_error(path, f"non-numeric column ({exc})", _FIX_ANNOTATIONS, line=lineno) from exc
    if not np.all(np.isfinite(numbers)):
        raise format_error(path, "non-finite number in the line", _FIX_ANNOTATIONS, line=lineno)
    return numbers


def _read_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise format_error(path, "WFLW list file not found", _FIX_ANNOTATIONS)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise format_error(path, f"cannot read the file ({exc})", _FIX_ANNOTATIONS) from exc
    return [(k, line) for k, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_split(root: Path, split: str) -> list[RawFace]:
    path = list_path(root, split)
    faces = []
    for lineno, line in _read_lines(path):
        landmarks, rect, flags, name = parse_line(line, path, lineno)
        faces.append(
            RawFace(
                face_id=f"{name}#{lineno}",
                image_path=root / IMAGE_DIR / name,
                landmarks=landmarks,
                box=rect.copy(),
                occluded=np.zeros(NUM_POINTS, dtype=bool),
                attributes=flags,
                subsets=("full",),
            )
        )
    if not faces:
        raise format_error(path, "the list holds no faces", _FIX_ANNOTATIONS)
    return faces


def _subset_key(first_coordinate: float, name: str) -> tuple[float, str]:
    return (first_coordinate, name)


def _assign_subsets(root: Path, test: list[RawFace]) -> None:
    index: dict[tuple[float, str], list[RawFace]] = {}
    for face in test:
        name = face.image_path.relative_to(root / IMAGE_DIR).as_posix()
        index.setdefault(_subset_key(float(face.landmarks[0, 0]), name), []).append(face)
    for subset in ATTRIBUTES:
        path = subset_path(root, subset)
        for lineno, line in _read_lines(path):
            fields = line.split()
            if len(fields) not in SUBSET_COLUMNS:
                problem = f"expected {SUBSET_COLUMNS[0]} or {SUBSET_COLUMNS[1]} columns, found {len(fields)}"
                raise format_error(path, problem, _FIX_ANNOTATIONS, line=lineno)
            first = _floats(fields[:1], path, lineno)[0]
            matches = index.get(_subset_key(first, fields[-1]))
            if not matches:
                raise format_error(
                    path,
                    f"face {fields[-1]!r} (x0 = {fields[0]}) is not in {list_path(root, 'test').name}",
                    "use subset lists and test list from the same WFLW_annotations archive",
                    line=lineno,
                )
            for face in matches:
                if subset not in face.subsets:
                    face.subsets = (*face.subsets, subset)


def read_wflw(raw_root: Path, check_image_files: bool = True, progress: bool = False) -> dict[str, list[RawFace]]:
    """WFLW ``train`` and ``test`` faces; test faces carry ``full`` and the subsets whose lists hold them."""
    root = Path(raw_root)
    splits = {split: _read_split(root, split) for split in ("train", "test")}
    _assign_subsets(root, splits["test"])
    if check_image_files:
        check_images([*splits["train"], *splits["test"]], _FIX_IMAGES, progress=progress)
    return splits


def format_line(
    landmarks: np.ndarray, rect: np.ndarray, flags: dict[str, bool], name: str, with_rect_attr: bool = True
) -> str:
    """A list line: 196 coordinates, then (``with_rect_attr``) the rect and the six flags, then the name."""
    if any(ch.isspace() for ch in name):
        raise ValueError(f"WFLW image names cannot contain whitespace: {name!r}")
    coords = " ".join(f"{v:.6f}" for v in np.asarray(landmarks, dtype=np.float64).ravel())
    if not with_rect_attr:
        return f"{coords} {name}"
    box = " ".join(f"{int(round(v))}" for v in np.asarray(rect, dtype=np.float64))
    attrs = " ".join("1" if flags.get(a, False) else "0" for a in ATTRIBUTES)
    return f"{coords} {box} {attrs} {name}"


def write_lists(
    raw_root: Path,
    train_lines: list[str],
    test_lines: list[str],
    subset_lines: dict[str, list[str]],
    full_test_lines: list[str],
) -> None:
    """Write the train/test ``rect_attr`` lists and the test subset lists (atomically, one by one)."""
    root = Path(raw_root)
    write_text(list_path(root, "train"), "".join(f"{line}\n" for line in train_lines))
    write_text(list_path(root, "test"), "".join(f"{line}\n" for line in test_lines))
    write_text(root / SUBSET_DIR / FULL_TEST_LIST, "".join(f"{line}\n" for line in full_test_lines))
    for subset, filename in SUBSET_FILES.items():
        write_text(root / SUBSET_DIR / filename, "".join(f"{line}\n" for line in subset_lines.get(subset, [])))
