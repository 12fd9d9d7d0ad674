"""``ccdn synth``: synthetic faces written in each benchmark's **real** on-disk format.

No machine here can download the benchmarks, so the embedded default pipeline runs on faces
rendered by :mod:`ccdn.data.synth_face` and written exactly as the real archives unpack (300W
folders with ``.pts`` and box ``.mat`` files, COFW v7.3 ``.mat`` + COFW-68 point files, an
``AFLWinfo_release.mat``-style file with its image tree, WFLW list files with attribute flags and
subset lists). The real parsers then read them, so the synthetic path exercises the same code as
real data. ``SYNTHETIC.json`` in the root marks the set as synthetic for everything downstream.

Hard subsets are hard by construction: each face draws the six WFLW conditions (large pose,
exaggerated expression, extreme illumination, make-up, occlusion, blur) from a per-group profile —
300W ``ibug`` faces get at least one hard factor and mostly large poses, COFW test faces are heavily
occluded, WFLW faces carry exactly the flags their hard factors were rendered with.

Occlusion sweep (``--occlusion-levels``): a COFW-68-format test set (the one format with per-point
occlusion flags on the 68 points of the 300W models) whose faces are drawn like 300W's common test
faces, without their random occluders, and each rendered once per level with a bar that hides exactly
that share of its 68 points (``ccdn.data.synth_face.hide_fraction``): the same face and side at every
level, so the curve of NME against the level measures occlusion alone.

Determinism: every face has its own generator seeded by ``(seed, dataset, group, index)``, ``.mat``
headers carry a fixed date and images are encoded without timestamps, so a seed gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ccdn.errors import CCDNError
from ccdn.data.formats import DATASET_NAMES, aflw, cofw, w300, wflw
from ccdn.data.synth_face import (
    CONDITIONS,
    Conditions,
    RenderedFace,
    FaceParams,
    annotate,
    hide_fraction,
    render_face,
    sample_params,
)

__all__ = [
    "synthesize",
    "add_parser",
    "run",
    "PROFILES",
    "Profile",
    "sample_conditions",
    "detector_box",
    "DEFAULT_N_TRAIN",
    "DEFAULT_N_TEST",
    "SWEEP_FORMAT",
]

DEFAULT_N_TRAIN = 64
DEFAULT_N_TEST = 32
MARKER = "SYNTHETIC.json"
OWNER_MARKER = ".ccdn-synth"  # survives Snakemake deleting SYNTHETIC.json before a re-run
GENERATOR = "ccdn.data.synth"
_DATASET_CODES = {"300w": 300, "cofw68": 68, "aflw": 19, "wflw": 98}
SWEEP_FORMAT = "cofw68"  # the occlusion sweep's on-disk format: per-point flags, the 68 points of 300W
_SWEEP_GROUP = 2  # generator group of the sweep's faces (COFW-68's train and test sets are 0 and 1)


@dataclass(frozen=True)
class Profile:
    """How hard the faces of one group are: the rate of each hard condition, and guarantees."""

    rates: dict[str, float]
    min_count: int = 0  # each condition on at least this many faces (when the group is that big)
    at_least_one: bool = False  # every face gets one of pose/expression/illumination/occlusion
    max_yaw: float = 70.0
    heavy_occlusion: bool = False


def _rates(*rates: float) -> dict[str, float]:
    """Rates in the order of ``CONDITIONS``: pose, expression, illumination, make-up, occlusion, blur."""
    return dict(zip(CONDITIONS, rates, strict=True))


PROFILES: dict[str, Profile] = {
    "300w_common": Profile(_rates(0.08, 0.1, 0.1, 0.1, 0.05, 0.1)),
    "300w_challenging": Profile(_rates(0.6, 0.4, 0.35, 0.1, 0.45, 0.3), at_least_one=True, max_yaw=75.0),
    "cofw_train": Profile(_rates(0.2, 0.2, 0.15, 0.1, 0.5, 0.1)),
    "cofw_test": Profile(_rates(0.3, 0.3, 0.2, 0.1, 0.85, 0.15), heavy_occlusion=True),
    "aflw": Profile(_rates(0.55, 0.1, 0.15, 0.05, 0.1, 0.1), max_yaw=85.0),
    # WFLW: the real test-set proportions (326, 314, 698, 206, 736, 773 of 2500)
    "wflw": Profile(_rates(0.13, 0.126, 0.279, 0.082, 0.294, 0.309), min_count=1),
}


def sample_conditions(rng: np.random.Generator, profile: Profile, n: int) -> list[Conditions]:
    """Conditions of ``n`` faces: each hard condition on ``round(rate * n)`` faces drawn at random."""
    chosen: dict[str, set[int]] = {}
    for name in CONDITIONS:
        k = int(round(profile.rates[name] * n))
        k = min(n, max(k, profile.min_count))
        chosen[name] = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
    if profile.at_least_one:
        hard = ("pose", "expression", "illumination", "occlusion")
        for i in range(n):
            if not any(i in chosen[name] for name in hard):
                chosen[hard[int(rng.integers(len(hard)))]].add(i)
    return [Conditions(**{name: i in chosen[name] for name in CONDITIONS}) for i in range(n)]


def _rng(seed: int, dataset: str, group: int, index: int, purpose: int = 0) -> np.random.Generator:
    """A generator of its own for every (dataset, group, face): order-independent and stable."""
    return np.random.default_rng([seed, _DATASET_CODES[dataset], group, index, purpose])


def _render(rng: np.random.Generator, conditions: Conditions, profile: Profile) -> RenderedFace:
    """Render one face; an occluded face must really cover a landmark (up to a few redraws)."""
    for _ in range(5):
        params = sample_params(rng, conditions, max_yaw=profile.max_yaw, heavy_occlusion=profile.heavy_occlusion)
        if not conditions.occlusion or annotate(params)[2]["98"].any():
            break
    return render_face(params)


def detector_box(rng: np.random.Generator, face: RenderedFace, square: bool = True) -> np.ndarray:
    """A detector-like box (``x1, y1, x2, y2``): the landmark box, enlarged and jittered a little."""
    points = face.landmarks["68"]
    low, high = points.min(axis=0), points.max(axis=0)
    size = high - low
    if square:
        size = np.full(2, size.max())
    size = size * rng.uniform(1.02, 1.15, 2 if not square else 1)
    centre = (low + high) / 2 + rng.normal(0.0, 0.03, 2) * size
    return np.concatenate([centre - size / 2, centre + size / 2])


def _allocate(n: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``n`` faces over folders in proportion to the real sizes (largest remainder, >= 1 each)."""
    if n < len(weights):
        raise ValueError(f"need at least {len(weights)} faces to fill the folders {', '.join(weights)}; got {n}")
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: max(1, int(v)) for k, v in exact.items()}
    by_remainder = sorted(weights, key=lambda k: exact[k] - int(exact[k]), reverse=True)
    for k in by_remainder[: max(0, n - sum(counts.values()))]:
        counts[k] += 1
    while sum(counts.values()) > n:  # the minimum of one face per folder overshot
        counts[max(counts, key=lambda k: counts[k])] -= 1
    return counts


def _save_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        Image.fromarray(image).save(path, format="PNG")
    else:
        Image.fromarray(image).save(path, format="JPEG", quality=92)


# --------------------------------------------------------------------------------------- 300W

_300W_TRAIN = {"afw": 337, "helen/trainset": 2000, "lfpw/trainset": 811}
_300W_TEST = {"helen/testset": 330, "lfpw/testset": 224, "ibug": 135}


def _300w_stem(folder: str, k: int) -> str:
    if folder == "ibug":
        return "image_092 _01" if k == 0 else f"image_{100 + k:03d}_1"  # the real set's name with a space
    if folder.startswith("lfpw"):
        return f"image_{k + 1:04d}"
    base = 4_000_000 if folder == "afw" else 100_000_000
    return f"{base + 1013 * k}_1"


def _synth_300w(root: Path, seed: int, n_train: int, n_test: int, bar: tqdm) -> None:
    counts = {**_allocate(n_train, _300W_TRAIN), **_allocate(n_test, _300W_TEST)}
    for group, (folder, count) in enumerate(counts.items()):
        profile = PROFILES["300w_challenging" if folder == "ibug" else "300w_common"]
        conditions = sample_conditions(_rng(seed, "300w", group, 0, purpose=1), profile, count)
        entries = []
        for k in range(count):
            rng = _rng(seed, "300w", group, k)
            face = _render(rng, conditions[k], profile)
            stem = _300w_stem(folder, k)
            image_name = stem + (".png" if folder.startswith("lfpw") else ".jpg")
            _save_image(root / folder / image_name, face.image)
            w300.write_pts(root / folder / f"{stem}.pts", face.landmarks["68"])
            entries.append((image_name, detector_box(rng, face), face.tight_box("68")))
            bar.update()
        w300.write_bounding_boxes(w300.box_file(root, folder), entries)


# --------------------------------------------------------------------------------------- COFW


def _render_group(
    seed: int, dataset: str, group: int, n: int, profile: Profile, bar: tqdm
) -> Iterator[tuple[np.random.Generator, RenderedFace, Conditions]]:
    """Render the ``n`` faces of one group, each with its own generator (used again for its boxes)."""
    conditions = sample_conditions(_rng(seed, dataset, group, 0, purpose=1), profile, n)
    for k in range(n):
        rng = _rng(seed, dataset, group, k)
        yield rng, _render(rng, conditions[k], profile), conditions[k]
        bar.update()


def _synth_cofw68(root: Path, seed: int, n_train: int, n_test: int, bar: tqdm) -> None:
    for split, n, group in (("train", n_train, 0), ("test", n_test, 1)):
        if n == 0:
            continue
        images, lm29, occ29, box29, lm68, occ68, box68 = [], [], [], [], [], [], []
        for rng, face, _ in _render_group(seed, "cofw68", group, n, PROFILES[f"cofw_{split}"], bar):
            images.append(face.image)
            lm29.append(face.landmarks["29"])
            occ29.append(face.occluded("29"))
            box29.append(detector_box(rng, face))
            lm68.append(face.landmarks["68"])
            occ68.append(face.occluded("68"))
            box68.append(detector_box(rng, face))
        mat = cofw.TEST_MAT if split == "test" else cofw.TRAIN_MAT
        cofw.write_cofw29(root / mat, split, images, np.array(lm29), np.array(occ29), np.array(box29))
        if split == "test":
            cofw.write_cofw68(root, np.array(lm68), np.array(occ68), np.array(box68))


# --------------------------------------------------------------------------------------- AFLW


def _synth_aflw(root: Path, seed: int, n_train: int, n_test: int, bar: tqdm) -> None:
    n = n_train + n_test
    names, landmarks, visible, boxes = [], [], [], []
    for k, (rng, face, _) in enumerate(_render_group(seed, "aflw", 0, n, PROFILES["aflw"], bar)):
        name = f"{('0', '2', '3')[k % 3]}/image{2 * k + 10:05d}.jpg"
        _save_image(root / aflw.IMAGE_ROOT / name, face.image)
        names.append(name)
        landmarks.append(face.landmarks["19"])
        visible.append(~face.occluded("19"))
        boxes.append(detector_box(rng, face))
    order = _rng(seed, "aflw", 0, 0, purpose=2).permutation(n)
    aflw.write_aflw_info(
        root / aflw.INFO_MAT, names, np.array(landmarks), np.array(visible), np.array(boxes), order, n_train
    )


# --------------------------------------------------------------------------------------- WFLW

_WFLW_EVENTS = ("0--Parade", "2--Demonstration", "12--Group", "20--Family_Group", "37--Soccer", "51--Dresses")


def _synth_wflw(root: Path, seed: int, n_train: int, n_test: int, bar: tqdm) -> None:
    lines: dict[str, list[str]] = {"train": [], "test": []}
    subsets: dict[str, list[str]] = {name: [] for name in wflw.ATTRIBUTES}
    full_test: list[str] = []
    for split, n, group in (("train", n_train, 0), ("test", n_test, 1)):
        for k, (rng, face, conditions) in enumerate(_render_group(seed, "wflw", group, n, PROFILES["wflw"], bar)):
            event = _WFLW_EVENTS[k % len(_WFLW_EVENTS)]
            number, label = event.split("--")
            name = f"{event}/{number}_{label}_{label}_{split}_{k}.jpg"
            _save_image(root / wflw.IMAGE_DIR / name, face.image)
            points, flags = face.landmarks["98"], conditions.flags()
            lines[split].append(wflw.format_line(points, detector_box(rng, face, square=False), flags, name))
            if split == "test":
                short = wflw.format_line(points, np.zeros(4), flags, name, with_rect_attr=False)
                full_test.append(short)
                for attribute in wflw.ATTRIBUTES:
                    if flags[attribute]:
                        subsets[attribute].append(short)
    wflw.write_lists(root, lines["train"], lines["test"], subsets, full_test)


def _synth_occlusion_sweep(root: Path, seed: int, faces: int, levels: tuple[float, ...], bar: tqdm) -> None:
    """COFW-68-format test set: ``faces`` faces drawn like 300W's common test faces (no large pose, no random
    occluders), each rendered once per level (percent of its 68 points hidden by one bar), level by level."""
    profile = PROFILES["300w_common"]
    conditions = sample_conditions(_rng(seed, SWEEP_FORMAT, _SWEEP_GROUP, 0, purpose=1), profile, faces)
    drawn = []
    for k in range(faces):
        params = _unoccluded(_rng(seed, SWEEP_FORMAT, _SWEEP_GROUP, k), replace(conditions[k], pose=False,
                                                                                 occlusion=False))
        side = _rng(seed, SWEEP_FORMAT, _SWEEP_GROUP, k, purpose=3)
        drawn.append((k, params, float(side.uniform(0.0, 2 * np.pi)), tuple(side.uniform(0.05, 0.95, 3))))
    images, lm29, occ29, lm68, occ68, boxes = [], [], [], [], [], []
    for level in levels:
        for k, params, direction, colour in drawn:
            face = render_face(hide_fraction(params, level / 100.0, direction, colour))
            box = detector_box(_rng(seed, SWEEP_FORMAT, _SWEEP_GROUP, k, purpose=4), face)  # the same at every level
            images.append(face.image)
            lm29.append(face.landmarks["29"])
            occ29.append(face.occluded("29"))
            lm68.append(face.landmarks["68"])
            occ68.append(face.occluded("68"))
            boxes.append(box)  # one box per face for both annotations
            bar.update()
    cofw.write_cofw29(root / cofw.TEST_MAT, "test", images, np.array(lm29), np.array(occ29), np.array(boxes))
    cofw.write_cofw68(root, np.array(lm68), np.array(occ68), np.array(boxes))


def _unoccluded(rng: np.random.Generator, conditions: Conditions, tries: int = 20) -> FaceParams:
    """A face none of whose 68 points the head itself hides (a turned-away jaw point would count as occluded
    at every level), redrawn up to ``tries`` times; the last draw otherwise."""
    for _ in range(tries):
        params = sample_params(rng, conditions)
        if not annotate(params)[1]["68"].any():
            break
    return params


_WRITERS = {"300w": _synth_300w, "cofw68": _synth_cofw68, "aflw": _synth_aflw, "wflw": _synth_wflw}


# ------------------------------------------------------------------------------------ the entry


def synthesize(
    dataset: str,
    out_dir: Path,
    seed: int = 0,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    progress: bool = False,
    occlusion_levels: Sequence[float] | None = None,
) -> Path:
    """Write a synthetic ``dataset`` in its real on-disk format into ``out_dir``; returns ``out_dir``.

    The set is built in a temporary sibling folder and moved into place at the end, so a failure
    never leaves half a dataset. An existing ``out_dir`` is replaced only when it is empty or was
    written by this generator; real data is never overwritten. For ``cofw68``, ``n_train`` faces
    go to ``COFW_train_color.mat`` (29 points; 0 writes no training file) since COFW-68 itself
    has test labels only.

    ``occlusion_levels`` (percent of points hidden, ``cofw68`` only, ``n_train`` 0) writes the occlusion
    sweep instead: ``n_test`` faces, each once per level (module docstring).
    """
    if dataset not in _WRITERS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASET_NAMES)}")
    levels = _check_levels(dataset, n_train, occlusion_levels)
    _check_sizes(dataset, n_train, n_test)
    out = Path(out_dir)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        total = n_test * len(levels) if levels else n_train + n_test
        with tqdm(total=total, desc=f"synth {dataset}", unit="face", disable=not progress) as bar:
            if levels:
                _synth_occlusion_sweep(tmp, seed, n_test, levels, bar)
            else:
                _WRITERS[dataset](tmp, seed, n_train, n_test, bar)
        info = {"synthetic": True, "seed": seed, "dataset": dataset, "generator": GENERATOR}
        info.update(n_train=n_train, n_test=n_test)
        if levels:
            info["occlusion_levels"] = list(levels)
        text = json.dumps(info, indent=2, sort_keys=True) + "\n"
        (tmp / MARKER).write_text(text, encoding="utf-8")
        (tmp / OWNER_MARKER).write_text(text, encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_levels(dataset: str, n_train: int, levels: Sequence[float] | None) -> tuple[float, ...]:
    """The sweep's levels (percent), checked: cofw68 only, a test set only, each in [0, 100]."""
    if levels is None:
        return ()
    if dataset != SWEEP_FORMAT or n_train != 0:
        raise CCDNError(f"--occlusion-levels writes a test set in the {SWEEP_FORMAT} format (per-point flags): use "
                        f"`ccdn synth {SWEEP_FORMAT} --n-train 0 --occlusion-levels ...`; got {dataset} with "
                        f"--n-train {n_train}")
    bad = [v for v in levels if not 0.0 <= float(v) <= 100.0]
    if not levels or bad:
        raise CCDNError("--occlusion-levels: percentages of hidden points in [0, 100], e.g. 0,10,20; "
                        f"got {list(levels)}")
    return tuple(float(v) for v in levels)


def _check_sizes(dataset: str, n_train: int, n_test: int) -> None:
    minimum_train = 3 if dataset == "300w" else (0 if dataset == "cofw68" else 1)
    minimum_test = 3 if dataset == "300w" else 1
    if n_train < minimum_train or n_test < minimum_test:
        raise CCDNError(
            f"synthetic {dataset} needs --n-train >= {minimum_train} and --n-test >= {minimum_test} "
            f"(300W fills three folders per split); got {n_train} and {n_test}"
        )


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise CCDNError(f"{out} exists and is not a folder; choose another --out")
    if any(out.iterdir()) and not ((out / MARKER).is_file() or (out / OWNER_MARKER).is_file()):
        raise CCDNError(
            f"{out} is not empty and holds no {MARKER}: it may be real data, which synth never overwrites. "
            "Choose another --out or remove the folder yourself."
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished folder in: the old synthetic set (if any) is removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="render synthetic faces in a dataset's real on-disk format",
        description="Render synthetic faces with exact landmarks and write them in the real format of DATASET "
        "(the same parsers then read them). Deterministic for a seed.",
    )
    parser.add_argument("dataset", choices=DATASET_NAMES)
    parser.add_argument("--out", type=Path, required=True, help="raw root to write (e.g. data/raw/300w)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--n-train", type=int, default=DEFAULT_N_TRAIN, help=f"training faces (default {DEFAULT_N_TRAIN})"
    )
    parser.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help=f"test faces (default {DEFAULT_N_TEST})")
    parser.add_argument("--occlusion-levels", type=_levels, default=None, metavar="P,P,...",
                        help=f"occlusion sweep ({SWEEP_FORMAT} only, with --n-train 0): render each of the --n-test "
                        "faces once per level, with a bar hiding that percentage of its 68 points (e.g. 0,10,20,30)")
    parser.set_defaults(func=run)


def _levels(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages separated by commas (e.g. 0,10,20); got {text!r}")


def run(args: argparse.Namespace) -> int:
    root = synthesize(args.dataset, args.out, seed=args.seed, n_train=args.n_train, n_test=args.n_test, progress=True,
                      occlusion_levels=args.occlusion_levels)
    sizes = f"{args.n_train} train / {args.n_test} test faces"
    if args.occlusion_levels:
        sizes = f"{args.n_test} faces × occlusion levels {args.occlusion_levels} %"
    print(f"wrote synthetic {args.dataset}: {sizes}, seed {args.seed} -> {root}")
    return 0
