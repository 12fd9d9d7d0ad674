"""Landmark overlays: the original image with each face's box and predicted points drawn on it.

Drawn with Pillow at the image's own resolution, so a point sits on the pixel it names (0-based
pixel centres, as everywhere in ccdn) and the PNG can be checked against the ``.pts`` by eye.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ccdn.io import write_bytes

__all__ = ["draw_overlay", "save_overlay"]

BOX_COLOUR = (0, 220, 0)
POINT_COLOUR = (255, 40, 40)


def draw_overlay(image: np.ndarray, boxes: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> Image.Image:
    """An RGB copy of ``image`` with every box (outline) and landmark set (dots) drawn."""
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    radius = max(1.0, min(canvas.size) / 200.0)
    width = max(1, int(round(radius)))
    for box, points in zip(boxes, landmarks):
        draw.rectangle([float(v) for v in box], outline=BOX_COLOUR, width=width)
        for x, y in np.asarray(points, dtype=np.float64):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=POINT_COLOUR)
    return canvas


def save_overlay(path: Path, image: np.ndarray, boxes: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> Path:
    """Write the overlay as a PNG (atomically) and return its path."""
    buffer = io.BytesIO()
    draw_overlay(image, boxes, landmarks).save(buffer, format="PNG")
    write_bytes(Path(path), buffer.getvalue())
    return Path(path)
