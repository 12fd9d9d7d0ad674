"""Finding an annotation's image by its stem, in any format Pillow reads.

Annotation files (``.pts``, LJSON) name no image: the image is the file next to them with the same
stem. Real folders mix ``.jpg``, ``.png``, ``.ppm`` and upper-case suffixes, so the lookup accepts
every extension Pillow can open, and a face without an image is reported as missing under *all* of
them (``STEM.*``), not as a missing ``.jpg``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

__all__ = ["image_extensions", "ImageFinder", "missing_image_path", "is_missing_image_path", "missing_images_note"]

MISSING_SUFFIX = ".*"  # marks "no image with this stem under any extension" in an image_path
# Pillow registers these but cannot decode pixels without an external handler or program
_UNDECODABLE = frozenset({"BUFR", "GRIB", "HDF5", "WMF", "MPEG", "EPS"})


@lru_cache(maxsize=1)
def image_extensions() -> tuple[str, ...]:
    """Lower-case extensions (with dot) of every format Pillow can open here, sorted."""
    Image.init()
    extensions = Image.registered_extensions().items()
    return tuple(sorted(ext for ext, fmt in extensions if fmt in Image.OPEN and fmt not in _UNDECODABLE))


def missing_image_path(directory: Path, stem: str) -> Path:
    """The placeholder ``directory/STEM.*`` standing for an image that exists under no extension."""
    return Path(directory) / f"{stem}{MISSING_SUFFIX}"


def is_missing_image_path(path: Path) -> bool:
    return Path(path).name.endswith(MISSING_SUFFIX)


def missing_images_note() -> str:
    """What ``STEM.*`` in a missing-image list means (appended to the message once)."""
    return f"(STEM.* = no file STEM with any extension Pillow reads: {' '.join(image_extensions())}, any case)"


class ImageFinder:
    """Looks up images by directory and stem; each directory is listed once (folders of thousands)."""

    def __init__(self) -> None:
        self._listings: dict[Path, dict[str, list[Path]]] = {}

    def find(self, directory: Path, stem: str) -> Path:
        """The image ``directory/STEM.<ext>`` (``.jpg`` preferred, then ``.png``, then by name), or
        :func:`missing_image_path` when there is none."""
        candidates = self._listing(Path(directory)).get(stem, [])
        if not candidates:
            return missing_image_path(directory, stem)
        preference = {".jpg": 0, ".jpeg": 1, ".png": 2}
        return min(candidates, key=lambda p: (preference.get(p.suffix.lower(), 3), p.name))

    def _listing(self, directory: Path) -> dict[str, list[Path]]:
        if directory not in self._listings:
            known = set(image_extensions())
            listing: dict[str, list[Path]] = {}
            if directory.is_dir():
                for path in directory.iterdir():
                    if path.suffix.lower() in known and path.is_file():
                        listing.setdefault(path.stem, []).append(path)
            self._listings[directory] = listing
        return self._listings[directory]
