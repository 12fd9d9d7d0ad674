"""Finding faces for ``ccdn predict`` when no box is given: OpenCV's bundled Haar cascade.

Why this detector: its model file ships inside the ``opencv-python-headless`` wheel
(``cv2.data.haarcascades``), so nothing is downloaded at run time and it runs on any CPU; its
frontal-face box is close to the detector boxes the benchmarks provide (on the astronaut test image
it lies within 10 pixels of dlib's HOG box). OpenCV 5 dropped the bundled cascades, hence
``opencv-python-headless<5`` in pyproject.toml. It finds near-frontal faces only: for profile or
heavily occluded faces, pass the box (``--box`` / ``--boxes``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ccdn.errors import CCDNError

__all__ = ["CASCADE", "detect_faces"]

CASCADE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBOURS = 5
MIN_FACE_FRACTION = 0.05  # smallest face side searched, as a fraction of the image's shorter side


@lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError as exc:
        raise CCDNError(
            "the face detector needs OpenCV: pip install 'opencv-python-headless<5' "
            "(or give the faces' boxes with --box / --boxes)"
        ) from exc
    path = cv2.data.haarcascades + CASCADE
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise CCDNError(f"{path}: OpenCV's bundled Haar cascade is missing; install 'opencv-python-headless<5'")
    return classifier


def detect_faces(image: np.ndarray) -> np.ndarray:
    """Boxes ``(K, 4)`` float64 ``x1, y1, x2, y2`` (0-based pixels) of the faces in an RGB ``(H, W, 3)``
    uint8 image, largest first; ``(0, 4)`` when none is found."""
    grey = np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    side = max(1, int(MIN_FACE_FRACTION * min(grey.shape)))
    found = _cascade().detectMultiScale(grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBOURS,
                                        minSize=(side, side))
    boxes = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[np.argsort(-areas, kind="stable")]
