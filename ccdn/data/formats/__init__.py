"""Parsers of the four benchmarks' real on-disk formats (Contract 1 in docs/architecture.md).

``read_dataset(name, raw_root)`` returns ``{split: [RawFace, ...]}`` for ``300w``, ``cofw68``,
``aflw`` and ``wflw``; each format lives in its own module (``w300``, ``cofw``, ``aflw``, ``wflw``),
with ``pts`` (iBUG ``.pts``), ``ljson`` (menpo), ``dlib_xml`` (dlib imglab), ``folder`` (a folder of
one's own faces), ``images`` (image by stem), ``matlab`` for the ``.mat`` plumbing and ``common`` for
error messages and image checks. Split sizes are not checked here: ``ccdn prepare`` checks them
against ``ccdn.data.schemes.DATASETS``. Field-by-field notes: docs/data_formats.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccdn.data.formats import aflw, cofw, w300, wflw
from ccdn.data.formats.common import check_images, format_error, load_image
from ccdn.data.formats.dlib_xml import read_dlib_xml
from ccdn.data.formats.w300 import read_pts
from ccdn.data.records import RawFace
from ccdn.data.schemes import DATASETS

__all__ = ["DATASET_NAMES", "read_dataset", "read_pts", "read_dlib_xml", "load_image", "check_images", "format_error"]

DATASET_NAMES = tuple(DATASETS)  # the one dataset table (ccdn.data.schemes)

_READERS: dict[str, Callable[..., dict[str, list[RawFace]]]] = {
    "300w": w300.read_300w,
    "cofw68": cofw.read_cofw68,
    "aflw": aflw.read_aflw,
    "wflw": wflw.read_wflw,
}


def read_dataset(name: str, raw_root: Path, **options: Any) -> dict[str, list[RawFace]]:
    """Parse dataset ``name`` from its raw root into faces keyed by split.

    ``options`` go to the dataset's reader: ``box`` ("detector" | "ground_truth") for 300W,
    ``one_based`` for AFLW, and ``check_image_files`` / ``progress`` for all four (they matter for
    the sets whose images are separate files: 300W, AFLW, WFLW).
    """
    if name not in _READERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    root = Path(raw_root)
    if not root.is_dir():
        fix = f"run `ccdn fetch {name}` or `ccdn synth {name} --out {root}`"
        raise format_error(root, f"raw root of {name} not found", fix)
    return _READERS[name](root, **options)
