"""Synthetic faces: the renderer's geometry, the four real-format writers read back by the real
parsers, hardness by construction, determinism and the ``ccdn synth`` command."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ccdn.errors import CCDNError
from ccdn.data.formats import load_image, read_dataset
from ccdn.data.formats import cofw, w300, wflw
from ccdn.data.schemes import get_scheme
from ccdn.data.synth import PROFILES, _allocate, add_parser, run, sample_conditions, synthesize
from ccdn.data.synth_face import (
    SCHEME_NAMES,
    Conditions,
    Occluder,
    annotate,
    hide_fraction,
    mirror_params,
    render_face,
    sample_params,
)

# ----------------------------------------------------------------------------------- renderer


def _clean(params):
    """No noise, blur, clutter or gradient: pixels then depend only on geometry and albedo."""
    return replace(params, noise=0.0, blur=0.0, clutter=(), gradient=(0.0, 0.0, 0.0), tint=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("seed", range(4))
def test_mirrored_face_matches_the_schemes_mirror_permutations(seed):
    conditions = Conditions(pose=seed % 2 == 0, expression=seed in (0, 3), occlusion=seed % 2 == 1, makeup=seed == 2)
    params = _clean(sample_params(np.random.default_rng(seed), conditions))
    face, mirrored = render_face(params), render_face(mirror_params(params))
    for scheme in SCHEME_NAMES:
        perm = np.array(get_scheme(scheme).mirror)
        flipped = face.landmarks[scheme].copy()
        flipped[:, 0] = params.width - 1 - flipped[:, 0]
        np.testing.assert_allclose(flipped[perm], mirrored.landmarks[scheme], atol=1e-6)
        np.testing.assert_array_equal(face.occluded(scheme)[perm], mirrored.occluded(scheme))
    difference = np.abs(face.image[:, ::-1].astype(int) - mirrored.image.astype(int))
    assert np.mean(difference > 8) < 0.002  # the texture mirrors with the landmarks (bar a few edge pixels)


def test_features_are_painted_where_the_landmarks_are():
    params = _clean(sample_params(np.random.default_rng(7), Conditions()))
    params = replace(params, yaw=0.0, pitch=0.0, roll=0.0, light=(0.0, 0.0, 1.0), ambient=0.5, diffuse=0.5)
    face = render_face(params)
    lum = face.image.astype(float).mean(axis=2)

    def at(point):
        return lum[int(round(point[1])), int(round(point[0]))]

    pts98, pts68 = face.landmarks["98"], face.landmarks["68"]
    cheek = 0.5 * (pts68[3] + pts68[31])
    skin = at(cheek)
    assert at(pts98[96]) < 0.5 * skin and at(pts98[97]) < 0.5 * skin  # dark pupils
    assert at(0.5 * (pts68[37] + pts68[41])) > at(pts98[96]) + 40  # the sclera beside the iris is light
    below_chin = pts68[8] + np.array([0.0, 0.08 * params.scale])
    assert at(below_chin) < at(pts68[8] - np.array([0.0, 0.08 * params.scale]))  # jaw line: skin above, shadow below
    assert not any(face.self_occluded[s].any() for s in ("19", "29", "98"))  # frontal: everything faces the camera


@pytest.mark.parametrize("roll", [0.0, 25.0])
def test_pupils_are_centred_on_their_landmarks(roll):
    """Pixel convention check: the dark pupil disc is centred on the pupil landmark (pixel i at i)."""
    params = _clean(sample_params(np.random.default_rng(5), Conditions()))
    params = replace(params, yaw=0.0, pitch=0.0, roll=roll, scale=params.scale * 1.5)
    face = render_face(params)
    darkness = face.image.astype(float).sum(axis=2)
    for x, y in face.landmarks["98"][96:98]:
        rows, cols = np.mgrid[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7]
        weight = (darkness[rows, cols] < 40).astype(float)
        assert weight.sum() >= 8
        centroid = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
        assert np.abs(centroid - [x, y]).max() < 0.5


def test_large_yaw_hides_one_side_of_the_jaw():
    params = replace(sample_params(np.random.default_rng(3), Conditions()), yaw=70.0, pitch=0.0, roll=0.0)
    hidden = render_face(params).self_occluded["68"]
    jaw = np.flatnonzero(hidden[:17])
    assert len(jaw) >= 3
    assert set(jaw) <= set(range(0, 8)) or set(jaw) <= set(range(9, 17))  # only the far side
    mirrored = render_face(mirror_params(params)).self_occluded["68"][:17]
    assert set(np.flatnonzero(mirrored)) == {16 - j for j in jaw}


def test_occlusion_flags_come_from_the_painted_occluder():
    base = _clean(sample_params(np.random.default_rng(11), Conditions()))
    base = replace(base, yaw=0.0, pitch=0.0, roll=0.0)
    mouth = render_face(base).landmarks["68"][48:68]
    centre = mouth.mean(axis=0)
    half = (mouth.max(axis=0) - mouth.min(axis=0)) / 2 + 2.0
    scarf = Occluder("rect", tuple(centre), tuple(half), 0.0, (0.0, 0.0, 1.0))
    face = render_face(replace(base, occluders=(scarf,)))
    flags = face.object_occluded["68"]
    assert flags[48:68].all() and not flags[17:48].any()
    for x, y in face.landmarks["68"][flags]:
        assert tuple(face.image[int(round(y)), int(round(x))]) == (0, 0, 255)  # the point lies under the occluder
    assert face.object_occluded["29"][22:28].all() and not face.object_occluded["29"][:18].any()


def test_conditions_follow_the_profiles():
    rng = np.random.default_rng(0)
    hard = sample_conditions(rng, PROFILES["300w_challenging"], 40)
    assert all(c.pose or c.expression or c.illumination or c.occlusion for c in hard)
    assert sum(c.pose for c in hard) == 24  # round(0.6 * 40)
    wflw_small = sample_conditions(rng, PROFILES["wflw"], 3)
    for name in ("pose", "expression", "illumination", "makeup", "occlusion", "blur"):
        assert sum(getattr(c, name) for c in wflw_small) >= 1  # every WFLW subset is populated
    assert _allocate(32, {"helen/testset": 330, "lfpw/testset": 224, "ibug": 135}) == {
        "helen/testset": 15, "lfpw/testset": 11, "ibug": 6,
    }  # fmt: skip


# ----------------------------------------------------------------------- real-format round trips


def _yaw_proxy(points68: np.ndarray) -> np.ndarray:
    """|log| of the nose tip's distance ratio to the two outer eye corners: 0 when frontal."""
    left = np.linalg.norm(points68[:, 30] - points68[:, 36], axis=1)
    right = np.linalg.norm(points68[:, 30] - points68[:, 45], axis=1)
    return np.abs(np.log(left / right))


def _subset_counts(faces) -> dict[str, int]:
    counts: dict[str, int] = {}
    for face in faces:
        for subset in face.subsets:
            counts[subset] = counts.get(subset, 0) + 1
    return counts


def test_300w_round_trip(tmp_path):
    root = synthesize("300w", tmp_path / "300w", seed=1, n_train=6, n_test=16)
    faces = read_dataset("300w", root)
    assert len(faces["train"]) == 6 and len(faces["test"]) == 16
    counts = _allocate(16, {"helen/testset": 330, "lfpw/testset": 224, "ibug": 135})
    assert _subset_counts(faces["test"]) == {
        "full": 16, "common": counts["helen/testset"] + counts["lfpw/testset"], "challenging": counts["ibug"],
    }  # fmt: skip
    assert (root / "ibug" / "image_092 _01.jpg").is_file() and (root / "lfpw" / "testset" / "image_0001.png").is_file()
    assert json.loads((root / "SYNTHETIC.json").read_text()) == {
        "synthetic": True, "seed": 1, "dataset": "300w", "generator": "ccdn.data.synth", "n_train": 6, "n_test": 16,
    }  # fmt: skip
    ground_truth = read_dataset("300w", root, box="ground_truth")
    for face in [*ground_truth["train"], *ground_truth["test"]]:
        image = load_image(face)
        assert 160 <= image.shape[0] <= 256 and 160 <= image.shape[1] <= 256
        assert (face.landmarks >= 0).all() and (face.landmarks <= np.array(image.shape[1::-1]) - 1).all()
        tight = np.array([*face.landmarks.min(axis=0), *face.landmarks.max(axis=0)])
        np.testing.assert_allclose(face.box, tight, atol=1e-3)  # .pts (3 decimals) agrees with the .mat
    challenging = np.array([f.landmarks for f in faces["test"] if "challenging" in f.subsets])
    common = np.array([f.landmarks for f in faces["test"] if "common" in f.subsets])
    assert _yaw_proxy(challenging).mean() > 2 * _yaw_proxy(common).mean()  # ibug is hard by construction


def test_cofw68_round_trip(tmp_path):
    root = synthesize("cofw68", tmp_path / "cofw68", seed=2, n_train=8, n_test=10)
    faces = read_dataset("cofw68", root)["test"]
    assert len(faces) == 10 and all(f.subsets == ("full",) for f in faces)
    test29 = cofw.read_cofw29(root / cofw.TEST_MAT, "test")
    train29 = cofw.read_cofw29(root / cofw.TRAIN_MAT, "train")
    assert len(test29) == 10 and len(train29) == 8
    for face68, face29 in zip(faces, test29):
        np.testing.assert_array_equal(face68.image, face29.image)
        # the two annotations of one render agree where the schemes share a point
        shared29, shared68 = [8, 9, 22, 23, 28], [36, 45, 48, 54, 8]  # eye and mouth corners, chin
        np.testing.assert_allclose(face29.landmarks[shared29], face68.landmarks[shared68], atol=1e-9)
        np.testing.assert_array_equal(face29.occluded[shared29], face68.occluded[shared68])
    occluded_test = np.mean([f.occluded.mean() for f in test29])
    occluded_train = np.mean([f.occluded.mean() for f in train29])
    assert occluded_test > 0.15 and occluded_test > occluded_train  # the COFW test set is heavily occluded
    assert synthesize("cofw68", tmp_path / "no-train", seed=2, n_train=0, n_test=2).joinpath(cofw.TEST_MAT).is_file()
    assert not (tmp_path / "no-train" / cofw.TRAIN_MAT).exists()


def _hidden(params) -> np.ndarray:
    _, self_hidden, object_hidden = annotate(params)
    return self_hidden["68"] | object_hidden["68"]


@pytest.mark.parametrize("seed", range(6))
def test_hide_fraction_hides_the_requested_share_of_points(seed):
    params = sample_params(np.random.default_rng(seed), Conditions(expression=seed % 2 == 0))
    assert not _hidden(params).any()  # a mild-pose face without occluders: nothing hidden yet
    direction = float(np.random.default_rng(100 + seed).uniform(0, 2 * np.pi))
    landmarks = annotate(params)[0]["68"]
    coincident = len(landmarks) - len(np.unique(np.round(landmarks, 3), axis=0))
    previous = np.zeros(68, bool)
    for fraction in (0.0, 0.1, 0.25, 0.4, 0.5, 0.75, 1.0):
        hidden = _hidden(hide_fraction(params, fraction, direction))
        # exact, up to points that coincide (a closed mouth's corners) and so are hidden together
        assert abs(int(hidden.sum()) - round(fraction * 68)) <= (1 if coincident else 0), (fraction, hidden.sum())
        assert (hidden >= previous).all()  # the same bar reaching further in from the same side
        previous = hidden
    assert previous.all()
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        hide_fraction(params, 1.5, direction)


def test_occlusion_sweep_set_renders_each_face_at_each_level(tmp_path):
    root = synthesize("cofw68", tmp_path / "sweep", seed=1, n_train=0, n_test=3, occlusion_levels=[0, 20, 50])
    faces = read_dataset("cofw68", root)["test"]
    assert len(faces) == 9 and json.loads((root / "SYNTHETIC.json").read_text())["occlusion_levels"] == [0, 20, 50]
    hidden = np.array([f.occluded.sum() for f in faces]).reshape(3, 3)  # level by level, three faces each
    assert (np.abs(hidden - np.array([[0], [14], [34]])) <= 1).all(), hidden
    for k in range(3):  # the same face (landmarks) at every level; only the occluder changes
        np.testing.assert_allclose(faces[k].landmarks, faces[6 + k].landmarks)
    assert not np.array_equal(faces[0].image, faces[6].image)
    with pytest.raises(CCDNError, match="--n-train 0 --occlusion-levels"):
        synthesize("300w", tmp_path / "bad", n_train=0, n_test=3, occlusion_levels=[0, 10])
    with pytest.raises(CCDNError, match=r"in \[0, 100\]"):
        synthesize("cofw68", tmp_path / "bad", n_train=0, n_test=3, occlusion_levels=[0, 120])


def test_aflw_round_trip(tmp_path):
    root = synthesize("aflw", tmp_path / "aflw", seed=3, n_train=10, n_test=16)
    faces = read_dataset("aflw", root)
    assert len(faces["train"]) == 10 and len(faces["test"]) == 16
    frontal = [f for f in faces["test"] if "frontal" in f.subsets]
    assert 0 < len(frontal) < 16
    assert all(("frontal" in f.subsets) == (not f.occluded.any()) for f in faces["test"])
    assert all(f.subsets == ("full",) for f in faces["train"])
    assert {f.face_id for f in faces["train"]}.isdisjoint(f.face_id for f in faces["test"])
    for face in faces["test"]:
        x1, y1, x2, y2 = face.box
        assert abs((x2 - x1) - (y2 - y1)) < 1e-6  # CCL-style square boxes
        assert load_image(face).ndim == 3


def test_wflw_round_trip(tmp_path):
    root = synthesize("wflw", tmp_path / "wflw", seed=4, n_train=6, n_test=20)
    faces = read_dataset("wflw", root)
    assert len(faces["train"]) == 6 and len(faces["test"]) == 20
    for face in faces["test"]:
        # subset lists (197 columns) and the flags of the 207-column line are written independently
        assert set(face.subsets) == {"full", *(name for name, on in face.attributes.items() if on)}
    counts = _subset_counts(faces["test"])
    assert all(counts.get(name, 0) >= 1 for name in wflw.ATTRIBUTES)
    first = (root / wflw.SUBSET_DIR / "list_98pt_test.txt").read_text().splitlines()[0].split()
    assert len(first) == 197
    pose = np.array([f.landmarks for f in faces["test"] if "pose" in f.subsets])
    other = np.array([f.landmarks for f in faces["test"] if "pose" not in f.subsets])
    eyes = [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75]
    to68 = [*range(0, 33, 2), *range(33, 38), *range(42, 47), *range(51, 60), *eyes, *range(76, 96)]  # 98 -> 68
    assert len(to68) == 68
    assert _yaw_proxy(pose[:, to68]).mean() > 2 * _yaw_proxy(other[:, to68]).mean()


@pytest.mark.parametrize("dataset", ["300w", "cofw68"])
def test_same_seed_same_bytes(tmp_path, dataset):
    first = synthesize(dataset, tmp_path / "a", seed=5, n_train=3, n_test=3)
    second = synthesize(dataset, tmp_path / "b", seed=5, n_train=3, n_test=3)
    other = synthesize(dataset, tmp_path / "c", seed=6, n_train=3, n_test=3)
    assert _digests(first) == _digests(second)
    different = {k for k, v in _digests(other).items() if _digests(first).get(k) != v}
    assert len(different) > len(_digests(first)) // 2  # another seed changes (almost) everything


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------------------------- command


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ccdn")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_writes_and_replaces_only_synthetic_data(tmp_path, capsys):
    out = tmp_path / "raw" / "wflw"
    args = _cli(["synth", "wflw", "--out", str(out), "--seed", "3", "--n-train", "2", "--n-test", "2"])
    assert args.func is run and run(args) == 0
    assert "2 train / 2 test faces, seed 3" in capsys.readouterr().out
    assert json.loads((out / "SYNTHETIC.json").read_text())["seed"] == 3
    (out / "SYNTHETIC.json").unlink()  # Snakemake deletes a rule's output before re-running it
    assert run(_cli(["synth", "wflw", "--out", str(out), "--seed", "4", "--n-train", "2", "--n-test", "2"])) == 0
    assert json.loads((out / "SYNTHETIC.json").read_text())["seed"] == 4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left

    real = tmp_path / "real300w"
    (real / "afw").mkdir(parents=True)
    (real / "afw" / "1.pts").write_text("version: 1\n")
    with pytest.raises(CCDNError, match="holds no SYNTHETIC.json: it may be real data"):
        synthesize("300w", real, seed=0, n_train=3, n_test=3)
    assert (real / "afw" / "1.pts").read_text() == "version: 1\n"
    with pytest.raises(CCDNError, match="needs --n-train >= 3 and --n-test >= 3"):
        synthesize("300w", tmp_path / "small", seed=0, n_train=2, n_test=3)
    with pytest.raises(SystemExit):
        _cli(["synth", "cofw", "--out", str(out)])


def test_failed_synthesis_leaves_nothing_behind(tmp_path, monkeypatch):
    import ccdn.data.synth as synth

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth.w300, "write_bounding_boxes", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize("300w", tmp_path / "300w", seed=0, n_train=3, n_test=3)
    assert list(tmp_path.iterdir()) == []
    assert w300.FOLDERS  # the module under test is the real one
