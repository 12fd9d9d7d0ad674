"""Crop geometry in one place: the square model crop around a face, the cache that holds it with
margin, the affine warps between them, and the way back to original pixels.

Every crop, augmented or not, is one affine map from *normalised crop coordinates* to the cached
image, so the image, the landmarks and the map back to original pixels can never disagree. Used by
``prepare`` (cache crops), ``augment``/``dataset`` (model crops), ``train`` and ``evaluate`` (back to
original pixels).

Coordinate conventions:
- *pixel coordinates*: pixel ``i`` has its centre at ``i`` (0-based), as the annotations are;
- *corner coordinates*: pixel ``i`` spans ``[i, i + 1)``; corner = pixel + 0.5 (Pillow's convention);
- *normalised crop coordinates* ``u``: ``[0, 1]`` spans the crop's outer edges, so output pixel
  ``q`` of an ``S``-pixel crop has its centre at ``(q + 0.5) / S``; a flip is exactly ``u -> 1 - u``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ccdn.data.errors import DataFormatError
from ccdn.data.records import RawFace


class CropSettings(Protocol):
    """What the cache crop needs from the prepare settings (``ccdn.data.prepare.PrepareSettings``)."""

    box: str
    enlarge: float
    cache_size: int
    cache_margin: float


@dataclass(frozen=True)
class CropParams:
    """One crop of the cached image, relative to the model crop (the cache's central square).

    Attributes:
        angle: rotation of the sampling box, degrees, in image coordinates (y down).
        scale: box side relative to the model crop (> 1 shows more context, a smaller face).
        shift: box-centre offset ``(dx, dy)`` as fractions of the model-crop side.
        flip: horizontal flip (landmarks permuted with the mirror).
    """

    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False


IDENTITY = CropParams()


def translation(dx: float, dy: float) -> np.ndarray:
    """3×3 homogeneous translation."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def crop_matrix(params: CropParams, cache_size: int, cache_margin: float) -> np.ndarray:
    """3×3 map from normalised crop coordinates ``u`` to cache *pixel* coordinates.

    The unaugmented model crop is the central ``cache_size / cache_margin`` square of the cache.
    """
    side = cache_size / cache_margin
    centre = cache_size / 2.0 + np.asarray(params.shift, dtype=np.float64) * side
    theta = math.radians(params.angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0], [0, 0, 1]])
    scale = np.diag([side * params.scale, side * params.scale, 1.0])
    flip = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if params.flip else np.eye(3)
    to_corner_box = translation(centre[0], centre[1]) @ rotation @ scale @ translation(-0.5, -0.5) @ flip
    return translation(-0.5, -0.5) @ to_corner_box


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3×3 (or 2×3) affine map to ``(..., 2)`` points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def warp_affine(image: np.ndarray, pixel_map: np.ndarray, out_size: int) -> np.ndarray:
    """Resample ``image`` (H, W, 3) uint8 into an ``out_size``² crop, bilinear, black outside.

    ``pixel_map`` (3×3) maps output *pixel* coordinates to input *pixel* coordinates; it is turned
    into Pillow's corner convention here so callers never deal with the half-pixel shift.
    """
    corner_map = translation(0.5, 0.5) @ np.asarray(pixel_map, dtype=np.float64) @ translation(-0.5, -0.5)
    source = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    warped = source.transform(
        (out_size, out_size),
        Image.Transform.AFFINE,
        data=tuple(corner_map[:2].ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    return np.array(warped)  # a writable copy (torch.from_numpy rejects read-only arrays)


def square_box(face: RawFace, settings: CropSettings) -> tuple[np.ndarray, float]:
    """Centre (pixel coordinates) and side of the square model crop for one face."""
    if settings.box == "provided":
        box = np.asarray(face.box, dtype=np.float64)
    else:
        points = np.asarray(face.landmarks, dtype=np.float64)
        box = np.concatenate([points.min(axis=0), points.max(axis=0)])
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise DataFormatError(
            f"face {face.face_id} ({face.image_path}): {settings.box} box {box.tolist()} is not a valid "
            "x1, y1, x2, y2 box; fix the annotation or prepare with box=landmarks"
        )
    centre = (box[:2] + box[2:]) / 2.0
    side = float(max(box[2] - box[0], box[3] - box[1]) * settings.enlarge)
    return centre, side


def cache_to_original(centre: np.ndarray, side: float, settings: CropSettings) -> np.ndarray:
    """3×3 map from cache pixel coordinates to original pixel coordinates (isotropic, no rotation)."""
    extent = side * settings.cache_margin  # the cache's side in original pixels
    k = extent / settings.cache_size
    return np.array(
        [[k, 0.0, centre[0] - extent / 2 + 0.5 * k], [0.0, k, centre[1] - extent / 2 + 0.5 * k], [0.0, 0.0, 1.0]]
    )


def crop_face(image: Image.Image, face: RawFace, settings: CropSettings) -> tuple[np.ndarray, np.ndarray]:
    """The ``(C, C, 3)`` uint8 cache crop of one face and its 3×3 cache→original pixel map."""
    centre, side = square_box(face, settings)
    to_original = cache_to_original(centre, side, settings)
    crop = warp_region(image, to_original, settings.cache_size)
    return crop, to_original


def warp_region(image: Image.Image, to_original: np.ndarray, size: int) -> np.ndarray:
    """Bilinear warp of the needed image region; box-filters first when shrinking ≥ 2× (no aliasing)."""
    k = to_original[0, 0]
    factor = max(1, int(k))
    corners = apply_affine(to_original, np.array([[-0.5, -0.5], [size - 0.5, size - 0.5]]))
    lo = np.floor(corners[0] / factor) * factor - factor  # region in corner coordinates
    hi = np.ceil(corners[1] / factor) * factor + factor
    width, height = image.size
    x0, y0 = int(max(0, min(lo[0], width))), int(max(0, min(lo[1], height)))
    x1, y1 = int(max(x0, min(hi[0], width))), int(max(y0, min(hi[1], height)))
    if x1 - x0 < factor or y1 - y0 < factor:  # the crop lies outside the image
        return np.zeros((size, size, 3), dtype=np.uint8)
    region = image.crop((x0, y0, x1, y1))
    if factor > 1:
        region = region.reduce(factor)
    # region pixel p <-> original pixel x0 + factor * p + (factor - 1) / 2
    region_to_original = np.array(
        [[factor, 0.0, x0 + (factor - 1) / 2], [0.0, factor, y0 + (factor - 1) / 2], [0.0, 0.0, 1.0]]
    )
    return warp_affine(region, np.linalg.inv(region_to_original) @ to_original, size)


def crop_to_original_map(cache_to_original: np.ndarray, crop_to_cache: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` map normalised crop coordinates → original pixels, from the cache's ``(2, 3)``
    cache→original map and a crop's 3×3 crop→cache map."""
    cache_to_original = np.vstack([np.asarray(cache_to_original, dtype=np.float64), [0.0, 0.0, 1.0]])
    return (cache_to_original @ crop_to_cache)[:2]


def to_original(points: Any, crop_to_original: Any) -> Any:
    """Crop-normalised ``(B, L, 2)`` → original pixels with the ``(B, 2, 3)`` affine maps (torch or NumPy)."""
    return points @ crop_to_original[:, :, :2].swapaxes(1, 2) + crop_to_original[:, None, :, 2]
