"""300W: iBUG ``.pts`` files in the per-source folders, plus the ``Bounding Boxes/*.mat`` files.

Layout (relative to the raw root)::

    afw/  helen/trainset/  helen/testset/  lfpw/trainset/  lfpw/testset/  ibug/   (image + .pts)
    Bounding Boxes/bounding_boxes_{afw,helen_trainset,helen_testset,lfpw_trainset,lfpw_testset,ibug}.mat

``.pts`` coordinates follow MATLAB's 1-based convention (trigeorgis/mdm#13); the box files were made
in MATLAB from the same annotations, so both are shifted by -1 to the 0-based pixel centres the
rest of the code uses. One real file name has a space in it (``ibug/image_092 _01.jpg``): names are
never split on whitespace here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdn.data.formats.common import check_images, format_error, write_text_atomic
from ccdn.data.formats.matlab import as_string, load_mat, save_mat_v5
from ccdn.data.records import RawFace

__all__ = [
    "FOLDERS",
    "BOX_DIR",
    "read_300w",
    "read_pts",
    "write_pts",
    "read_bounding_boxes",
    "write_bounding_boxes",
    "box_file",
]

# folder -> (split, subsets, stem of its bounding-box file)
FOLDERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "afw": ("train", ("full",), "afw"),
    "helen/trainset": ("train", ("full",), "helen_trainset"),
    "lfpw/trainset": ("train", ("full",), "lfpw_trainset"),
    "helen/testset": ("test", ("full", "common"), "helen_testset"),
    "lfpw/testset": ("test", ("full", "common"), "lfpw_testset"),
    "ibug": ("test", ("full", "challenging"), "ibug"),
}
BOX_DIR = "Bounding Boxes"
BOX_CHOICES = ("detector", "ground_truth")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
NUM_POINTS = 68
_FIX_ANNOTATIONS = "re-download and unpack the 300W annotation zips (afw, helen, lfpw, ibug) as docs/data.md says"
_FIX_BOXES = "re-download bounding_boxes.zip from the iBUG 300-W page and unpack it into the raw root"


def box_file(root: Path, folder: str) -> Path:
    """The bounding-box ``.mat`` that covers ``folder``."""
    return Path(root) / BOX_DIR / f"bounding_boxes_{FOLDERS[folder][2]}.mat"


# ------------------------------------------------------------------------------------------- .pts


def read_pts(path: Path, num_points: int = NUM_POINTS) -> np.ndarray:
    """Read an iBUG ``.pts`` file as a ``(num_points, 2)`` array of **0-based** x, y.

    Raises ``DataFormatError`` naming the file and line for a bad header, a point count other than
    ``num_points``, a non-numeric or short line, or a file that ends before the closing brace.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise format_error(path, f"cannot read the file ({exc})", _FIX_ANNOTATIONS) from exc
    lines = _strip_trailing_blank(lines)
    declared = _pts_header(path, lines)
    if declared != num_points:
        raise format_error(path, f"n_points is {declared}, expected {num_points}", _FIX_ANNOTATIONS, line=2)
    points = np.empty((num_points, 2), dtype=np.float64)
    for k in range(num_points):
        lineno = 4 + k  # 1-based: version, n_points, "{" come first
        if lineno > len(lines) or lines[lineno - 1].strip() == "}":
            raise format_error(
                path,
                f"file is truncated: ends after {k} of {num_points} points",
                _FIX_ANNOTATIONS,
                line=min(lineno, len(lines)),
            )
        points[k] = _pts_point(path, lines[lineno - 1], lineno)
    closing = 4 + num_points
    if closing > len(lines):
        raise format_error(path, "file is truncated: the closing '}' is missing", _FIX_ANNOTATIONS, line=len(lines))
    if lines[closing - 1].strip() != "}":
        raise format_error(
            path,
            f"expected '}}' after {num_points} points, found {lines[closing - 1].strip()!r}",
            _FIX_ANNOTATIONS,
            line=closing,
        )
    return points - 1.0


def _strip_trailing_blank(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _pts_header(path: Path, lines: list[str]) -> int:
    if len(lines) < 3:
        problem = f"file is truncated: {len(lines)} lines, no complete header"
        raise format_error(path, problem, _FIX_ANNOTATIONS, line=len(lines))
    if not lines[0].strip().lower().startswith("version"):
        raise format_error(path, f"expected 'version: 1', found {lines[0].strip()!r}", _FIX_ANNOTATIONS, line=1)
    key, _, value = lines[1].partition(":")
    if key.strip().lower() != "n_points":
        raise format_error(path, f"expected 'n_points: N', found {lines[1].strip()!r}", _FIX_ANNOTATIONS, line=2)
    try:
        declared = int(value.strip())
    except ValueError as exc:
        raise format_error(path, f"n_points is not an integer: {value.strip()!r}", _FIX_ANNOTATIONS, line=2) from exc
    if lines[2].strip() != "{":
        raise format_error(path, f"expected '{{', found {lines[2].strip()!r}", _FIX_ANNOTATIONS, line=3)
    return declared


def _pts_point(path: Path, text: str, lineno: int) -> tuple[float, float]:
    fields = text.split()
    if len(fields) != 2:
        raise format_error(path, f"expected 'x y', found {text.strip()!r}", _FIX_ANNOTATIONS, line=lineno)
    try:
        x, y = float(fields[0]), float(fields[1])
    except ValueError as exc:
        raise format_error(path, f"non-numeric coordinate in {text.strip()!r}", _FIX_ANNOTATIONS, line=lineno) from exc
    if not (np.isfinite(x) and np.isfinite(y)):
        raise format_error(path, f"non-finite coordinate in {text.strip()!r}", _FIX_ANNOTATIONS, line=lineno)
    return x, y


def write_pts(path: Path, landmarks: np.ndarray) -> None:
    """Write 0-based ``(L, 2)`` landmarks as an iBUG ``.pts`` file (1-based, three decimals)."""
    points = np.asarray(landmarks, dtype=np.float64) + 1.0
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    write_text_atomic(Path(path), f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")


# ------------------------------------------------------------------------------ bounding boxes


def read_bounding_boxes(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``image stem -> (bb_detector, bb_ground_truth)``, each 0-based ``x1, y1, x2, y2``.

    The file holds ``bounding_boxes``, a cell array of 1x1 structs (``cell2mat`` in the iBUG
    scripts) with ``imgName``, ``bb_detector`` and ``bb_ground_truth``; a plain struct array is
    accepted too.
    """
    path = Path(path)
    entries = load_mat(path, ["bounding_boxes"], _FIX_BOXES)["bounding_boxes"]
    boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for position, entry in enumerate(np.asarray(entries, dtype=object).ravel(order="F"), start=1):
        record = _unwrap_struct(entry)
        fields = getattr(record, "_fieldnames", None)
        if fields is None:
            raise format_error(path, f"bounding_boxes entry {position} is not a struct", _FIX_BOXES)
        for needed in ("imgName", "bb_detector", "bb_ground_truth"):
            if needed not in fields:
                raise format_error(
                    path,
                    f"bounding_boxes entry {position} has no field {needed!r} (fields: {', '.join(fields)})",
                    _FIX_BOXES,
                )
        name = as_string(record.imgName)
        detector = _box_field(path, record.bb_detector, "bb_detector", position)
        ground_truth = _box_field(path, record.bb_ground_truth, "bb_ground_truth", position)
        boxes[Path(name).stem] = (detector, ground_truth)
    return boxes


def _unwrap_struct(entry: object) -> object:
    """Peel the 1x1 object arrays scipy wraps around cell contents and structs."""
    while isinstance(entry, np.ndarray):
        if entry.size != 1:
            raise ValueError(f"expected a 1x1 struct, found an array of shape {entry.shape}")
        entry = entry.ravel()[0]
    return entry


def _box_field(path: Path, value: object, name: str, position: int) -> np.ndarray:
    box = np.asarray(value, dtype=np.float64).ravel()
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise format_error(path, f"bounding_boxes entry {position}: {name} is not 4 finite numbers", _FIX_BOXES)
    return box - 1.0


def write_bounding_boxes(path: Path, entries: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Write ``(image name, detector box, ground-truth box)`` entries (0-based) as a box ``.mat``."""
    cells = np.empty((1, len(entries)), dtype=object)
    for k, (name, detector, ground_truth) in enumerate(entries):
        cells[0, k] = {
            "imgName": name,
            "bb_detector": np.asarray(detector, dtype=np.float64).reshape(1, 4) + 1.0,
            "bb_ground_truth": np.asarray(ground_truth, dtype=np.float64).reshape(1, 4) + 1.0,
        }
    save_mat_v5(Path(path), {"bounding_boxes": cells})


# ------------------------------------------------------------------------------------ the set


def read_300w(
    raw_root: Path, box: str = "detector", check_image_files: bool = True, progress: bool = False
) -> dict[str, list[RawFace]]:
    """All 300W faces by split: ``train`` (afw, helen/lfpw trainsets) and ``test`` (subsets
    ``common`` = helen/lfpw testsets, ``challenging`` = ibug; every test face is in ``full``).

    ``box`` picks the provided box: ``"detector"`` (``bb_detector``, the default: what a deployed
    system would get) or ``"ground_truth"`` (``bb_ground_truth``, tight around the landmarks).
    """
    if box not in BOX_CHOICES:
        raise ValueError(f"box must be one of {BOX_CHOICES}, got {box!r}")
    root = Path(raw_root)
    splits: dict[str, list[RawFace]] = {"train": [], "test": []}
    for folder, (split, subsets, _) in FOLDERS.items():
        splits[split].extend(_read_folder(root, folder, subsets, box))
    if check_image_files:
        check_images([*splits["train"], *splits["test"]], _FIX_ANNOTATIONS, progress=progress)
    return splits


def _read_folder(root: Path, folder: str, subsets: tuple[str, ...], box: str) -> list[RawFace]:
    directory = root / folder
    if not directory.is_dir():
        raise format_error(directory, "300W folder not found", _FIX_ANNOTATIONS)
    pts_files = sorted(directory.glob("*.pts"))
    if not pts_files:
        raise format_error(directory, "no .pts annotation files in this 300W folder", _FIX_ANNOTATIONS)
    box_path = box_file(root, folder)
    boxes = read_bounding_boxes(box_path)
    faces = []
    for pts in pts_files:
        landmarks = read_pts(pts)
        if pts.stem not in boxes:
            raise format_error(box_path, f"no bounding box for image {pts.stem!r} of {folder}", _FIX_BOXES)
        detector, ground_truth = boxes[pts.stem]
        faces.append(
            RawFace(
                face_id=f"{folder}/{pts.stem}",
                image_path=_image_for(pts),
                landmarks=landmarks,
                box=detector if box == "detector" else ground_truth,
                occluded=np.zeros(len(landmarks), dtype=bool),
                subsets=subsets,
            )
        )
    return faces


def _image_for(pts: Path) -> Path:
    """The image next to a ``.pts`` file (same stem; .jpg or .png); the .jpg name when none exists."""
    for suffix in IMAGE_SUFFIXES:
        candidate = pts.with_name(pts.stem + suffix)
        if candidate.is_file():
            return candidate
    return pts.with_name(pts.stem + ".jpg")
