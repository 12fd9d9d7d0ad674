"""Landmark schemes: flip permutations are involutions that swap the eyes, names agree with them,
and flipping real 68-point faces keeps every point on its anatomical side."""

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ccdn.data.schemes import DATASETS, SCHEMES, get_dataset, get_scheme, swap_side
from ccdn.metrics import NORMS

REAL = Path(__file__).resolve().parent / "data"  # provenance and licences: tests/data/README.md
ALL_SCHEMES = sorted(SCHEMES)


def read_pts(path: Path) -> np.ndarray:
    """A 300W ``.pts`` file as 0-based (L, 2) pixels (the format is 1-based)."""
    lines = path.read_text().splitlines()
    start, end = lines.index("{") + 1, lines.index("}")
    return np.array([[float(v) for v in line.split()] for line in lines[start:end]]) - 1.0


def read_dlib_faces(path: Path) -> list[np.ndarray]:
    faces = []
    for box in ET.parse(path).getroot().iter("box"):
        parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
        if len(parts) == 68:
            faces.append(np.array([[float(p.get("x")), float(p.get("y"))] for p in parts]))
    return faces


def flip_points(points: np.ndarray, width: float, mirror) -> np.ndarray:
    flipped = points[np.asarray(mirror)].copy()
    flipped[:, 0] = width - flipped[:, 0]
    return flipped


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_mirror_is_an_involution_and_swaps_the_eyes(name):
    scheme = get_scheme(name)
    mirror = np.asarray(scheme.mirror)
    assert scheme.num_points == int(name) == len(mirror) == len(scheme.names)
    np.testing.assert_array_equal(mirror[mirror], np.arange(scheme.num_points))
    assert sorted(mirror[list(scheme.left_eye)]) == sorted(scheme.right_eye)
    assert sorted(mirror[list(scheme.right_eye)]) == sorted(scheme.left_eye)
    a, b = scheme.inter_ocular
    assert mirror[a] == b
    left, right = scheme.inter_pupil
    assert sorted(mirror[list(left)]) == sorted(right)
    assert set(left) <= set(scheme.left_eye) and set(right) <= set(scheme.right_eye)
    assert not set(scheme.left_eye) & set(scheme.right_eye)


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_point_names_are_unique_and_agree_with_the_mirror(name):
    scheme = get_scheme(name)
    assert len(set(scheme.names)) == scheme.num_points
    for i, j in enumerate(scheme.mirror):
        assert scheme.names[j] == swap_side(scheme.names[i]), (i, scheme.names[i], scheme.names[j])


def test_known_indices_from_the_standard_tables():
    s68, s98, s29, s19 = (get_scheme(n) for n in ("68", "98", "29", "19"))
    assert s68.inter_ocular == (36, 45) and s68.inter_pupil == (tuple(range(36, 42)), tuple(range(42, 48)))
    assert s68.mirror[0] == 16 and s68.mirror[17] == 26 and s68.mirror[30] == 30 and s68.mirror[48] == 54
    assert s68.names[36] == "eye_l_outer" and s68.names[45] == "eye_r_outer" and s68.names[8] == "jaw_mid"
    assert s98.inter_ocular == (60, 72) and s98.inter_pupil == ((96,), (97,))
    assert s98.mirror[0] == 32 and s98.mirror[96] == 97 and s98.mirror[33] == 46 and s98.mirror[38] == 50
    assert s29.inter_ocular == (8, 9) and s29.inter_pupil == ((16,), (17,)) and s29.mirror[28] == 28
    assert s19.mirror[0] == 5 and s19.mirror[18] == 18 and s19.mirror[13] == 13


def test_get_scheme_accepts_ints_and_rejects_unknown():
    assert get_scheme(68) is get_scheme("68")
    with pytest.raises(ValueError, match="known schemes"):
        get_scheme("21")


def test_flipping_real_faces_keeps_points_on_their_side():
    """On real faces, flip+permute must give a plausible face: image-left eye still left of the right
    eye, jaw start left of jaw end, and the mirrored shape close to the original (near-frontal)."""
    scheme = get_scheme("68")
    faces = [read_pts(REAL / "skimage_astronaut/astronaut.pts")]
    faces += read_dlib_faces(REAL / "dlib_examples_faces/annotations/testing_with_face_landmarks.xml")
    assert len(faces) > 10
    close = 0
    for points in faces:
        width = 2 * points[:, 0].mean()  # flip about the face's own centre
        flipped = flip_points(points, width, scheme.mirror)
        assert flipped[list(scheme.left_eye), 0].mean() < flipped[list(scheme.right_eye), 0].mean()
        assert flipped[0, 0] < flipped[16, 0] and flipped[48, 0] < flipped[54, 0]
        iod = np.linalg.norm(points[36] - points[45])
        permuted = np.linalg.norm(flipped - points, axis=1).mean() / iod
        unpermuted = np.linalg.norm(np.c_[width - points[:, 0], points[:, 1]] - points, axis=1).mean() / iod
        assert permuted < unpermuted
        close += permuted < 0.25
    assert close >= 0.8 * len(faces)
    np.testing.assert_allclose(flip_points(flipped, width, scheme.mirror), points)


def test_dataset_table_is_consistent():
    for name, info in DATASETS.items():
        assert get_dataset(name) is info and info.name == name
        get_scheme(info.scheme)
        assert info.norms and set(info.norms) <= set(NORMS)
        for split, subsets in info.subsets.items():
            assert subsets[0] == "full"
        for split, subset in [*info.expected_counts, *info.reported_counts]:
            assert subset in info.subsets[split]
    w300 = get_dataset("300w").expected_counts
    assert w300["test", "common"] + w300["test", "challenging"] == w300["test", "full"] == 689
    assert get_dataset("300w").norms == ("inter_pupil", "inter_ocular")
    assert get_dataset("cofw68").norms == ("inter_pupil",) and get_dataset("cofw68").failure_thresholds == (0.1,)
    assert get_dataset("aflw").norms == ("face_size",)
    assert ("test", "frontal") not in get_dataset("aflw").expected_counts
    assert get_dataset("wflw").norms == ("inter_ocular",) and get_dataset("wflw").scheme == "98"
    with pytest.raises(ValueError, match="known datasets"):
        get_dataset("menpo")
