"""``ccdn benchmark data``: how many training samples per second one data-loading worker makes.

Augmentation must not starve the GPU: at the paper size a CCDN step takes some milliseconds per
image (see "Models" in docs/performance.md), so a worker has to make well over a few hundred
128-pixel crops per second. This prints a Markdown table for docs/performance.md ("Data"):
single-process samples/s for the bare augmentation warp, a ``LandmarkDataset`` item with and without
augmentation, a prepare-time crop, and DataLoader throughput for each ``--workers`` count.
Figures are medians over ``--repeats`` rounds; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ccdn.data.augment import AugmentConfig, augment_sample, sample_params
from ccdn.data.dataset import LandmarkDataset, load_split
from ccdn.data.prepare import PrepareSettings, crop_face
from ccdn.data.records import RawFace
from ccdn.data.schemes import get_scheme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-size", type=int, default=128, help="model input side (default 128)")
    parser.add_argument("--cache-size", type=int, default=192, help="cached crop side (default 192)")
    parser.add_argument("--faces", type=int, default=256, help="faces in the synthetic cache")
    parser.add_argument("--samples", type=int, default=1000, help="items per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # per-worker figures: one thread, as inside a DataLoader worker
    print(_machine())
    with tempfile.TemporaryDirectory() as tmp:
        split = load_split(_write_synthetic_cache(Path(tmp), args.faces, args.cache_size), "train")
        rows = _single_process_rows(split, args)
        rows += _loader_rows(split, args)
    print()
    print(f"| what (input {args.input_size}, cache {args.cache_size}) | samples/s | ms/sample |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {1000.0 / rate:.2f} |")
    return 0


def _single_process_rows(split, args) -> list[tuple[str, float]]:
    config = AugmentConfig()
    mirror = np.asarray(get_scheme(split.scheme).mirror)
    augmented = LandmarkDataset(split, args.input_size, config, seed=0)
    plain = LandmarkDataset(split, args.input_size, None)
    n = len(split)

    def warp_only(i: int) -> None:
        params = sample_params(config, np.random.default_rng(i))
        augment_sample(
            split.images[i % n], split.landmarks[i % n], params,
            input_size=args.input_size, cache_margin=split.cache_margin, mirror=mirror,
        )  # fmt: skip

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (800, 1000, 3), dtype=np.uint8))
    face = RawFace("bench", Path("bench.png"), np.array([[400.0, 300.0], [600.0, 520.0]]),
                   np.array([400.0, 300.0, 600.0, 520.0]), np.zeros(2, bool))  # fmt: skip
    settings = PrepareSettings(cache_size=args.cache_size)
    return [
        ("augmentation warp (sample + PIL affine + landmarks)", _rate(warp_only, args)),
        ("LandmarkDataset item, augmented (one worker)", _rate(lambda i: augmented[i % n], args)),
        ("LandmarkDataset item, no augmentation (evaluation)", _rate(lambda i: plain[i % n], args)),
        ("prepare crop, 220 px face from a 1000x800 image", _rate(lambda i: crop_face(image, face, settings), args)),
    ]


def _loader_rows(split, args) -> list[tuple[str, float]]:
    rows = []
    dataset = LandmarkDataset(split, args.input_size, AugmentConfig(), seed=0)
    for workers in args.workers:
        if workers == 0:
            continue
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers)
        rates = []
        for _ in range(args.repeats):
            start, count = time.perf_counter(), 0
            for batch in loader:  # includes worker start-up, as every non-persistent epoch does
                count += batch["image"].shape[0]
            rates.append(count / (time.perf_counter() - start))
        label = f"DataLoader, {workers} worker{'s' if workers != 1 else ''}, batch {args.batch_size} (total)"
        rows.append((label, statistics.median(rates)))
    return rows


def _rate(fn: Callable[[int], object], args) -> float:
    fn(0)  # warm-up
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(args.samples):
            fn(i)
        rates.append(args.samples / (time.perf_counter() - start))
    return statistics.median(rates)


def _write_synthetic_cache(root: Path, faces: int, cache_size: int) -> Path:
    """A cache with smooth random images (JPEG-like content, not noise) in the real file format."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (faces, cache_size // 8, cache_size // 8, 3), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(s).resize((cache_size, cache_size), Image.BILINEAR)) for s in small])
    landmarks = rng.uniform(0.3, 0.7, (faces, 68, 2)).astype(np.float32) * cache_size
    to_original = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32), (faces, 1, 1))
    meta = {"dataset": "300w", "split": "train", "scheme": "68", "synthetic": True,
            "settings": {"cache_size": cache_size, "cache_margin": 1.5}}  # fmt: skip
    np.savez(
        root / "train.npz",
        images=images,
        landmarks=landmarks,
        to_original=to_original,
        original_landmarks=landmarks,
        boxes=np.zeros((faces, 4), np.float32),
        face_size=np.ones(faces, np.float32),
        occluded=np.zeros((faces, 68), bool),
        attributes=np.zeros((faces, 0), np.uint8),
        attribute_names=np.array([], dtype=str),
        subset_names=np.array(["full"]),
        subset_masks=np.ones((1, faces), bool),
        face_ids=np.array([f"f{i}" for i in range(faces)]),
        meta=np.array(json.dumps(meta)),
    )
    return root


def _machine() -> str:
    return (
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} logical CPUs; "
        f"Python {platform.python_version()}, torch {torch.__version__}, Pillow {PIL.__version__}, "
        f"numpy {np.__version__}"
    )
