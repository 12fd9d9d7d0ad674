"""``ccdn prepare DATASET``: crop every face of a raw dataset into one compact cache file per split.

Decoding thousands of JPEGs and cropping them every epoch would starve the GPU, and thousands of
small files hurt cluster file systems; so each split becomes one uncompressed ``.npz``
(docs/architecture.md, Contract 2) holding the crops *with margin* for augmentation, the landmarks
in crop pixels and the exact affine map back to original pixels for evaluation.

The cache is idempotent: its ``meta`` records a fingerprint of the settings, the raw input files
and the code version; a matching cache is reused, a different one is refused unless ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

import ccdn
from ccdn.config import parse_key_values
from ccdn.data.crop import apply_affine, cache_to_original, crop_face, square_box  # noqa: F401  (re-exported)
from ccdn.data.completeness import check_counts  # noqa: F401  (re-exported)
from ccdn.errors import CCDNError, DataFormatError
from ccdn.io import write_npz
from ccdn.data.records import RawFace
from ccdn.data.schemes import DATASETS, get_dataset, get_scheme

__all__ = [
    "CACHE_FORMAT_VERSION",
    "PrepareSettings",
    "CacheMismatchError",
    "prepare_dataset",
    "parse_overrides",
    "input_fingerprint",
    "reusable_caches",
    "read_synthetic_marker",
    "build_split_arrays",
    "square_box",
    "crop_face",
]


CACHE_FORMAT_VERSION = 1  # bump when the cache layout or crop geometry changes
BOX_POLICIES = ("provided", "landmarks")
FINGERPRINT_MODES = ("stat", "content")

Reader = Callable[[str, Path], "dict[str, list[RawFace]]"]


class CacheMismatchError(CCDNError):
    """An existing cache was built from other inputs, settings or code."""


@dataclass(frozen=True)
class PrepareSettings:
    """How faces are cropped into the cache (see docs/data_prepare.md for the defaults' reasons).

    Attributes:
        box: ``"provided"`` crops around the dataset's box (the paper: "according to the provided
            bounding boxes"); ``"landmarks"`` around the landmarks' bounding box.
        enlarge: the square model crop's side is ``enlarge * max(box width, box height)``.
        cache_size: side of the cached crop, pixels.
        cache_margin: the cache covers the model crop enlarged by this factor (room to augment).
        fingerprint: ``"stat"`` fingerprints raw files by size and modification time; ``"content"``
            hashes their bytes (slow, but survives copies/checkouts that reset mtimes).
        reader_options: keyword options for the dataset's parser, e.g. ``{"box": "ground_truth"}``
            to take 300W's ``bb_ground_truth`` as the provided box instead of ``bb_detector``.
    """

    box: str = "provided"
    enlarge: float = 1.1
    cache_size: int = 192
    cache_margin: float = 1.5
    fingerprint: str = "stat"
    reader_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.box not in BOX_POLICIES:
            raise CCDNError(f"prepare setting box={self.box!r} is not one of {', '.join(BOX_POLICIES)}")
        if not (isinstance(self.enlarge, (int, float)) and self.enlarge > 0):
            raise CCDNError(f"prepare setting enlarge={self.enlarge!r} must be a positive number")
        if not (isinstance(self.cache_size, int) and self.cache_size >= 16):
            raise CCDNError(f"prepare setting cache_size={self.cache_size!r} must be an integer >= 16")
        if not (isinstance(self.cache_margin, (int, float)) and self.cache_margin >= 1):
            raise CCDNError(f"prepare setting cache_margin={self.cache_margin!r} must be a number >= 1")
        if self.fingerprint not in FINGERPRINT_MODES:
            raise CCDNError(f"prepare setting fingerprint={self.fingerprint!r} is not one of {FINGERPRINT_MODES}")
        if not isinstance(self.reader_options, dict):
            raise CCDNError(
                f"prepare setting reader_options={self.reader_options!r} must be a mapping, e.g. {{box: ground_truth}}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, object] | None) -> PrepareSettings:
        """Settings from a dict; an unknown key is an error naming the known ones."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise CCDNError(f"unknown prepare setting(s) {', '.join(unknown)}; known settings: {', '.join(known)}")
        if isinstance(values.get("enlarge"), int):
            values["enlarge"] = float(values["enlarge"])
        if isinstance(values.get("cache_margin"), int):
            values["cache_margin"] = float(values["cache_margin"])
        return cls(**values)


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``["enlarge=1.25", "box=landmarks"]`` -> ``{"enlarge": 1.25, "box": "landmarks"}`` (YAML values)."""
    return parse_key_values(items)


# -------------------------------------------------------------------------------------- fingerprint


def input_fingerprint(raw_root: Path, mode: str = "stat") -> dict[str, object]:
    """Digest of every (non-hidden) file under ``raw_root``: relative path + size + mtime, or content."""
    digest = hashlib.sha256()
    count = 0
    files = sorted(_iter_files(raw_root))
    show_progress = mode == "content"  # hashing bytes is slow; stat-ing is not
    for path in tqdm(files, desc="fingerprint inputs", unit="file", disable=not show_progress):
        stat = path.stat()
        rel = path.relative_to(raw_root).as_posix()
        if mode == "content":
            digest.update(f"{rel}\0{stat.st_size}\0{_file_sha256(path)}\n".encode())
        else:
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    return {"mode": mode, "files": count, "sha256": digest.hexdigest()}


def _iter_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(name: str, settings: PrepareSettings, inputs: dict[str, object]) -> dict[str, object]:
    return {
        "dataset": name,
        "settings": asdict(settings),
        "inputs": inputs,
        "code": {"ccdn": ccdn.__version__, "cache_format": CACHE_FORMAT_VERSION},
    }


def _fingerprint_differences(old: Mapping, new: Mapping) -> list[str]:
    """Human-readable list of what differs between two fingerprints."""
    differences = []
    for key in ("dataset", "code", "inputs"):
        if old.get(key) != new.get(key):
            differences.append(f"{key} ({old.get(key)} -> {new.get(key)})" if key != "inputs" else "raw input files")
    old_settings, new_settings = old.get("settings", {}), new.get("settings", {})
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            differences.append(f"setting {key} ({old_settings.get(key)!r} -> {new_settings.get(key)!r})")
    return differences


def _existing_fingerprint(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(str(archive["meta"]))["fingerprint"]
    except Exception:  # unreadable or foreign file: treated as a mismatch
        return None


# ------------------------------------------------------------------------------------------ prepare


def prepare_dataset(
    name: str,
    raw_root: Path | str,
    out_root: Path | str,
    settings: PrepareSettings | Mapping[str, object] | None = None,
    *,
    force: bool = False,
    reader: Reader | None = None,
    partial: bool = False,
) -> dict[str, Path]:
    """Build (or reuse) ``out_root/<split>.npz`` for every split of dataset ``name``.

    Args:
        name: dataset name (``300w``, ``cofw68``, ``aflw``, ``wflw``).
        raw_root: the raw dataset root (Contract 1).
        out_root: where the per-split caches go.
        settings: a :class:`PrepareSettings` or a mapping of its fields.
        force: rebuild even if an existing cache was built from other inputs/settings.
        reader: ``(name, raw_root) -> {split: [RawFace]}``; defaults to ``ccdn.data.formats.read_dataset``.
        partial: accept a subset of the release (``ccdn.data.completeness``), labelled "partial: n of N faces".

    Returns:
        ``{split: path}`` of the caches.
    """
    info = get_dataset(name)
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not isinstance(settings, PrepareSettings):
        settings = PrepareSettings.from_mapping(settings)
    if not raw_root.is_dir():
        raise CCDNError(
            f"raw data for {name} not found at {raw_root}; get it with `ccdn fetch {name}` (docs/data.md) "
            f"or make a synthetic set with `ccdn synth {name} --out {raw_root} --seed 0`, or pass --raw DIR"
        )
    fingerprint = _fingerprint(name, settings, input_fingerprint(raw_root, settings.fingerprint))
    if partial:
        fingerprint["partial"] = True
    reusable = reusable_caches(out_root, info.splits, fingerprint, force)
    if len(reusable) == len(info.splits):
        print(f"prepare {name}: cache in {out_root} is up to date; nothing to do", file=sys.stderr)
        return reusable

    synthetic = read_synthetic_marker(raw_root)
    counts_of_release = None
    if partial:
        from ccdn.data.completeness import read_partial

        faces_by_split, counts_of_release = read_partial(
            name, raw_root, lambda options: _read_faces(reader, name, raw_root, options), settings.reader_options
        )
    else:
        faces_by_split = _read_faces(reader, name, raw_root, settings.reader_options)
        check_counts(name, faces_by_split, synthetic=synthetic is not None, raw_root=raw_root)
    out_root.mkdir(parents=True, exist_ok=True)
    paths = dict(reusable)
    for split, faces in faces_by_split.items():
        if split in reusable:
            continue
        arrays = build_split_arrays(name, split, faces, settings, raw_root=raw_root)
        meta = _split_meta(name, split, arrays, settings, fingerprint, synthetic, raw_root)
        meta["partial"] = counts_of_release[split] if counts_of_release else None
        arrays["meta"] = np.array(json.dumps(meta))
        paths[split] = out_root / f"{split}.npz"
        write_npz(paths[split], arrays)
    return paths


def _split_meta(name, split, arrays, settings, fingerprint, synthetic, raw_root) -> dict[str, object]:
    """The cache's ``meta``: what downstream steps need to know (scheme, synthetic) and how it was made."""
    return {
        "dataset": name,
        "split": split,
        "scheme": get_dataset(name).scheme,
        "synthetic": synthetic is not None,
        "synthetic_info": synthetic,
        "settings": asdict(settings),
        "fingerprint": fingerprint,
        "counts": {str(s): int(m.sum()) for s, m in zip(arrays["subset_names"], arrays["subset_masks"])},
        "raw_root": str(raw_root),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def reusable_caches(out_root: Path, splits: Sequence[str], fingerprint: dict, force: bool) -> dict[str, Path]:
    """Caches that match ``fingerprint``; refuse (unless ``force``) when one exists and differs."""
    reusable: dict[str, Path] = {}
    for split in splits:
        path = out_root / f"{split}.npz"
        if not path.exists():
            continue
        old = _existing_fingerprint(path)
        if old == fingerprint:
            reusable[split] = path
        elif not force:
            reasons = _fingerprint_differences(old, fingerprint) if old else ["the file is unreadable or not a cache"]
            raise CacheMismatchError(
                f"{path} was built from other inputs or settings ({'; '.join(reasons)}); "
                "re-run with --force to rebuild it, or choose another --out directory"
            )
    return {} if force else reusable


def read_synthetic_marker(raw_root: Path) -> dict | None:
    """``SYNTHETIC.json`` of a ``ccdn synth`` raw root (``None`` for real data); a bad marker is an error."""
    marker = raw_root / "SYNTHETIC.json"
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{marker}: not valid JSON ({exc}); re-run `ccdn synth` to rewrite it") from exc
    if not isinstance(data, dict) or data.get("synthetic") is not True:
        raise DataFormatError(f'{marker}: expected {{"synthetic": true, ...}}; delete it if the data is real')
    return data


def _read_faces(reader: Reader | None, name: str, raw_root: Path, options: dict) -> dict[str, list[RawFace]]:
    if reader is None:
        from ccdn.data.formats import read_dataset as reader
    try:
        faces = reader(name, raw_root, **options)
    except TypeError as exc:
        if not options:
            raise
        raise CCDNError(f"the {name} parser does not accept reader_options {options} ({exc})") from exc
    if not faces:
        raise DataFormatError(f"{raw_root}: the {name} parser found no faces; check the layout in docs/data.md")
    return faces


def build_split_arrays(name: str, split: str, faces: Sequence[RawFace], settings: PrepareSettings, *,
                       raw_root: Path | None = None, scheme: str | None = None) -> dict[str, np.ndarray]:
    """Crop every face of one split and collect the Contract 2 arrays (all but ``meta``); ``scheme``
    is needed for a set that is not one of the benchmarks (``ccdn prepare custom``)."""
    known_subsets = DATASETS[name].subsets.get(split, ()) if name in DATASETS else ()
    num_points = get_scheme(scheme or get_dataset(name).scheme).num_points
    n, size = len(faces), settings.cache_size
    if n == 0:
        raise DataFormatError(f"{raw_root}: split {split!r} of {name} has no faces")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    to_original = np.empty((n, 2, 3), dtype=np.float32)
    landmarks = np.empty((n, num_points, 2), dtype=np.float32)
    loader = _ImageLoader()
    for i, face in enumerate(tqdm(faces, desc=f"prepare {name}/{split}", unit="face")):
        original = _checked_landmarks(face, num_points)
        images[i], matrix = crop_face(loader.load(face), face, settings)
        to_original[i] = matrix[:2]
        landmarks[i] = apply_affine(np.linalg.inv(matrix), original)
    attribute_names = _ordered_union([list(face.attributes) for face in faces])
    subset_names = _ordered_union([list(known_subsets)] + [list(face.subsets) for face in faces])
    boxes = np.stack([np.asarray(face.box, dtype=np.float32) for face in faces])
    return {
        "images": images,
        "landmarks": landmarks,
        "to_original": to_original,
        "original_landmarks": np.stack([np.asarray(f.landmarks, dtype=np.float32) for f in faces]),
        "boxes": boxes,
        "face_size": np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None)),
        "occluded": np.stack([np.asarray(face.occluded, dtype=bool).reshape(num_points) for face in faces]),
        "attributes": np.array(
            [[bool(face.attributes.get(a, False)) for a in attribute_names] for face in faces], dtype=np.uint8
        ).reshape(n, len(attribute_names)),
        "attribute_names": np.array(attribute_names, dtype=str),
        "subset_names": np.array(subset_names, dtype=str),
        "subset_masks": np.array([[s in face.subsets for face in faces] for s in subset_names], dtype=bool).reshape(
            len(subset_names), n
        ),
        "face_ids": np.array([face.face_id for face in faces], dtype=str),
    }


def _checked_landmarks(face: RawFace, num_points: int) -> np.ndarray:
    points = np.asarray(face.landmarks, dtype=np.float64)
    if points.shape != (num_points, 2) or not np.isfinite(points).all():
        raise DataFormatError(
            f"face {face.face_id} ({face.image_path}): expected {num_points} finite (x, y) landmarks, "
            f"got an array of shape {points.shape}; fix or remove this annotation"
        )
    if np.asarray(face.occluded).size != num_points:
        raise DataFormatError(f"face {face.face_id} ({face.image_path}): occluded flags must have {num_points} values")
    return points


def _ordered_union(groups: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return list(seen)


class _ImageLoader:
    """Decodes images as RGB, keeping the last one (consecutive faces often share an image)."""

    def __init__(self) -> None:
        self._key: Path | None = None
        self._image: Image.Image | None = None

    def load(self, face: RawFace) -> Image.Image:
        if face.image is not None:
            return Image.fromarray(_as_rgb(np.asarray(face.image), face))
        if face.image_path != self._key:
            self._image = _decode(Path(face.image_path), face)
            self._key = face.image_path
        return self._image


def _decode(path: Path, face: RawFace) -> Image.Image:
    try:
        with Image.open(path) as handle:
            return handle.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataFormatError(
            f"{path}: cannot read the image of face {face.face_id} ({exc}); re-download or replace the file "
            "(see docs/data.md)"
        ) from exc


def _as_rgb(image: np.ndarray, face: RawFace) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise DataFormatError(f"{face.image_path}: image of face {face.face_id} has shape {image.shape}, not (H, W, 3)")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image.astype(np.uint8, copy=False))
