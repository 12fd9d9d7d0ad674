"""Is a raw set the whole official release? The split-size check, and ``--partial`` for a part of it.

On real data the split and subset sizes must match the standard protocol (``check_counts``), so an
incomplete download is never scored as if it were the benchmark.

``ccdn prepare DATASET --partial`` prepares the part of an official release one has.

A researcher often holds a few folders of 300W, or WFLW's annotation lists with only some of the
images. Such a set is real data, so it must never be labelled synthetic; but its numbers are not
comparable with the paper's, so the cache, ``metrics.json`` and every table say
"partial: n of N faces". What "part" means: source folders that are absent are skipped (300W), and
faces whose image file is absent are dropped (all sets); annotation files that are present must be
valid, exactly as for the full release.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ccdn.data.errors import DataFormatError
from ccdn.data.records import RawFace
from ccdn.data.schemes import get_dataset

__all__ = ["check_counts", "read_partial", "partial_reader_options", "keep_faces_with_images", "partial_counts"]

# reader options that let a dataset's parser accept a subset of its release layout
_SKIP_ABSENT_PARTS: dict[str, dict[str, object]] = {"300w": {"require_all_folders": False}}


def read_partial(
    name: str, raw_root: Path, read: Callable[[dict], dict[str, list[RawFace]]], options: Mapping[str, object]
) -> tuple[dict[str, list[RawFace]], dict[str, dict[str, int]]]:
    """The faces present (by split) and ``{split: {"n", "of"}}``; ``read(options)`` runs the parser."""
    faces_by_split = keep_faces_with_images(name, raw_root, read(partial_reader_options(name, options)))
    return faces_by_split, partial_counts(name, faces_by_split)


def partial_reader_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    """The parser options for a partial ``name``: skip absent parts, leave missing images to us."""
    return {**options, "check_image_files": False, **_SKIP_ABSENT_PARTS.get(name, {})}


def keep_faces_with_images(
    name: str, raw_root: Path, faces_by_split: Mapping[str, list[RawFace]]
) -> dict[str, list[RawFace]]:
    """Faces whose image exists (embedded or on disk); empty splits are dropped, and at least one face must stay."""
    kept: dict[str, list[RawFace]] = {}
    for split, faces in faces_by_split.items():
        present = [face for face in faces if face.image is not None or Path(face.image_path).is_file()]
        if len(present) < len(faces):
            print(f"prepare {name} --partial: {split}: {len(faces) - len(present)} face(s) without an image file "
                  "left out", file=sys.stderr)
        if present:
            kept[split] = present
    if not kept:
        raise DataFormatError(
            f"{raw_root}: --partial found no {name} face with both an annotation and its image; "
            "check the layout in docs/data.md"
        )
    return kept


def partial_counts(name: str, faces_by_split: Mapping[str, list[RawFace]]) -> dict[str, dict[str, int]]:
    """``{split: {"n": faces present, "of": faces in the official release}}``."""
    info = get_dataset(name)
    return {
        split: {"n": len(faces), "of": int(info.expected_counts[(split, "full")])}
        for split, faces in faces_by_split.items()
    }


def check_counts(name: str, faces_by_split: Mapping[str, list[RawFace]], *, synthetic: bool, raw_root: Path) -> None:
    """On real data, every enforced split/subset count must match the standard protocol."""
    if synthetic:
        return
    info = get_dataset(name)
    mismatches = []
    for (split, subset), expected in info.expected_counts.items():
        actual = _subset_count(faces_by_split.get(split, []), subset)
        if actual != expected:
            mismatches.append(f"{split}/{subset}: {actual} faces, expected {expected}")
    if mismatches:
        raise DataFormatError(
            f"{raw_root}: the {name} data does not have the standard split sizes ({'; '.join(mismatches)}). "
            f"If the download is incomplete, re-run `ccdn fetch {name}`; to use the part you have, run "
            f"`ccdn prepare {name} --partial` (results say 'partial: n of N faces'); for faces of your own, "
            "`ccdn prepare custom --raw DIR --scheme N` (docs/data.md, 'Your own data')."
        )
    for (split, subset), quoted in info.reported_counts.items():
        actual = _subset_count(faces_by_split.get(split, []), subset)
        if actual != quoted:
            warnings.warn(
                f"{name} {split}/{subset} has {actual} faces; the paper quotes {quoted} ({info.notes})",
                stacklevel=2,
            )


def _subset_count(faces: Sequence[RawFace], subset: str) -> int:
    return sum(subset in face.subsets for face in faces)
