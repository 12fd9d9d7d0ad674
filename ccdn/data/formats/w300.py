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

from ccdn.data.formats import pts as pts_format
from ccdn.data.formats.common import check_images, format_error
from ccdn.data.formats.images import ImageFinder
from ccdn.data.formats.matlab import as_string, load_mat, save_mat_v5
from ccdn.data.formats.pts import write_pts
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
NUM_POINTS = 68
_FIX_ANNOTATIONS = "re-download and unpack the 300W annotation zips (afw, helen, lfpw, ibug) as docs/data.md says"
_FIX_FOLDER = (
    f"{_FIX_ANNOTATIONS}; to prepare only the folders you have, run `ccdn prepare 300w --partial`; "
    "for faces of your own, `ccdn prepare custom` (docs/data.md, 'Your own data')"
)
_FIX_BOXES = "re-download bounding_boxes.zip from the iBUG 300-W page and unpack it into the raw root"


def box_file(root: Path, folder: str) -> Path:
    """The bounding-box ``.mat`` that covers ``folder``."""
    return Path(root) / BOX_DIR / f"bounding_boxes_{FOLDERS[folder][2]}.mat"


# ------------------------------------------------------------------------------------------- .pts


def read_pts(path: Path, num_points: int = NUM_POINTS) -> np.ndarray:
    """A 300W ``.pts`` file as 0-based ``(num_points, 2)`` x, y (:func:`ccdn.data.formats.pts.read_pts`)."""
    return pts_format.read_pts(path, num_points, fix=_FIX_ANNOTATIONS)


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
    raw_root: Path,
    box: str = "detector",
    check_image_files: bool = True,
    progress: bool = False,
    require_all_folders: bool = True,
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
    finder = ImageFinder()
    for folder, (split, subsets, _) in FOLDERS.items():
        if not require_all_folders and not any((root / folder).glob("*.pts")):
            continue
        splits[split].extend(_read_folder(root, folder, subsets, box, finder))
    if check_image_files:
        check_images([*splits["train"], *splits["test"]], _FIX_ANNOTATIONS, progress=progress)
    return splits


def _read_folder(
    root: Path, folder: str, subsets: tuple[str, ...], box: str, finder: ImageFinder
) -> list[RawFace]:
    directory = root / folder
    if not directory.is_dir():
        raise format_error(directory, "300W folder not found", _FIX_FOLDER)
    pts_files = sorted(directory.glob("*.pts"))
    if not pts_files:
        raise format_error(directory, "no .pts annotation files in this 300W folder", _FIX_FOLDER)
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
                image_path=finder.find(directory, pts.stem),
                landmarks=landmarks,
                box=detector if box == "detector" else ground_truth,
                occluded=np.zeros(len(landmarks), dtype=bool),
                subsets=subsets,
            )
        )
    return faces
