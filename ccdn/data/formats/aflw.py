"""AFLW-19: the CCL annotation file ``AFLWinfo_release.mat`` (Zhu et al., CVPR'16) and the image tree.

Layout (relative to the raw root)::

    AFLWinfo_release.mat            bbox (N x 4, [x1 x2 y1 y2]), data (N x 38, 19 x then 19 y),
                                    mask_new (N x 19, 1 = visible), nameList (N x 1 cell), ra (1 x N)
    aflw/data/flickr/{0,2,3}/imageNNNNN.jpg     nameList entries are relative to ``flickr/``

Split: ``ra`` is a 1-based permutation of the faces; the first 20000 are ``train`` and the other
4386 ``test`` (PIPNet, SAN, FaRL). ``frontal`` = the test faces whose 19 points are all visible.
A file may carry the split point itself in a scalar ``n_train`` (``ccdn synth`` writes one, since
its files are small); without it the file must be the official one with 24386 faces.

Coordinates: every public loader (PIPNet, SAN, HRNet's CSVs) uses ``data`` and ``bbox`` as they
are, i.e. as 0-based pixels, so that is the default; ``one_based=True`` subtracts 1 instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdn.data.formats.common import check_images, format_error
from ccdn.data.formats.matlab import as_matrix, as_string, load_mat, save_mat_v5
from ccdn.data.records import RawFace

__all__ = ["INFO_MAT", "IMAGE_ROOT", "OFFICIAL_FACES", "OFFICIAL_TRAIN", "read_aflw", "write_aflw_info"]

INFO_MAT = "AFLWinfo_release.mat"
IMAGE_ROOT = "aflw/data/flickr"
OFFICIAL_FACES = 24386
OFFICIAL_TRAIN = 20000
NUM_POINTS = 19
_KEYS = ("bbox", "data", "mask_new", "nameList", "ra")
_FIX_MAT = "re-download AFLWinfo_release.mat (mmlab.ie.cuhk.edu.hk/projects/compositional) into the raw root"
_FIX_IMAGES = (
    "AFLW images are licence-gated: register at the AFLW page (see docs/data.md), then unpack aflw.tar.gz "
    "so that aflw/data/flickr/{0,2,3}/ sits in the raw root"
)


def read_aflw(
    raw_root: Path, one_based: bool = False, check_image_files: bool = True, progress: bool = False
) -> dict[str, list[RawFace]]:
    """AFLW-full ``train``/``test`` faces; test faces with all 19 points visible also carry ``frontal``."""
    root = Path(raw_root)
    path = root / INFO_MAT
    values = load_mat(path, _KEYS, _FIX_MAT, optional=("n_train",))
    boxes = as_matrix(values["bbox"], path, "bbox", columns=4, fix=_FIX_MAT)
    data = as_matrix(values["data"], path, "data", columns=2 * NUM_POINTS, fix=_FIX_MAT)
    visible = as_matrix(values["mask_new"], path, "mask_new", columns=NUM_POINTS, fix=_FIX_MAT) != 0
    cells = np.asarray(values["nameList"], dtype=object).ravel(order="F")
    names = [_name(path, cell, k) for k, cell in enumerate(cells)]
    order = _permutation(path, values["ra"], len(data))
    counts = {len(boxes), len(data), len(visible), len(names)}
    if len(counts) != 1:
        problem = f"bbox, data, mask_new and nameList disagree on the face count ({sorted(counts)})"
        raise format_error(path, problem, _FIX_MAT)
    n_train = _split_point(path, values.get("n_train"), len(data))
    shift = 1.0 if one_based else 0.0
    splits: dict[str, list[RawFace]] = {"train": [], "test": []}
    for position, row in enumerate(order):
        split = "train" if position < n_train else "test"
        subsets = ("full",) if split == "train" or not visible[row].all() else ("full", "frontal")
        x1, x2, y1, y2 = boxes[row]
        splits[split].append(
            RawFace(
                face_id=f"{names[row]}#{row + 1}",
                image_path=root / IMAGE_ROOT / names[row],
                landmarks=np.stack([data[row, :NUM_POINTS], data[row, NUM_POINTS:]], axis=1) - shift,
                box=np.array([x1, y1, x2, y2], dtype=np.float64) - shift,
                occluded=~visible[row],
                subsets=subsets,
            )
        )
    if check_image_files:
        check_images([*splits["train"], *splits["test"]], _FIX_IMAGES, progress=progress)
    return splits


def _name(path: Path, cell: object, index: int) -> str:
    try:
        name = as_string(cell).strip()
    except TypeError as exc:
        raise format_error(path, f"nameList{{{index + 1}}} is not a string", _FIX_MAT) from exc
    if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
        raise format_error(path, f"nameList{{{index + 1}}} is not a relative image path: {name!r}", _FIX_MAT)
    return name


def _permutation(path: Path, ra: object, count: int) -> np.ndarray:
    order = np.asarray(ra, dtype=np.float64).ravel()
    if order.size != count or not np.array_equal(np.sort(order), np.arange(1, count + 1)):
        raise format_error(path, f"ra is not a permutation of 1..{count}", _FIX_MAT)
    return order.astype(np.int64) - 1


def _split_point(path: Path, n_train: object, count: int) -> int:
    if n_train is not None:
        value = np.asarray(n_train, dtype=np.float64).ravel()
        if value.size != 1 or not 0 <= value[0] <= count or value[0] != int(value[0]):
            raise format_error(path, f"n_train must be one integer in 0..{count}", "regenerate it with ccdn synth")
        return int(value[0])
    if count != OFFICIAL_FACES:
        raise format_error(
            path,
            f"holds {count} faces and no n_train; "
            f"the official file has {OFFICIAL_FACES} (train = ra[:{OFFICIAL_TRAIN}])",
            _FIX_MAT,
        )
    return OFFICIAL_TRAIN


def write_aflw_info(
    path: Path,
    names: list[str],
    landmarks: np.ndarray,
    visible: np.ndarray,
    boxes: np.ndarray,
    order: np.ndarray,
    n_train: int,
) -> None:
    """Write an ``AFLWinfo_release.mat``-style file from 0-based ``(N, 19, 2)`` landmarks, ``(N, 19)``
    visibility, ``x1, y1, x2, y2`` boxes and a 0-based ``order`` (train = ``order[:n_train]``)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    name_cells = np.empty((len(names), 1), dtype=object)
    for k, name in enumerate(names):
        name_cells[k, 0] = name
    save_mat_v5(
        Path(path),
        {
            "bbox": boxes[:, [0, 2, 1, 3]],
            "data": np.concatenate([landmarks[:, :, 0], landmarks[:, :, 1]], axis=1),
            "mask_new": np.asarray(visible, dtype=np.float64),
            "nameList": name_cells,
            "ra": (np.asarray(order, dtype=np.float64) + 1.0).reshape(1, -1),
            "n_train": np.array([[float(n_train)]]),
        },
    )
