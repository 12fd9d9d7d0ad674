"""``ccdn predict``: a trained run's landmarks on one's own images, as ``.pts``, JSON and an overlay.

Each face is cropped exactly as evaluation crops a test face (the square of side
``enlarge * max(w, h)`` around its box's centre, resized to the model's input) and its predictions go
back to original pixels through the same affine map, so a number here means what it means in
``metrics.json``. Boxes come from ``--box`` (every image), ``--boxes FILE`` (per image) or, for the
images neither covers, OpenCV's bundled Haar face detector (``ccdn.face_detector``).

Outcomes per image (one line each on stdout): one face → ``STEM.pts``; several faces → every face,
largest first, as ``STEM_01.pts``, ``STEM_02.pts``, … (300W's naming); all faces in ``STEM.json``
and ``STEM_overlay.png``; no face found → nothing written for that image, and the command exits 1
after the other images are done.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ccdn.errors import CCDNError

__all__ = ["ImageFaces", "parse_box", "read_image_boxes", "run_scheme", "predict_landmarks", "predict_images",
           "add_parser", "run"]

NO_FACE_EXIT = 1


@dataclass
class ImageFaces:
    """The result for one image: boxes ``(K, 4)``, landmarks ``(K, L, 2)`` in original pixels, box source."""

    image: Path
    boxes: np.ndarray
    landmarks: np.ndarray
    box_source: str  # "--box", "--boxes" or "detector"
    outputs: list[Path]


def parse_box(text: str) -> np.ndarray:
    """``"x1,y1,x2,y2"`` → a valid box (x2 > x1, y2 > y1), or a ``CCDNError`` saying what is wrong."""
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError as exc:
        raise CCDNError(f"--box {text!r}: expected four numbers x1,y1,x2,y2") from exc
    return _checked_box(box, f"--box {text!r}")


def _checked_box(box: np.ndarray, where: str) -> np.ndarray:
    box = np.asarray(box, dtype=np.float64).ravel()
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise CCDNError(f"{where}: {box.tolist()} is not a box x1, y1, x2, y2 with x2 > x1 and y2 > y1")
    return box


def read_image_boxes(path: Path) -> dict[str, np.ndarray]:
    """``--boxes`` file: JSON ``{"IMAGE": [x1, y1, x2, y2] | [[x1, y1, x2, y2], ...]}``; IMAGE is the
    path as given on the command line, the file name, or its stem. Returns ``{key: (K, 4)}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fix = 'write JSON {"IMAGE": [x1, y1, x2, y2]}'
        raise CCDNError(f"{path}: cannot read the boxes file ({exc}); {fix}") from exc
    if not isinstance(data, dict):
        raise CCDNError(f"{path}: expected a JSON object mapping image names to boxes")
    boxes = {}
    for key, value in data.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CCDNError(f"{path}: entry {key!r} is not a box or a list of boxes") from exc
        array = array.reshape(1, -1) if array.ndim == 1 else array
        if array.ndim != 2 or len(array) == 0:
            raise CCDNError(f"{path}: entry {key!r} is not a box or a list of boxes")
        boxes[str(key)] = np.stack([_checked_box(b, f"{path}: entry {key!r}") for b in array])
    return boxes


def run_scheme(run_dir: Path, config: dict, override: str | None = None) -> str:
    """The landmark scheme a run predicts: ``--scheme``, its benchmark's, or its training cache's."""
    from ccdn.data.schemes import DATASETS

    if override:
        return str(override)
    dataset = str(config["data"]["dataset"])
    if dataset in DATASETS:
        return DATASETS[dataset].scheme
    for split in (config["data"]["train_split"], config["data"]["val_split"]):
        cache = Path(config["data"]["root"]) / f"{split}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as archive:
                return str(json.loads(str(archive["meta"]))["scheme"])
    raise CCDNError(f"{run_dir}: cannot tell the landmark scheme of dataset {dataset!r} (its cache "
                    f"{config['data']['root']} is not here); pass --scheme {{68,98,29,19}}")


def predict_landmarks(model: torch.nn.Module, image_path: Path, boxes: np.ndarray, *, scheme: str, input_size: int,
                      enlarge: float, device: torch.device) -> np.ndarray:
    """``(K, L, 2)`` landmarks in original pixels for the faces in ``boxes`` of one image."""
    from ccdn.data.dataset import LandmarkDataset, PreparedSplit
    from ccdn.data.prepare import PrepareSettings, build_split_arrays
    from ccdn.data.records import RawFace
    from ccdn.data.schemes import get_scheme
    from ccdn.evaluate import predict

    num_points = get_scheme(scheme).num_points
    faces = [RawFace(f"face{k}", image_path, np.zeros((num_points, 2)), box, np.zeros(num_points, dtype=bool),
                     subsets=("full",)) for k, box in enumerate(boxes)]
    settings = PrepareSettings(enlarge=float(enlarge), cache_size=int(input_size), cache_margin=1.0)
    arrays = build_split_arrays("predict", "test", faces, settings, scheme=scheme)
    split = PreparedSplit(**arrays, meta={"scheme": scheme, "settings": {"cache_margin": 1.0}})
    _, original, _ = predict(model, LandmarkDataset(split, input_size, None), device=device)
    return original


def predict_images(run_dir: Path, images: Sequence[Path], out: Path, *, box: np.ndarray | None = None,
                   boxes_file: Path | None = None, scheme: str | None = None, enlarge: float = 1.1,
                   device: str = "auto") -> list[ImageFaces]:
    """Landmarks for every image; writes ``.pts``, ``.json`` and ``_overlay.png`` files under ``out``."""
    from ccdn.config import load_config
    from ccdn.data.formats.common import load_image
    from ccdn.data.records import RawFace
    from ccdn.data.schemes import get_scheme
    from ccdn.distributed import select_device
    from ccdn.evaluate import load_trained_model

    images = [Path(p) for p in images]
    _check_inputs(images)
    per_image = read_image_boxes(boxes_file) if boxes_file is not None else {}
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CCDNError(f"{run_dir} has no config.yaml: pass a `ccdn train` run directory as --run-dir")
    scheme = run_scheme(run_dir, load_config(run_dir / "config.yaml"), scheme)
    num_points = get_scheme(scheme).num_points
    torch_device = select_device(device)
    model, config = load_trained_model(run_dir, num_points, torch_device)
    input_size = int(config["model"]["options"].get("input_size", 128))
    results = []
    for image_path in images:
        pixels = load_image(RawFace("image", image_path, np.zeros((0, 2)), np.zeros(4), np.zeros(0, dtype=bool)))
        face_boxes, source = _boxes_for(image_path, pixels, box, per_image)
        result = ImageFaces(image_path, face_boxes, np.zeros((0, num_points, 2)), source, [])
        if len(face_boxes):
            result.landmarks = predict_landmarks(model, image_path, face_boxes, scheme=scheme, input_size=input_size,
                                                 enlarge=enlarge, device=torch_device)
            result.outputs = _write_outputs(result, pixels, out, run_dir, scheme)
        results.append(result)
    return results


def _check_inputs(images: list[Path]) -> None:
    if not images:
        raise CCDNError("give at least one IMAGE")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise CCDNError(f"image file(s) not found: {', '.join(missing[:5])}")
    for path in images:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018  (the header is parsed on open)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CCDNError(f"{path}: not an image Pillow can read ({exc})") from exc
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems and stems[path.stem] != path:
            raise CCDNError(f"{stems[path.stem]} and {path} share the stem {path.stem!r}, so their outputs would "
                            "overwrite each other; predict them into different --out folders")
        stems[path.stem] = path


def _boxes_for(image_path: Path, pixels: np.ndarray, box: np.ndarray | None,
               per_image: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    if box is not None:
        return box.reshape(1, 4), "--box"
    for key in (str(image_path), image_path.name, image_path.stem):
        if key in per_image:
            return per_image[key], "--boxes"
    from ccdn.face_detector import detect_faces

    return detect_faces(pixels), "detector"


def _write_outputs(result: ImageFaces, pixels: np.ndarray, out: Path, run_dir: Path, scheme: str) -> list[Path]:
    from ccdn.data.formats.pts import write_pts
    from ccdn.io import write_text
    from ccdn.report.overlay import save_overlay

    stem = result.image.stem
    count = len(result.boxes)
    pts_paths = [out / f"{stem}.pts"] if count == 1 else [out / f"{stem}_{k + 1:02d}.pts" for k in range(count)]
    for path, points in zip(pts_paths, result.landmarks):
        write_pts(path, points)
    record = {
        "image": str(result.image), "width": int(pixels.shape[1]), "height": int(pixels.shape[0]),
        "run": str(run_dir), "scheme": scheme, "coordinates": "original pixels, 0-based (x, y); .pts files are 1-based",
        "box_source": result.box_source,
        "faces": [{"box": box.tolist(), "landmarks": points.tolist(), "pts": path.name}
                  for box, points, path in zip(result.boxes, result.landmarks, pts_paths)],
    }
    json_path = out / f"{stem}.json"
    write_text(json_path, json.dumps(record, indent=1) + "\n")
    overlay = save_overlay(out / f"{stem}_overlay.png", pixels, list(result.boxes), list(result.landmarks))
    return [*pts_paths, json_path, overlay]


# ---------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="landmarks of a trained run on your own images",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format Pillow reads)")
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished `ccdn train` run directory")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--box", default=None, metavar="x1,y1,x2,y2",
                       help="the face box (0-based pixels) in every IMAGE")
    where.add_argument("--boxes", type=Path, default=None, metavar="FILE",
                       help='JSON {"IMAGE": [x1, y1, x2, y2] or a list of boxes}; other images use the detector')
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--scheme", choices=("68", "98", "29", "19"), default=None,
                        help="landmark scheme of the run (default: from its dataset or training cache)")
    parser.add_argument("--enlarge", type=float, default=1.1,
                        help="model crop side = enlarge * max(box w, h) (the prepare default: 1.1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.enlarge > 0:
        raise CCDNError(f"--enlarge {args.enlarge} must be positive")
    box = parse_box(args.box) if args.box is not None else None
    results = predict_images(args.run_dir, args.images, args.out, box=box, boxes_file=args.boxes,
                             scheme=args.scheme, enlarge=args.enlarge, device=args.device)
    for result in results:
        if len(result.boxes):
            print(f"{result.image}: {len(result.boxes)} face(s) ({result.box_source}) -> "
                  f"{', '.join(str(p) for p in result.outputs)}")
        else:
            print(f"{result.image}: no face found; nothing written (give its box with --box or --boxes)")
    missed = sum(1 for result in results if not len(result.boxes))
    if missed:
        print(f"ccdn predict: {missed} of {len(results)} image(s) without a face", file=sys.stderr)
        return NO_FACE_EXIT
    return 0
