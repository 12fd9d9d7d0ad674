"""The paper's §4.1 augmentation, done as one affine warp per sample (geometry: ``ccdn.data.crop``).

The paper samples "the angle of rotation and the bounding box scale from Gaussian distribution";
we add the usual translation and a horizontal flip that also permutes the points with the scheme's
mirror. Every crop — augmented or not — is one affine map from *normalised crop coordinates* to the
cached image, so the image, the landmarks and the map back to original pixels can never disagree.

Coordinate conventions: see :mod:`ccdn.data.crop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ccdn.data.crop import (  # noqa: F401  (re-exported: the crop primitives augmentation uses)
    IDENTITY,
    CropParams,
    apply_affine,
    crop_matrix,
    translation,
    warp_affine,
)

__all__ = [
    "AugmentConfig",
    "CropParams",
    "IDENTITY",
    "sample_params",
    "crop_matrix",
    "warp_affine",
    "apply_affine",
    "augment_sample",
    "flip_sample",
    "translation",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (paper §4.1).

    Attributes:
        rotation_sigma: std of the rotation angle, degrees (Gaussian, paper).
        scale_sigma: std of the relative box-side change (Gaussian around 1, paper).
        translation: the box centre moves uniformly within ``±translation`` of the crop side.
        flip: whether to flip horizontally (points permuted with the scheme's mirror).
        flip_probability: chance of a flip when ``flip`` is on.
        truncate: Gaussian draws are clipped to ``±truncate`` σ (HRNet-style) so that a rare
            extreme draw cannot push the face out of the crop; ``None`` keeps the tails.
    """

    rotation_sigma: float = 10.0
    scale_sigma: float = 0.05
    translation: float = 0.05
    flip: bool = True
    flip_probability: float = 0.5
    truncate: float | None = 2.0

    def __post_init__(self) -> None:
        for name in ("rotation_sigma", "scale_sigma", "translation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"augment.flip_probability must be in [0, 1], got {self.flip_probability!r}")
        if self.truncate is not None and not self.truncate > 0:
            raise ValueError(f"augment.truncate must be positive or null, got {self.truncate!r}")
        if self.truncate is not None and self.scale_sigma * self.truncate >= 1:
            raise ValueError("augment.scale_sigma * truncate must be < 1 so the box side stays positive")


def sample_params(config: AugmentConfig, rng: np.random.Generator) -> CropParams:
    """Draw one crop; always consumes the same number of random numbers (reproducible streams)."""
    z_angle, z_scale = rng.standard_normal(2)
    if config.truncate is not None:
        z_angle, z_scale = np.clip([z_angle, z_scale], -config.truncate, config.truncate)
    dx, dy = rng.uniform(-1.0, 1.0, size=2) * config.translation
    flip = bool(rng.random() < config.flip_probability) and config.flip
    return CropParams(
        angle=float(z_angle * config.rotation_sigma),
        scale=float(1.0 + z_scale * config.scale_sigma),
        shift=(float(dx), float(dy)),
        flip=flip,
    )


def augment_sample(
    image: np.ndarray,
    landmarks: np.ndarray,
    params: CropParams,
    *,
    input_size: int,
    cache_margin: float,
    mirror=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop one cached face for the model.

    Args:
        image: ``(C, C, 3)`` uint8 cache image.
        landmarks: ``(L, 2)`` landmarks in cache pixel coordinates.
        params: the crop (``IDENTITY`` for evaluation).
        input_size: model input side ``S``.
        cache_margin: how much larger the cache is than the model crop.
        mirror: the scheme's flip permutation (required when ``params.flip``).

    Returns:
        ``(S, S, 3)`` uint8 crop, ``(L, 2)`` landmarks in normalised crop coordinates, and the 3×3
        map from normalised crop coordinates to cache pixel coordinates.
    """
    cache_size = image.shape[0]
    u_to_cache = crop_matrix(params, cache_size, cache_margin)
    out_pixel_to_u = np.diag([1.0 / input_size, 1.0 / input_size, 1.0]) @ translation(0.5, 0.5)
    crop = warp_affine(image, u_to_cache @ out_pixel_to_u, input_size)
    points = apply_affine(np.linalg.inv(u_to_cache), np.asarray(landmarks, dtype=np.float64))
    if params.flip:
        if mirror is None:
            raise ValueError("a flipped crop needs the scheme's mirror permutation")
        points = points[np.asarray(mirror)]
    return crop, points, u_to_cache


def flip_sample(image: np.ndarray, landmarks: np.ndarray, mirror) -> tuple[np.ndarray, np.ndarray]:
    """Flip an ``(H, W, C)`` crop and its normalised landmarks; applying it twice is the identity."""
    flipped = landmarks[np.asarray(mirror)].copy()
    flipped[:, 0] = 1.0 - flipped[:, 0]
    return image[:, ::-1].copy(), flipped
