"""A folder of one's own annotated faces: images plus ``.pts``, menpo ``.ljson`` or dlib ``.xml`` files.

This is what ``ccdn prepare custom`` reads. Each ``.pts`` / ``.ljson`` file annotates the image with
the same stem next to it (any format Pillow reads); a dlib imglab ``.xml`` names its images and
boxes itself. Sub-folders are searched; hidden files and folders are skipped.

Box policy (docs/data.md, "Your own data"): a face's box is, in this order, its entry in the boxes
file (``--boxes``, JSON ``{face_id: [x1, y1, x2, y2]}`` in 0-based pixels), the box stored in its
annotation (dlib XML), or the tight box around its landmarks.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccdn.data.errors import DataFormatError
from ccdn.data.formats.common import check_images, format_error
from ccdn.data.formats.dlib_xml import read_dlib_xml
from ccdn.data.formats.images import ImageFinder
from ccdn.data.formats.ljson import read_ljson
from ccdn.data.formats.pts import read_pts
from ccdn.data.records import RawFace

__all__ = ["ANNOTATION_SUFFIXES", "AnnotatedFolder", "read_annotated_folder", "read_boxes_file"]

ANNOTATION_SUFFIXES = (".pts", ".ljson", ".xml")
_FIX_IMAGES = "put each image next to its annotation file under the same stem, or remove that annotation"
_FIX_BOXES = 'write the boxes file as JSON {"FACE_ID": [x1, y1, x2, y2], ...} with one entry per face (0-based pixels)'


@dataclass
class AnnotatedFolder:
    """The faces of a folder (sorted by face id, subset ``full``) and where each box came from."""

    faces: list[RawFace]
    box_sources: dict[str, str]  # face id -> "file" | "annotation" | "landmarks"

    def box_source_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.box_sources.values()).items()))


def read_annotated_folder(
    root: Path, num_points: int, boxes_file: Path | None = None, check_image_files: bool = True
) -> AnnotatedFolder:
    """Every annotated face under ``root``.

    Face ids are the annotation's path relative to ``root`` without its suffix (``.pts``/``.ljson``)
    or ``XML_PATH/IMAGE#k`` for the k-th box of an image in a dlib file.
    """
    root = Path(root)
    if not root.is_dir():
        raise format_error(root, "folder not found", "pass the folder holding your images and annotation files")
    files = sorted(_annotation_files(root))
    if not files:
        problem = f"no annotation files ({', '.join(ANNOTATION_SUFFIXES)}) in this folder or below"
        raise format_error(root, problem, "add one .pts or .ljson per image (same stem), or a dlib imglab .xml")
    finder = ImageFinder()
    faces: list[RawFace] = []
    sources: dict[str, str] = {}
    for path in files:
        for face in _read_file(root, path, num_points, finder):
            faces.append(face)
            sources[face.face_id] = "annotation" if path.suffix.lower() == ".xml" else "landmarks"
    _check_unique(root, faces)
    if boxes_file is not None:
        _apply_boxes(faces, read_boxes_file(boxes_file), Path(boxes_file), sources)
    if check_image_files:
        check_images(faces, _FIX_IMAGES)
    return AnnotatedFolder(sorted(faces, key=lambda face: face.face_id), sources)


def _annotation_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in ANNOTATION_SUFFIXES:
                yield Path(dirpath) / name


def _read_file(root: Path, path: Path, num_points: int, finder: ImageFinder) -> list[RawFace]:
    relative = path.relative_to(root).with_suffix("").as_posix()
    suffix = path.suffix.lower()
    if suffix == ".xml":
        faces = read_dlib_xml(path, num_points)
        for face in faces:
            face.face_id = f"{relative}/{face.face_id}"
            if not Path(face.image_path).is_file():
                face.image_path = finder.find(Path(face.image_path).parent, Path(face.image_path).stem)
        return faces
    fix = f"check the file, or pass the --scheme whose point count it has ({num_points} expected now)"
    landmarks = read_pts(path, num_points, fix=fix) if suffix == ".pts" else read_ljson(path, num_points)
    box = np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])
    return [
        RawFace(
            face_id=relative,
            image_path=finder.find(path.parent, path.stem),
            landmarks=landmarks,
            box=box,
            occluded=np.zeros(num_points, dtype=bool),
            subsets=("full",),
        )
    ]


def _check_unique(root: Path, faces: list[RawFace]) -> None:
    repeated = sorted(k for k, n in Counter(face.face_id for face in faces).items() if n > 1)
    if repeated:
        raise format_error(
            root,
            f"two annotation files describe the same face(s) {repeated[:5]} (e.g. a .pts and a .ljson)",
            "keep one annotation file per image",
        )


def read_boxes_file(path: Path) -> dict[str, np.ndarray]:
    """``{face_id: (4,) x1, y1, x2, y2}`` from a JSON boxes file; every box must be valid."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise format_error(path, f"cannot read the boxes file ({exc})", _FIX_BOXES) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise format_error(path, f"not valid JSON ({exc})", _FIX_BOXES) from exc
    if not isinstance(data, dict):
        raise format_error(path, "expected a JSON object mapping face ids to boxes", _FIX_BOXES)
    boxes = {}
    for key, value in data.items():
        box = np.asarray(value, dtype=np.float64).ravel() if _is_numbers(value) else np.empty(0)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            problem = f"entry {key!r}: {value!r} is not a box [x1, y1, x2, y2] with x2 > x1, y2 > y1"
            raise format_error(path, problem, _FIX_BOXES)
        boxes[str(key)] = box
    return boxes


def _is_numbers(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _apply_boxes(faces: list[RawFace], boxes: dict[str, np.ndarray], path: Path, sources: dict[str, str]) -> None:
    ids = {face.face_id for face in faces}
    unknown = sorted(set(boxes) - ids)
    if unknown:
        raise DataFormatError(
            f"{path}: {len(unknown)} box entr{'y' if len(unknown) == 1 else 'ies'} name no face of the set: "
            f"{unknown[:5]}. Fix: use the face ids (annotation path relative to the folder, without suffix), "
            f"e.g. {sorted(ids)[:3]}"
        )
    for face in faces:
        if face.face_id in boxes:
            face.box = boxes[face.face_id]
            sources[face.face_id] = "file"
