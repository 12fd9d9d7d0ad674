"""``ccdn prepare custom``: a folder of one's own annotated faces becomes a cache like the benchmarks'.

The cache is the same Contract 2 file the official sets get, so ``ccdn train`` and ``ccdn evaluate``
work on it unchanged. Its ``meta`` marks it real (``synthetic: false``, unless the folder holds
``ccdn synth``'s ``SYNTHETIC.json``) and ``custom: true``, with its source folder and where its
boxes came from; evaluation scores it with its scheme's normalisers
(``ccdn.data.schemes.SCHEME_NORMS``). Everything goes to split ``test``; with
``--train-fraction F`` a seeded random fraction F goes to ``train`` instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import ccdn
from ccdn.data.formats.folder import AnnotatedFolder, read_annotated_folder
from ccdn.data.prepare import (
    CACHE_FORMAT_VERSION,
    PrepareSettings,
    reusable_caches,
    read_synthetic_marker,
    build_split_arrays,
    input_fingerprint,
)
from ccdn.data.records import RawFace
from ccdn.data.schemes import SCHEMES, get_scheme
from ccdn.errors import CCDNError
from ccdn.io import write_npz

__all__ = ["prepare_custom", "custom_name", "split_faces", "add_own_data_arguments", "run_custom"]

SPLIT_SEED = 0


def custom_name(raw_root: Path) -> str:
    """The dataset name a custom set gets by default: ``custom-<folder name>`` (file-name safe)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(raw_root).resolve().name).strip("_.") or "set"
    return f"custom-{stem}"


def split_faces(faces: list[RawFace], train_fraction: float, seed: int = SPLIT_SEED) -> dict[str, list[RawFace]]:
    """``{"test": faces}``, or a seeded random ``train`` / ``test`` split when ``train_fraction > 0``."""
    if not 0.0 <= train_fraction < 1.0:
        raise CCDNError(f"--train-fraction {train_fraction} must be in [0, 1)")
    if train_fraction == 0.0:
        return {"test": list(faces)}
    order = np.random.default_rng(seed).permutation(len(faces))
    n_train = int(round(train_fraction * len(faces)))
    if n_train == 0 or n_train == len(faces):
        raise CCDNError(
            f"--train-fraction {train_fraction} of {len(faces)} faces leaves an empty split; "
            "choose a fraction that puts at least one face in each of train and test"
        )
    chosen = set(order[:n_train].tolist())
    return {
        "train": [face for i, face in enumerate(faces) if i in chosen],
        "test": [face for i, face in enumerate(faces) if i not in chosen],
    }


def prepare_custom(
    raw_root: Path | str,
    out_root: Path | str,
    scheme: str,
    *,
    boxes: Path | str | None = None,
    train_fraction: float = 0.0,
    name: str | None = None,
    settings: PrepareSettings | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Build (or reuse) ``out_root/<split>.npz`` from a folder of annotated faces; ``{split: path}``.

    Nothing is written unless every annotation, image and box is valid.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    scheme = str(scheme)
    if scheme not in SCHEMES:
        raise CCDNError(f"--scheme {scheme} is not one of {', '.join(SCHEMES)}")
    settings = settings or PrepareSettings()
    name = name or custom_name(raw_root)
    boxes = Path(boxes) if boxes is not None else None
    if not raw_root.is_dir():
        raise CCDNError(f"{raw_root}: folder not found; pass --raw DIR, the folder of your images and annotations")
    fingerprint = _custom_fingerprint(name, scheme, raw_root, boxes, train_fraction, settings)
    splits = ("train", "test") if train_fraction > 0 else ("test",)
    reusable = reusable_caches(out_root, splits, fingerprint, force)
    if len(reusable) == len(splits):
        print(f"prepare custom: cache in {out_root} is up to date; nothing to do", file=sys.stderr)
        return reusable
    synthetic = read_synthetic_marker(raw_root)  # a `ccdn synth` folder stays labelled synthetic
    folder = read_annotated_folder(raw_root, get_scheme(scheme).num_points, boxes)
    faces_by_split = split_faces(folder.faces, train_fraction)
    arrays_by_split = {
        split: build_split_arrays(name, split, faces, settings, raw_root=raw_root, scheme=scheme)
        for split, faces in faces_by_split.items()
        if split not in reusable
    }
    out_root.mkdir(parents=True, exist_ok=True)
    paths = dict(reusable)
    for split, arrays in arrays_by_split.items():
        meta = _custom_meta(name, split, scheme, arrays, settings, fingerprint, raw_root, folder, boxes, synthetic)
        arrays["meta"] = np.array(json.dumps(meta))
        paths[split] = out_root / f"{split}.npz"
        write_npz(paths[split], arrays)
    return paths


def _custom_fingerprint(name, scheme, raw_root, boxes, train_fraction, settings) -> dict[str, object]:
    boxes_digest = hashlib.sha256(boxes.read_bytes()).hexdigest() if boxes is not None and boxes.is_file() else None
    return {
        "dataset": name,
        "settings": asdict(settings),
        "inputs": input_fingerprint(raw_root, settings.fingerprint),
        "code": {"ccdn": ccdn.__version__, "cache_format": CACHE_FORMAT_VERSION},
        "custom": {"scheme": scheme, "boxes_sha256": boxes_digest, "train_fraction": train_fraction,
                   "split_seed": SPLIT_SEED},
    }


def _custom_meta(name, split, scheme, arrays, settings, fingerprint, raw_root, folder: AnnotatedFolder, boxes,
                 synthetic):
    ids = {str(face_id) for face_id in arrays["face_ids"]}
    used = {face_id: source for face_id, source in folder.box_sources.items() if face_id in ids}
    return {
        "dataset": name,
        "split": split,
        "scheme": scheme,
        "synthetic": synthetic is not None,
        "synthetic_info": synthetic,
        "custom": True,
        "source": str(raw_root.resolve()),
        "boxes_file": str(boxes.resolve()) if boxes is not None else None,
        "box_sources": AnnotatedFolder([], used).box_source_counts(),
        "partial": None,
        "settings": asdict(settings),
        "fingerprint": fingerprint,
        "counts": {str(s): int(m.sum()) for s, m in zip(arrays["subset_names"], arrays["subset_masks"])},
        "raw_root": str(raw_root),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------- CLI


def add_own_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--partial`` and the ``ccdn prepare custom`` options, on the ``prepare`` sub-parser."""
    parser.add_argument("--partial", action="store_true",
                        help="accept a subset of the official release (labelled 'partial: n of N faces')")
    group = parser.add_argument_group("custom sets (DATASET = custom)")
    group.add_argument("--scheme", choices=list(SCHEMES), default=None, help="landmark scheme of the annotations")
    group.add_argument("--boxes", type=Path, default=None,
                       help='JSON {"FACE_ID": [x1, y1, x2, y2]} (0-based pixels); '
                       "default: the annotation's box, else the landmarks' box")
    group.add_argument("--train-fraction", type=float, default=0.0,
                       help="put this seeded random fraction of the faces in split train (default 0: all in test)")
    group.add_argument("--name", default=None, help="dataset name in the cache and metrics (default custom-<folder>)")


def run_custom(args: argparse.Namespace, settings: PrepareSettings) -> bool:
    """Prepare a custom set if ``args.dataset`` is ``custom`` (True), else refuse custom-only options."""
    if args.dataset != "custom":
        if args.scheme or args.boxes or args.train_fraction or args.name:
            raise CCDNError("--scheme, --boxes, --train-fraction and --name are for `ccdn prepare custom` only")
        return False
    if args.raw is None or args.scheme is None:
        raise CCDNError("`ccdn prepare custom` needs --raw DIR (images + annotation files) and --scheme {68,98,29,19}")
    if args.partial:
        raise CCDNError("--partial is for the official sets; a custom set is always taken as it is")
    out = args.out or Path("data/prepared") / (args.name or custom_name(args.raw))
    paths = prepare_custom(args.raw, out, args.scheme, boxes=args.boxes, train_fraction=args.train_fraction,
                           name=args.name, settings=settings, force=args.force)
    for split, path in sorted(paths.items()):
        print(f"{split}: {path}")
    return True
