"""``ccdn prepare``: crops map back to original pixels (< 0.5 px, checked on image content), the cache
follows Contract 2, it is reused when nothing changed and refused when inputs or settings differ,
and real data with the wrong split sizes is an error."""

import argparse
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdn.data.dataset import load_split
from ccdn.data.errors import DataFormatError
from ccdn.data.prepare import (
    CacheMismatchError,
    PrepareSettings,
    build_split_arrays,
    cache_to_original,
    check_counts,
    crop_face,
    prepare_dataset,
)
from ccdn.data.prepare_cli import add_parser, run
from ccdn.data.records import RawFace
from ccdn.errors import CCDNError

ASTRONAUT = Path(__file__).resolve().parent / "data" / "skimage_astronaut"


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start, end = lines.index("{") + 1, lines.index("}")
    return np.array([[float(v) for v in line.split()] for line in lines[start:end]]) - 1.0  # 1-based


def paint_blobs(image: np.ndarray, points: np.ndarray, sigma: float, patch: int) -> np.ndarray:
    """Black square patches with a white Gaussian blob centred exactly (sub-pixel) on each point."""
    out = image.copy()
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    for x, y in points:
        cx, cy = int(round(x)), int(round(y))
        window = (slice(cy - patch, cy + patch + 1), slice(cx - patch, cx + patch + 1))
        blob = np.exp(-((xs[window] - x) ** 2 + (ys[window] - y) ** 2) / (2 * sigma**2))
        out[window] = np.round(255 * blob)[..., None].astype(np.uint8)
    return out


def blob_centroid(image: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    """Intensity centroid (pixel coordinates) in a window around the rounded expected position."""
    cx, cy = np.round(near).astype(int)
    window = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1].astype(np.float64).sum(axis=2)
    ys, xs = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return np.array([(window * xs).sum(), (window * ys).sum()]) / window.sum()


def spread_subset(points: np.ndarray, min_distance: float) -> np.ndarray:
    chosen: list[int] = []
    for i, p in enumerate(points):
        if all(np.linalg.norm(p - points[j]) >= min_distance for j in chosen):
            chosen.append(i)
    return np.array(chosen)


def make_face(face_id, image_path, landmarks, box=None, subsets=("full",), **extra) -> RawFace:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if box is None:
        box = np.concatenate([landmarks.min(0), landmarks.max(0)])
    return RawFace(
        face_id=face_id,
        image_path=Path(image_path),
        landmarks=landmarks,
        box=np.asarray(box, dtype=np.float64),
        occluded=np.zeros(len(landmarks), dtype=bool),
        subsets=tuple(subsets),
        **extra,
    )


def assert_round_trip(image, face, settings, points, patch):
    """Blobs found in the cache map back onto the original points to < 0.5 px (in fact < 0.1)."""
    crop, to_original = crop_face(Image.fromarray(image), face, settings)
    radius = int(patch / to_original[0, 0]) - 1  # the centroid window stays inside the black patch
    expected_cache = (points - to_original[:2, 2]) @ np.linalg.inv(to_original[:2, :2]).T
    errors = []
    for point, near in zip(points, expected_cache):
        found = blob_centroid(crop, near, radius)
        assert np.linalg.norm(found - near) < 0.1, (found, near)  # in cache pixels
        errors.append(np.linalg.norm(to_original[:2, :2] @ found + to_original[:2, 2] - point))
    assert max(errors) < 0.5
    return max(errors)


def test_cache_to_original_by_hand():
    settings = PrepareSettings(enlarge=1.0, cache_size=150, cache_margin=1.5)
    face = make_face("f", "x.png", [[100, 100], [200, 150]], box=[100, 100, 200, 150])
    crop, matrix = crop_face(Image.new("RGB", (300, 300)), face, settings)
    # side 100 -> cache covers 150 original px in 150 cache px; centre (150, 125) is cache pixel 74.5
    np.testing.assert_allclose(matrix, [[1, 0, 75.5], [0, 1, 50.5], [0, 0, 1]])
    np.testing.assert_allclose(matrix[:2, :2] @ [74.5, 74.5] + matrix[:2, 2], [150, 125])
    assert crop.shape == (150, 150, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(cache_to_original(np.array([10.0, 20.0]), 64.0, PrepareSettings())[0, 0], 0.5)


def test_round_trip_on_the_astronaut():
    image = np.asarray(Image.open(ASTRONAUT / "astronaut.png").convert("RGB"))
    landmarks = read_pts(ASTRONAUT / "astronaut.pts")
    face = make_face("astronaut", ASTRONAUT / "astronaut.png", landmarks, box=[175, 76, 265, 166])
    chosen = spread_subset(landmarks, 16.0)
    assert len(chosen) >= 8
    painted = paint_blobs(image, landmarks[chosen], sigma=1.5, patch=7)
    for settings in (PrepareSettings(), PrepareSettings(box="landmarks", enlarge=1.3, cache_size=96)):
        assert_round_trip(painted, face, settings, landmarks[chosen], patch=7)


@pytest.mark.parametrize("scale", ["upsample", "downsample"])
def test_round_trip_on_synthetic_arrays(scale):
    rng = np.random.default_rng(1)
    if scale == "upsample":  # a 75 px face into a 192 px cache
        size, box, sigma, spacing = (140, 120), np.array([30.3, 20.6, 100.1, 95.9]), 1.2, 14.0
    else:  # a 900 px face into a 192 px cache: the reduce() path
        size, box, sigma, spacing = (1400, 1300), np.array([250.4, 180.2, 1150.9, 1090.5]), 12.0, 125.0
    points = box[:2] + rng.uniform(0.1, 0.9, size=(200, 2)) * (box[2:] - box[:2])
    points = points[spread_subset(points, spacing)][:20]
    assert len(points) >= 6
    patch = int(5 * sigma)  # patches (2 * patch + 1 wide) must not overlap: spacing > 2 * patch
    image = paint_blobs(np.zeros((size[1], size[0], 3), np.uint8), points, sigma, patch)
    landmarks = np.zeros((68, 2))
    landmarks[: len(points)] = points
    face = make_face("synthetic", "x.png", landmarks, box=box)
    error = assert_round_trip(image, face, PrepareSettings(), points, patch)
    assert error < 0.5


def write_raw_300w(root: Path, n_train=3, n_test=2, synthetic=True) -> list[RawFace]:
    """Tiny 300W-like raw root (PNG files) and the RawFace list a parser would return for it."""
    root.mkdir(parents=True, exist_ok=True)
    if synthetic:
        (root / "SYNTHETIC.json").write_text(json.dumps({"synthetic": True, "seed": 0, "generator": "test"}))
    rng = np.random.default_rng(0)
    faces = []
    for i in range(n_train + n_test):
        path = root / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
        landmarks = rng.uniform([20, 15], [60, 45], size=(68, 2))
        subsets = ("full",) if i < n_train else ("full", "common" if i % 2 else "challenging")
        faces.append(make_face(f"face_{i}", path, landmarks, subsets=subsets))
    return faces


def reader_for(faces: list[RawFace], n_train: int, calls: list | None = None):
    def read(name, raw_root, **options):
        assert name == "300w"
        if calls is not None:
            calls.append(options)
        return {"train": faces[:n_train], "test": faces[n_train:]}

    return read


SMALL = {"cache_size": 32, "cache_margin": 1.5, "enlarge": 1.1}


def test_cache_follows_contract_2(tmp_path):
    faces = write_raw_300w(tmp_path / "raw")
    paths = prepare_dataset("300w", tmp_path / "raw", tmp_path / "out", SMALL, reader=reader_for(faces, 3))
    assert set(paths) == {"train", "test"}
    with np.load(paths["test"], allow_pickle=False) as archive:
        expected = {
            "images": (np.uint8, (2, 32, 32, 3)),
            "landmarks": (np.float32, (2, 68, 2)),
            "to_original": (np.float32, (2, 2, 3)),
            "original_landmarks": (np.float32, (2, 68, 2)),
            "boxes": (np.float32, (2, 4)),
            "face_size": (np.float32, (2,)),
            "occluded": (np.bool_, (2, 68)),
            "attributes": (np.uint8, (2, 0)),
            "subset_names": (None, (3,)),
            "subset_masks": (np.bool_, (3, 2)),
            "face_ids": (None, (2,)),
            "attribute_names": (None, (0,)),
            "meta": (None, ()),
        }
        assert set(archive.files) == set(expected)
        for key, (dtype, shape) in expected.items():
            assert archive[key].shape == shape, key
            if dtype is not None:
                assert archive[key].dtype == dtype, key
    split = load_split(tmp_path / "out", "test")
    assert isinstance(split.images, np.memmap) and len(split) == 2
    assert list(split.subset_names) == ["full", "common", "challenging"]
    np.testing.assert_array_equal(split.subset("common"), [0])  # face_3 is "common", face_4 "challenging"
    np.testing.assert_array_equal(split.subset("challenging"), [1])
    assert split.meta["synthetic"] is True and split.synthetic and split.scheme == "68"
    assert split.meta["settings"]["cache_size"] == 32 and split.cache_margin == 1.5
    np.testing.assert_allclose(split.original_landmarks[1], faces[4].landmarks, atol=1e-4)
    mapped = split.landmarks @ split.to_original[:, :, :2].transpose(0, 2, 1) + split.to_original[:, None, :, 2]
    np.testing.assert_allclose(mapped, split.original_landmarks, atol=1e-3)
    w, h = faces[3].box[2] - faces[3].box[0], faces[3].box[3] - faces[3].box[1]
    assert split.face_size[0] == pytest.approx(np.sqrt(w * h), rel=1e-5)
    with pytest.raises(KeyError, match="available: full, common, challenging"):
        split.subset("frontal")


def test_prepare_is_idempotent_and_refuses_mismatched_caches(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    faces = write_raw_300w(raw)
    reader = reader_for(faces, 3)
    paths = prepare_dataset("300w", raw, out, SMALL, reader=reader)
    before = {split: os.stat(path) for split, path in paths.items()}

    def must_not_read(name, raw_root):
        raise AssertionError("an up-to-date cache must be reused without parsing the raw data")

    again = prepare_dataset("300w", raw, out, PrepareSettings(**SMALL), reader=must_not_read)
    assert again == paths
    for split, path in paths.items():
        assert os.stat(path).st_mtime_ns == before[split].st_mtime_ns and os.stat(path).st_ino == before[split].st_ino

    with pytest.raises(CacheMismatchError, match=r"setting enlarge \(1.1 -> 1.3\).*--force"):
        prepare_dataset("300w", raw, out, {**SMALL, "enlarge": 1.3}, reader=reader)
    rebuilt = prepare_dataset("300w", raw, out, {**SMALL, "enlarge": 1.3}, reader=reader, force=True)
    assert load_split(out, "train").meta["settings"]["enlarge"] == 1.3
    assert os.stat(rebuilt["train"]).st_ino != before["train"].st_ino

    Image.fromarray(np.zeros((61, 80, 3), np.uint8)).save(faces[0].image_path)  # an input changes
    with pytest.raises(CacheMismatchError, match="raw input files"):
        prepare_dataset("300w", raw, out, {**SMALL, "enlarge": 1.3}, reader=reader)
    assert not list(out.glob(".*tmp*")), "no temporary files are left behind"


def test_count_mismatch_on_real_data_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    faces = write_raw_300w(raw, synthetic=False)
    expected = r"train/full: 3 faces, expected 3148.*test/common: 1 faces, expected 554"
    with pytest.raises(DataFormatError, match=expected):
        prepare_dataset("300w", raw, tmp_path / "out", SMALL, reader=reader_for(faces, 3))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_aflw_frontal_count_warns_instead_of_failing():
    def stub(i, subsets):  # count checks only look at subsets; one shared object per kind is enough
        return RawFace(f"f{i}", Path("x"), np.zeros((19, 2)), np.zeros(4), np.zeros(19, bool), subsets=subsets)

    faces = {
        "train": [stub(0, ("full",))] * 20000,
        "test": [stub(0, ("full", "frontal"))] * 1314 + [stub(0, ("full",))] * (4386 - 1314),
    }
    with pytest.warns(UserWarning, match="test/frontal has 1314 faces; the paper quotes 1165"):
        check_counts("aflw", faces, synthetic=False, raw_root=Path("raw"))
    faces["test"] = faces["test"][:-1]
    with pytest.raises(DataFormatError, match="test/full: 4385 faces, expected 4386"):
        check_counts("aflw", faces, synthetic=False, raw_root=Path("raw"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_counts("aflw", faces, synthetic=True, raw_root=Path("raw"))  # synthetic: not checked


def test_bad_faces_and_settings_are_clear_errors(tmp_path):
    faces = write_raw_300w(tmp_path / "raw", n_train=1, n_test=0)
    settings = PrepareSettings(**SMALL)
    missing = make_face("gone", tmp_path / "raw/missing.png", faces[0].landmarks)
    with pytest.raises(DataFormatError, match=r"missing\.png: cannot read the image of face gone"):
        build_split_arrays("300w", "train", [missing], settings)
    short = make_face("short", faces[0].image_path, faces[0].landmarks[:67])
    with pytest.raises(DataFormatError, match="face short .*expected 68 finite"):
        build_split_arrays("300w", "train", [short], settings)
    with pytest.raises(CCDNError, match="unknown prepare setting.*known settings: box, enlarge"):
        PrepareSettings.from_mapping({"crop": 1})
    with pytest.raises(CCDNError, match="box='detector' is not one of provided, landmarks"):
        PrepareSettings(box="detector")
    with pytest.raises(CCDNError, match="raw data for 300w not found"):
        prepare_dataset("300w", tmp_path / "nowhere", tmp_path / "out")


def test_cofw_faces_carry_their_image(tmp_path):
    landmarks = np.random.default_rng(0).uniform(10, 40, size=(68, 2))
    grey = np.full((50, 50), 77, np.uint8)
    face = make_face("cofw_1", tmp_path / "COFW_test_color.mat", landmarks, image=grey)
    arrays = build_split_arrays("cofw68", "test", [face], PrepareSettings(**SMALL))
    assert arrays["images"].shape == (1, 32, 32, 3)
    assert (arrays["images"][0, 16, 16] == 77).all()


def test_cli_parses_settings_and_runs(tmp_path, monkeypatch, capsys):
    faces, calls = write_raw_300w(tmp_path / "raw"), []
    monkeypatch.setattr("ccdn.data.formats.read_dataset", reader_for(faces, 3, calls), raising=False)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    settings = ["cache_size=32", "box=landmarks", "reader_options={box: ground_truth}"]
    args = parser.parse_args(["prepare", "300w", "--raw", raw, "--out", out, *settings])
    assert args.func is run and run(args) == 0
    assert "train: " in capsys.readouterr().out and calls == [{"box": "ground_truth"}]
    meta = load_split(tmp_path / "out", "train").meta
    assert meta["settings"]["box"] == "landmarks" and meta["settings"]["cache_size"] == 32
    assert meta["fingerprint"]["settings"]["reader_options"] == {"box": "ground_truth"}
    bad = parser.parse_args(["prepare", "300w", "--raw", str(tmp_path / "raw"), "size=32"])
    with pytest.raises(CCDNError, match="unknown prepare setting"):
        run(bad)


def test_memory_mapped_split_pickles_by_reference(tmp_path):
    faces = write_raw_300w(tmp_path / "raw")
    prepare_dataset("300w", tmp_path / "raw", tmp_path / "out", SMALL, reader=reader_for(faces, 3))
    split = load_split(tmp_path / "out", "train")
    payload = pickle.dumps(split)
    assert len(payload) < split.images.nbytes  # the images are not copied into the pickle
    clone = pickle.loads(payload)
    assert isinstance(clone.images, np.memmap)
    np.testing.assert_array_equal(clone.images, split.images)
    np.testing.assert_array_equal(load_split(tmp_path / "out", "train", mmap=False).images, split.images)
    with pytest.raises(DataFormatError, match=r"valid\.npz not found \(available splits: test, train\)"):
        load_split(tmp_path / "out", "valid")


def test_a_compressed_cache_is_read_without_mapping(tmp_path):
    faces = write_raw_300w(tmp_path / "raw")
    paths = prepare_dataset("300w", tmp_path / "raw", tmp_path / "out", SMALL, reader=reader_for(faces, 3))
    with np.load(paths["test"], allow_pickle=False) as archive:
        np.savez_compressed(tmp_path / "test.npz", **{key: archive[key] for key in archive.files})
    compressed = load_split(tmp_path, "test")
    assert not isinstance(compressed.images, np.memmap)
    np.testing.assert_array_equal(compressed.images, load_split(tmp_path / "out", "test").images)
