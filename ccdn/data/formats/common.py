"""Helpers every format parser shares: error messages, image checks and image decoding.

Parsers never skip a bad face silently: they raise :class:`DataFormatError` with the file (and
line), what is wrong and how to fix it. Keeping the message shape in one place keeps the four
parsers consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ccdn.data.errors import DataFormatError
from ccdn.data.formats.images import is_missing_image_path, missing_images_note
from ccdn.data.records import RawFace

__all__ = [
    "format_error",
    "check_images",
    "load_image",
    "box_from_xywh_one_based",
    "to_rgb_array",
    "MAX_LISTED",
    "list_paths",
]

MAX_LISTED = 5  # how many missing/unreadable paths an error message lists


def list_paths(paths: list[Path]) -> str:
    """The first MAX_LISTED paths, one per line, and how many more there are (for error messages)."""
    listed = "\n  ".join(str(p) for p in paths[:MAX_LISTED])
    more = f"\n  ... and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
    return listed + more


def format_error(path: Path | str, problem: str, fix: str, line: int | None = None) -> DataFormatError:
    """A ``DataFormatError`` reading ``FILE[:LINE]: problem. Fix: fix``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return DataFormatError(f"{where}: {problem}. Fix: {fix}")


def check_images(faces: Iterable[RawFace], fix: str, progress: bool = False) -> None:
    """Check that every referenced image exists and has a readable image header.

    Missing files are collected and reported together (the first few paths and the count), since a
    partial extraction usually loses many at once; the first unreadable file raises immediately.
    Faces whose image is stored inside an annotation file (``face.image`` set) are skipped.
    """
    paths = sorted({face.image_path for face in faces if face.image is None})
    missing = [p for p in paths if not p.is_file()]
    if missing:
        note = f"\n{missing_images_note()}" if any(is_missing_image_path(p) for p in missing) else ""
        raise DataFormatError(
            f"{len(missing)} of {len(paths)} image files referenced by the annotations are missing:\n  "
            f"{list_paths(missing)}{note}\nFix: {fix}"
        )
    iterator: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="checking images", unit="img", leave=False)
    for path in iterator:
        _check_header(path, fix)


def _check_header(path: Path, fix: str) -> None:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed on open; touching size makes that explicit)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise format_error(path, f"not a readable image ({exc})", fix) from exc


def load_image(face: RawFace, allow_truncated: bool = False) -> np.ndarray:
    """The face's image as ``(H, W, 3)`` uint8 RGB, whatever the file's mode (grey, CMYK, RGBA).

    ``allow_truncated`` lets Pillow decode JPEGs cut short (some AFLW files are; HRNet sets
    ``LOAD_TRUNCATED_IMAGES``); by default a truncated file is an error naming it.
    """
    if face.image is not None:
        return to_rgb_array(face.image, face.image_path)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        with Image.open(face.image_path) as image:
            image.load()
            rgb = image.convert("RGB")
    except FileNotFoundError as exc:
        fix = "place the dataset's images as docs/data.md says"
        problem = "image file not found" + (f" {missing_images_note()}" if is_missing_image_path(face.image_path) else "")
        raise format_error(face.image_path, problem, fix) from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise format_error(
            face.image_path,
            f"cannot decode image ({exc})",
            "re-download or re-extract this image (or pass allow_truncated=True for cut-short JPEGs)",
        ) from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return np.asarray(rgb, dtype=np.uint8)


def to_rgb_array(image: np.ndarray, source: Path) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` pixels as contiguous ``(H, W, 3)`` uint8 (grey is replicated)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        problem = f"embedded image has shape {array.shape}, expected (H, W) or (H, W, 3)"
        raise format_error(source, problem, "re-download the file")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def box_from_xywh_one_based(xywh: np.ndarray) -> np.ndarray:
    """MATLAB ``[x y w h]`` rectangle (1-based corner) as 0-based ``x1, y1, x2, y2``."""
    x, y, w, h = (float(v) for v in xywh)
    return np.array([x - 1.0, y - 1.0, x - 1.0 + w, y - 1.0 + h], dtype=np.float64)


