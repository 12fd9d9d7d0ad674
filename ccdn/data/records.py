"""The record every dataset parser returns: one annotated face in original-image pixels.

Parsers (``ccdn.data.formats``) turn each dataset's on-disk format into these; ``ccdn prepare``
turns them into the compact per-split cache. Keeping this one shape is what lets the same
preparation, training and evaluation code serve 300W, COFW-68, AFLW and WFLW alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RawFace:
    """One face as annotated by its dataset.

    Attributes:
        face_id: stable, unique id within the dataset (e.g. ``"helen/testset/296814969_3"``).
        image_path: the image file, or the ``.mat`` file holding it when ``image`` is set.
        landmarks: ``(L, 2)`` float64, x then y, **0-based** original-image pixels.
        box: ``(4,)`` float64 ``x1, y1, x2, y2`` of the box the dataset provides (detector or
            dataset box; AFLW: the CCL box; WFLW: the rect), 0-based pixels.
        occluded: ``(L,)`` bool, True where the dataset marks the point occluded/invisible.
        attributes: dataset flags (WFLW: pose, expression, illumination, make-up, occlusion, blur).
        subsets: names of the evaluation subsets this face belongs to within its split.
        image: the decoded ``(H, W, 3)`` uint8 image when it lives inside an annotation file (COFW).
    """

    face_id: str
    image_path: Path
    landmarks: np.ndarray
    box: np.ndarray
    occluded: np.ndarray
    attributes: dict[str, bool] = field(default_factory=dict)
    subsets: tuple[str, ...] = ()
    image: np.ndarray | None = None
