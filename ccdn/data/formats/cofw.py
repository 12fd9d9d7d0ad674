"""COFW: the colour ``.mat`` files (MATLAB v7.3) and the COFW-68 re-annotation of its test set.

Layout (relative to the raw root)::

    COFW_test_color.mat                  IsT (cells of images), phisT (N x 87), bboxesT (N x 4)
    COFW_train_color.mat                 optional: IsTr, phisTr, bboxesTr (29 points; not used by cofw68)
    COFW68_Data/test_annotations/{i}_points.mat    Points (68 x 2), Occ (1 x 68), i = 1..507
    COFW68_Data/cofw68_test_bboxes.mat   bboxes (507 x 4, [x y w h])

``phis`` rows are 29 x, 29 y, then 29 occlusion flags (1 = occluded). All coordinates are MATLAB
1-based and become 0-based here; ``[x y w h]`` rectangles become ``x1, y1, x2, y2``. The COFW-68
faces take their image from ``IsT`` by index (``{i}_points.mat`` goes with ``IsT{i}``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdn.data.errors import DataFormatError
from ccdn.data.formats.common import box_from_xywh_one_based, format_error, list_paths, to_rgb_array
from ccdn.data.formats.matlab import as_matrix, load_mat, save_mat_v5, save_mat_v73
from ccdn.data.records import RawFace

__all__ = [
    "TEST_MAT",
    "TRAIN_MAT",
    "POINTS_DIR",
    "BOXES_MAT",
    "read_cofw68",
    "read_cofw29",
    "read_cofw_images",
    "write_cofw29",
    "write_cofw68",
]

TEST_MAT = "COFW_test_color.mat"
TRAIN_MAT = "COFW_train_color.mat"
POINTS_DIR = "COFW68_Data/test_annotations"
BOXES_MAT = "COFW68_Data/cofw68_test_bboxes.mat"
NUM_POINTS_29 = 29
NUM_POINTS_68 = 68
_KEYS = {"test": ("IsT", "phisT", "bboxesT"), "train": ("IsTr", "phisTr", "bboxesTr")}
_FIX_COFW = (
    "re-download COFW_color.zip (Caltech data repository, see docs/data.md) and unpack the .mat files into the raw root"
)
_FIX_COFW68 = (
    "re-download the cofw68-benchmark repository (golnazghiasi/cofw68-benchmark) "
    "and copy its COFW68_Data folder into the raw root"
)


def read_cofw_images(mat_path: Path, key: str = "IsT") -> list[np.ndarray]:
    """The images of a COFW ``.mat`` cell array as ``(H, W, 3)`` uint8 RGB (grey ones are replicated)."""
    mat_path = Path(mat_path)
    cells = load_mat(mat_path, [key], _FIX_COFW)[key]
    images = []
    for index, image in enumerate(np.asarray(cells, dtype=object).ravel(order="F"), start=1):
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3) or array.size == 0:
            raise format_error(mat_path, f"{key}{{{index}}} is not an image (shape {array.shape})", _FIX_COFW)
        images.append(to_rgb_array(array, mat_path))
    return images


def read_cofw29(mat_path: Path, split: str = "test") -> list[RawFace]:
    """The 29-point COFW faces of one colour ``.mat`` (``split`` picks the ``T``/``Tr`` variables)."""
    mat_path = Path(mat_path)
    image_key, phis_key, box_key = _KEYS[split]
    values = load_mat(mat_path, [phis_key, box_key], _FIX_COFW)
    phis = as_matrix(values[phis_key], mat_path, phis_key, columns=3 * NUM_POINTS_29, fix=_FIX_COFW)
    boxes = as_matrix(values[box_key], mat_path, box_key, columns=4, fix=_FIX_COFW)
    images = read_cofw_images(mat_path, image_key)
    if not len(images) == len(phis) == len(boxes):
        raise format_error(
            mat_path,
            f"{image_key}, {phis_key} and {box_key} disagree on the face count "
            f"({len(images)}, {len(phis)}, {len(boxes)})",
            _FIX_COFW,
        )
    faces = []
    for index in range(len(phis)):
        n = NUM_POINTS_29
        landmarks = np.stack([phis[index, :n], phis[index, n : 2 * n]], axis=1) - 1.0
        faces.append(
            RawFace(
                face_id=f"{split}/{index + 1}",
                image_path=mat_path,
                landmarks=landmarks,
                box=box_from_xywh_one_based(boxes[index]),
                occluded=phis[index, 2 * n :] != 0,
                subsets=("full",),
                image=images[index],
            )
        )
    return faces


def read_cofw68(raw_root: Path, check_image_files: bool = True, progress: bool = False) -> dict[str, list[RawFace]]:
    """The 507 COFW-68 test faces (split ``test``, subset ``full``), images from ``IsT`` by index.

    The images live inside the ``.mat`` and are always decoded and checked, so ``check_image_files``
    and ``progress`` exist only to give every reader the same options.
    """
    root = Path(raw_root)
    box_path = root / BOXES_MAT
    raw_boxes = load_mat(box_path, ["bboxes"], _FIX_COFW68)["bboxes"]
    boxes = as_matrix(raw_boxes, box_path, "bboxes", columns=4, fix=_FIX_COFW68)
    point_files = [root / POINTS_DIR / f"{i}_points.mat" for i in range(1, len(boxes) + 1)]
    _check_point_files(point_files, len(boxes))
    images = read_cofw_images(root / TEST_MAT, "IsT")
    if len(images) != len(boxes):
        raise format_error(
            root / TEST_MAT,
            f"IsT holds {len(images)} images but {box_path.name} has {len(boxes)} boxes; COFW-68 matches them by index",
            "use the COFW colour test file that goes with the COFW-68 annotations",
        )
    faces = []
    for index, path in enumerate(point_files):
        landmarks, occluded = _read_points_mat(path)
        faces.append(
            RawFace(
                face_id=f"test/{index + 1}",
                image_path=root / TEST_MAT,
                landmarks=landmarks,
                box=box_from_xywh_one_based(boxes[index]),
                occluded=occluded,
                subsets=("full",),
                image=images[index],
            )
        )
    return {"test": faces}


def _check_point_files(paths: list[Path], expected: int) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataFormatError(
            f"{paths[0].parent}: {len(missing)} of {expected} COFW-68 point files are missing "
            f"(one per box in {BOXES_MAT}):\n  {list_paths(missing)}\nFix: {_FIX_COFW68}"
        )


def _read_points_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    values = load_mat(path, ["Points", "Occ"], _FIX_COFW68)
    points = as_matrix(values["Points"], path, "Points", columns=2, fix=_FIX_COFW68)
    occluded = np.asarray(values["Occ"]).ravel()
    if len(points) != NUM_POINTS_68 or occluded.size != NUM_POINTS_68:
        raise format_error(
            path, f"expected 68 points and 68 occlusion flags, found {len(points)} and {occluded.size}", _FIX_COFW68
        )
    if not np.all(np.isfinite(points)):
        raise format_error(path, "Points holds non-finite values", _FIX_COFW68)
    return points - 1.0, occluded.astype(np.float64) != 0


# ---------------------------------------------------------------------------------------- writers


def write_cofw29(
    path: Path, split: str, images: list[np.ndarray], landmarks: np.ndarray, occluded: np.ndarray, boxes: np.ndarray
) -> None:
    """Write a COFW colour ``.mat`` (v7.3): 0-based ``(N, 29, 2)`` landmarks, ``(N, 29)`` flags and
    ``x1, y1, x2, y2`` boxes become the 1-based ``phis`` and ``[x y w h]`` of the real files."""
    image_key, phis_key, box_key = _KEYS[split]
    landmarks = np.asarray(landmarks, dtype=np.float64) + 1.0
    phis = np.concatenate([landmarks[:, :, 0], landmarks[:, :, 1], np.asarray(occluded, dtype=np.float64)], axis=1)
    cells = np.empty((len(images), 1), dtype=object)
    for k, image in enumerate(images):
        cells[k, 0] = np.asarray(image, dtype=np.uint8)
    save_mat_v73(Path(path), {image_key: cells, phis_key: phis, box_key: _xywh_one_based(boxes)})


def write_cofw68(raw_root: Path, landmarks: np.ndarray, occluded: np.ndarray, boxes: np.ndarray) -> None:
    """Write ``COFW68_Data``: one ``{i}_points.mat`` per face and the integer ``[x y w h]`` boxes."""
    root = Path(raw_root)
    for index, (points, flags) in enumerate(zip(landmarks, occluded), start=1):
        save_mat_v5(
            root / POINTS_DIR / f"{index}_points.mat",
            {
                "Points": np.asarray(points, dtype=np.float64) + 1.0,
                "Occ": np.asarray(flags, dtype=np.float64).reshape(1, -1),
            },
        )
    save_mat_v5(root / BOXES_MAT, {"bboxes": np.round(_xywh_one_based(boxes))})


def _xywh_one_based(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    return np.stack([x1 + 1.0, y1 + 1.0, x2 - x1, y2 - y1], axis=1)
