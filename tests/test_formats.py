"""The real-format parsers: real annotation files, hand-built layouts and every bad-input case.

Real data used: ``tests/data/skimage_astronaut`` (a 68-point ``.pts`` with its image) and
``tests/data/dlib_examples_faces`` (dlib imglab XML, images absent by design).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from ccdn.data.errors import DataFormatError
from ccdn.data.formats import DATASET_NAMES, load_image, read_dataset, read_dlib_xml, read_pts
from ccdn.data.formats import aflw, cofw, w300, wflw
from ccdn.data.formats.matlab import is_hdf5_mat, load_mat, save_mat_v5, save_mat_v73

REALDATA = Path(__file__).resolve().parent / "data"  # provenance and licences: tests/data/README.md
ASTRONAUT_PTS = REALDATA / "skimage_astronaut" / "astronaut.pts"
ASTRONAUT_PNG = REALDATA / "skimage_astronaut" / "astronaut.png"
DLIB_XML = REALDATA / "dlib_examples_faces" / "annotations"
ASTRONAUT_DETECTOR_BOX = np.array([175.0, 76.0, 265.0, 166.0])  # dlib HOG box from the folder's README


# ------------------------------------------------------------------------------ real annotations


def test_read_pts_on_the_real_astronaut_file_is_zero_based():
    points = read_pts(ASTRONAUT_PTS)
    assert points.shape == (68, 2) and points.dtype == np.float64
    first_line = ASTRONAUT_PTS.read_text().splitlines()[3].split()
    np.testing.assert_allclose(points[0], [float(first_line[0]) - 1, float(first_line[1]) - 1])
    image = load_image(_face(ASTRONAUT_PNG, points))
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    x1, y1, x2, y2 = ASTRONAUT_DETECTOR_BOX
    for corner in (36, 45, 30, 48, 54):  # eye corners, nose tip and mouth corners sit in the face box
        assert x1 <= points[corner, 0] <= x2 and y1 <= points[corner, 1] <= y2
    assert points[36, 0] < points[39, 0] < points[42, 0] < points[45, 0]  # iBUG order, image left to right


@pytest.mark.parametrize(("name", "faces"), [("training", 18), ("testing", 25)])
def test_dlib_xml_real_files(name, faces):
    path = DLIB_XML / f"{name}_with_face_landmarks.xml"
    parsed = read_dlib_xml(path)
    assert len(parsed) == faces
    assert len({f.face_id for f in parsed}) == faces
    for face in parsed:
        assert face.landmarks.shape == (68, 2)
        assert face.image_path.parent == path.parent and not face.image_path.exists()  # images are not shipped
        x1, y1, x2, y2 = face.box
        assert x2 > x1 and y2 > y1
        assert face.landmarks[36, 0] < face.landmarks[45, 0]
        centre = face.landmarks[[36, 45, 30]].mean(axis=0)
        assert x1 <= centre[0] <= x2 and y1 <= centre[1] <= y2


def test_dlib_xml_first_face_values():
    face = read_dlib_xml(DLIB_XML / "training_with_face_landmarks.xml")[0]
    assert face.face_id == "2007_007763.jpg#0"
    np.testing.assert_array_equal(face.box, [194, 90, 231, 127])
    np.testing.assert_array_equal(face.landmarks[0], [201, 107])
    np.testing.assert_array_equal(face.landmarks[67], _part(DLIB_XML / "training_with_face_landmarks.xml", "67"))


def _part(path: Path, name: str) -> list[float]:
    for line in path.read_text(encoding="iso-8859-1").splitlines():
        if f"name='{name}'" in line:
            x = line.split("x='")[1].split("'")[0]
            y = line.split("y='")[1].split("'")[0]
            return [float(x), float(y)]
    raise AssertionError(name)


def test_dlib_xml_missing_part_names_the_line(tmp_path):
    lines = (DLIB_XML / "testing_with_face_landmarks.xml").read_text(encoding="iso-8859-1").splitlines()
    box_line = next(i for i, line in enumerate(lines, start=1) if "<box" in line)
    dropped = next(i for i, line in enumerate(lines) if "name='30'" in line)
    bad = tmp_path / "bad.xml"
    bad.write_text("\n".join(lines[:dropped] + lines[dropped + 1 :]), encoding="iso-8859-1")
    expected = rf"bad\.xml:{box_line}: box has 67 parts, expected 68 \(missing \[30\]\)"
    with pytest.raises(DataFormatError, match=expected):
        read_dlib_xml(bad)


def test_dlib_xml_malformed_names_the_line(tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text("<dataset>\n<images>\n<image file='a.jpg'>\n<box top='1' left='2' width='3' height='4'>\n</image>\n")
    with pytest.raises(DataFormatError, match=r"broken\.xml:5: malformed XML"):
        read_dlib_xml(bad)


# ------------------------------------------------------------------------------------- 300W


def _face(image_path: Path, points: np.ndarray):
    from ccdn.data.records import RawFace

    return RawFace("x", image_path, points, np.zeros(4), np.zeros(len(points), dtype=bool))


def _build_300w(root: Path) -> dict[str, str]:
    """A 300W tree whose every folder holds the real astronaut (image + .pts) under a real-style name."""
    stems = {
        "afw": "1051618982_1",
        "helen/trainset": "100032540_1",
        "lfpw/trainset": "image_0001",
        "helen/testset": "296814969_3",
        "lfpw/testset": "image_0002",
        "ibug": "image_092 _01",
    }
    points = read_pts(ASTRONAUT_PTS)
    tight = np.array([*points.min(axis=0), *points.max(axis=0)])
    for folder, stem in stems.items():
        (root / folder).mkdir(parents=True)
        suffix = ".png"
        shutil.copyfile(ASTRONAUT_PNG, root / folder / f"{stem}{suffix}")
        shutil.copyfile(ASTRONAUT_PTS, root / folder / f"{stem}.pts")
        w300.write_bounding_boxes(w300.box_file(root, folder), [(f"{stem}{suffix}", ASTRONAUT_DETECTOR_BOX, tight)])
    return stems


def test_300w_layout_on_the_real_astronaut(tmp_path):
    stems = _build_300w(tmp_path)
    faces = read_dataset("300w", tmp_path)
    assert sorted(faces) == ["test", "train"]
    train_folders = ("afw", "helen/trainset", "lfpw/trainset")
    assert [f.face_id for f in faces["train"]] == [f"{k}/{stems[k]}" for k in train_folders]
    test = {f.face_id: f for f in faces["test"]}
    assert set(test["ibug/image_092 _01"].subsets) == {"full", "challenging"}
    assert set(test["helen/testset/296814969_3"].subsets) == {"full", "common"}
    assert set(test["lfpw/testset/image_0002"].subsets) == {"full", "common"}
    assert all(f.subsets == ("full",) for f in faces["train"])
    ibug = test["ibug/image_092 _01"]
    assert ibug.image_path.name == "image_092 _01.png"
    np.testing.assert_allclose(ibug.box, ASTRONAUT_DETECTOR_BOX, atol=1e-9)  # written 1-based, read 0-based
    np.testing.assert_allclose(ibug.landmarks, read_pts(ASTRONAUT_PTS))
    assert load_image(ibug).shape == (512, 512, 3)
    gt = read_dataset("300w", tmp_path, box="ground_truth")["test"][0]
    np.testing.assert_allclose(gt.box, [*gt.landmarks.min(axis=0), *gt.landmarks.max(axis=0)], atol=1e-9)


def test_300w_bounding_boxes_file_is_a_cell_array_of_structs(tmp_path):
    _build_300w(tmp_path)
    import scipy.io

    mat = scipy.io.loadmat(str(w300.box_file(tmp_path, "ibug")))
    cells = mat["bounding_boxes"]
    assert cells.dtype == object and cells.shape == (1, 1)
    record = cells[0, 0][0, 0]
    assert record["imgName"][0] == "image_092 _01.png"
    np.testing.assert_allclose(record["bb_detector"][0], ASTRONAUT_DETECTOR_BOX + 1)  # 1-based on disk
    assert mat["__header__"].startswith(b"MATLAB 5.0 MAT-file") and b"1970" in mat["__header__"]


PTS_HEADER = "version: 1\nn_points:  68\n{\n"


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (PTS_HEADER + "1 2\n" * 30, 33, "truncated: ends after 30 of 68 points"),
        (PTS_HEADER + "1 2\n" * 30 + "}\n", 34, "count mismatch: n_points is 68 but the body between"),
        (PTS_HEADER + "1 2\n" * 67 + "}\n", 71, "n_points is 68 but the body between '{' and '}' has 67 points"),
        ("version: 1\nn_points:  67\n{\n" + "1 2\n" * 67 + "}\n", 2, "n_points is 67, expected 68"),
        (PTS_HEADER + "1 2\n" * 6 + "1 abc\n" + "1 2\n" * 61 + "}\n", 10, "non-numeric coordinate"),
        (PTS_HEADER + "1 2\n" * 68, 71, "closing '}' is missing"),
        (PTS_HEADER + "1 2\n" * 69 + "}\n", 73, "has 69 points"),
        (PTS_HEADER + "1 2\n" * 68 + "}\n1 2\n", 73, "unexpected text after the closing '}'"),
        ("n_points: 68\n{\n", 2, "truncated"),
    ],
)
def test_bad_pts_names_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "image_092 _01.pts"
    path.write_text(body)
    with pytest.raises(DataFormatError) as info:
        read_pts(path)
    text = str(info.value)
    assert f"{path}:{line}:" in text and message in text and "Fix:" in text


def test_300w_missing_images_are_listed(tmp_path):
    _build_300w(tmp_path)
    (tmp_path / "ibug" / "image_092 _01.png").unlink()
    (tmp_path / "afw" / "1051618982_1.png").unlink()
    with pytest.raises(DataFormatError) as info:
        read_dataset("300w", tmp_path)
    text = str(info.value)
    assert "2 of 6 image files" in text and "image_092 _01.*" in text and "1051618982_1.*" in text
    assert "any extension Pillow reads: " in text and " .jpg " in text and " .ppm " in text


def test_300w_unreadable_image_is_named(tmp_path):
    _build_300w(tmp_path)
    broken = tmp_path / "helen" / "testset" / "296814969_3.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFormatError, match=rf"{broken}: not a readable image"):
        read_dataset("300w", tmp_path)


def test_truncated_image_fails_to_decode_with_its_name(tmp_path):
    _build_300w(tmp_path)
    face = read_dataset("300w", tmp_path)["train"][0]
    face.image_path.write_bytes(ASTRONAUT_PNG.read_bytes()[:200_000])  # header intact, data cut short
    with pytest.raises(DataFormatError, match=rf"{face.image_path}: cannot decode image"):
        load_image(face)


def test_300w_box_mat_missing_a_field(tmp_path):
    _build_300w(tmp_path)
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {"imgName": "image_0002.png", "bb_ground_truth": np.ones((1, 4))}
    path = w300.box_file(tmp_path, "lfpw/testset")
    save_mat_v5(path, {"bounding_boxes": cells})
    with pytest.raises(DataFormatError, match=rf"{path}: bounding_boxes entry 1 has no field 'bb_detector'"):
        read_dataset("300w", tmp_path)


def test_300w_box_mat_without_the_image(tmp_path):
    _build_300w(tmp_path)
    path = w300.box_file(tmp_path, "afw")
    w300.write_bounding_boxes(path, [("someone_else.jpg", ASTRONAUT_DETECTOR_BOX, ASTRONAUT_DETECTOR_BOX)])
    with pytest.raises(DataFormatError, match=rf"{path}: no bounding box for image '1051618982_1'"):
        read_dataset("300w", tmp_path)


def test_300w_missing_box_file_and_folder(tmp_path):
    _build_300w(tmp_path)
    w300.box_file(tmp_path, "ibug").unlink()
    expected = r"bounding_boxes_ibug\.mat: file not found\. Fix: re-download bounding_boxes\.zip"
    with pytest.raises(DataFormatError, match=expected):
        read_dataset("300w", tmp_path)
    shutil.rmtree(tmp_path / "helen" / "testset")
    with pytest.raises(DataFormatError, match=r"helen/testset: 300W folder not found"):
        read_dataset("300w", tmp_path)


# ------------------------------------------------------------------------------------- COFW


def _write_cofw(root: Path, n: int = 3, rng_seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rng_seed)
    images = [rng.integers(0, 256, (30 + 5 * k, 40 + 3 * k, 3), dtype=np.uint8) for k in range(n)]
    images[1] = images[1][:, :, 0]  # COFW holds some grey images
    lm29 = rng.uniform(5, 25, (n, 29, 2))
    occ29 = rng.random((n, 29)) < 0.3
    lm68 = rng.uniform(5, 25, (n, 68, 2))
    occ68 = rng.random((n, 68)) < 0.3
    boxes = np.array([[2.0, 3.0, 27.0, 29.0]] * n) + np.arange(n)[:, None]
    cofw.write_cofw29(root / cofw.TEST_MAT, "test", images, lm29, occ29, boxes)
    cofw.write_cofw68(root, lm68, occ68, boxes)
    return {"images": images, "lm29": lm29, "occ29": occ29, "lm68": lm68, "occ68": occ68, "boxes": boxes}


def test_cofw_v73_file_layout(tmp_path):
    _write_cofw(tmp_path)
    path = tmp_path / cofw.TEST_MAT
    assert is_hdf5_mat(path)
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as handle:
        assert handle["phisT"].shape == (87, 3)  # HDF5 holds MATLAB's 3 x 87 transposed
        assert handle["IsT"].dtype == h5py.ref_dtype and handle["IsT"].attrs["MATLAB_class"] == b"cell"
        first = handle[handle["IsT"][0, 0]]
        assert first.shape == (3, 40, 30) and first.attrs["MATLAB_class"] == b"uint8"


def test_cofw68_and_cofw29_round_trip(tmp_path):
    truth = _write_cofw(tmp_path)
    faces = read_dataset("cofw68", tmp_path)
    assert list(faces) == ["test"] and len(faces["test"]) == 3
    for k, face in enumerate(faces["test"]):
        assert face.face_id == f"test/{k + 1}" and face.subsets == ("full",)
        np.testing.assert_allclose(face.landmarks, truth["lm68"][k], atol=1e-9)
        np.testing.assert_array_equal(face.occluded, truth["occ68"][k])
        expected = truth["images"][k] if truth["images"][k].ndim == 3 else np.repeat(truth["images"][k][:, :, None], 3, 2)
        np.testing.assert_array_equal(face.image, expected)  # grey images come back as RGB
        np.testing.assert_allclose(face.box, truth["boxes"][k], atol=1e-9)  # integer boxes stay exact
    assert load_image(faces["test"][1]).shape == (*truth["images"][1].shape, 3)
    faces29 = cofw.read_cofw29(tmp_path / cofw.TEST_MAT)
    np.testing.assert_allclose(np.array([f.landmarks for f in faces29]), truth["lm29"], atol=1e-9)
    np.testing.assert_array_equal(np.array([f.occluded for f in faces29]), truth["occ29"])


def test_cofw_mat_missing_a_field(tmp_path):
    _write_cofw(tmp_path)
    path = tmp_path / cofw.TEST_MAT
    save_mat_v73(path, {"IsT": load_mat(path, ["IsT"], "")["IsT"], "bboxesT": np.ones((3, 4))})
    expected = rf"{path}: variable 'phisT' is missing \(variables present: IsT, bboxesT\)"
    with pytest.raises(DataFormatError, match=expected):
        cofw.read_cofw29(path)


def test_cofw68_missing_points_files_are_listed(tmp_path):
    _write_cofw(tmp_path)
    (tmp_path / cofw.POINTS_DIR / "2_points.mat").unlink()
    with pytest.raises(DataFormatError, match=r"(?s)1 of 3 COFW-68 point files are missing.*2_points\.mat"):
        read_dataset("cofw68", tmp_path)


def test_cofw68_points_file_without_occ(tmp_path):
    _write_cofw(tmp_path)
    path = tmp_path / cofw.POINTS_DIR / "3_points.mat"
    save_mat_v5(path, {"Points": np.ones((68, 2))})
    with pytest.raises(DataFormatError, match=rf"{path}: variable 'Occ' is missing"):
        read_dataset("cofw68", tmp_path)


def test_cofw68_image_count_must_match_boxes(tmp_path):
    truth = _write_cofw(tmp_path)
    two = {key: value[:2] for key, value in truth.items()}
    cofw.write_cofw29(tmp_path / cofw.TEST_MAT, "test", two["images"], two["lm29"], two["occ29"], two["boxes"])
    with pytest.raises(DataFormatError, match=r"IsT holds 2 images but cofw68_test_bboxes\.mat has 3 boxes"):
        read_dataset("cofw68", tmp_path)


# ------------------------------------------------------------------------------------- AFLW


def _write_aflw(root: Path, n_train: int = 3, n_test: int = 3) -> dict[str, np.ndarray]:
    from PIL import Image

    n = n_train + n_test
    rng = np.random.default_rng(1)
    names = [f"{('0', '2', '3')[k % 3]}/image{k:05d}.jpg" for k in range(n)]
    for name in names:
        (root / aflw.IMAGE_ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (100, 50, 25)).save(root / aflw.IMAGE_ROOT / name)
    landmarks = rng.uniform(0, 30, (n, 19, 2))
    visible = np.ones((n, 19), dtype=bool)
    visible[[0, 4], 3] = False
    boxes = np.tile([1.0, 2.0, 30.0, 31.0], (n, 1))
    order = rng.permutation(n)
    aflw.write_aflw_info(root / aflw.INFO_MAT, names, landmarks, visible, boxes, order, n_train)
    return {"names": names, "landmarks": landmarks, "visible": visible, "order": order, "boxes": boxes}


def test_aflw_split_frontal_and_box_order(tmp_path):
    truth = _write_aflw(tmp_path)
    faces = read_dataset("aflw", tmp_path)
    assert [len(faces["train"]), len(faces["test"])] == [3, 3]
    for position, face in enumerate([*faces["train"], *faces["test"]]):
        row = truth["order"][position]
        assert face.face_id == f"{truth['names'][row]}#{row + 1}"
        np.testing.assert_allclose(face.landmarks, truth["landmarks"][row])
        np.testing.assert_allclose(face.box, truth["boxes"][row])  # written [x1 x2 y1 y2], read x1 y1 x2 y2
        np.testing.assert_array_equal(face.occluded, ~truth["visible"][row])
        expected = ("full", "frontal") if position >= 3 and truth["visible"][row].all() else ("full",)
        assert face.subsets == expected
    raw = load_mat(tmp_path / aflw.INFO_MAT, ["bbox"], "")["bbox"]
    np.testing.assert_allclose(raw[0], [1.0, 30.0, 2.0, 31.0])
    shifted = read_dataset("aflw", tmp_path, one_based=True)["train"][0]
    np.testing.assert_allclose(shifted.landmarks, faces["train"][0].landmarks - 1)


def test_aflw_mat_missing_ra(tmp_path):
    _write_aflw(tmp_path)
    path = tmp_path / aflw.INFO_MAT
    values = load_mat(path, ["bbox", "data", "mask_new", "nameList"], "")
    save_mat_v5(path, values)
    with pytest.raises(DataFormatError, match=rf"{path}: variable 'ra' is missing"):
        read_dataset("aflw", tmp_path)


def test_aflw_without_split_point_must_be_the_official_size(tmp_path):
    _write_aflw(tmp_path)
    path = tmp_path / aflw.INFO_MAT
    save_mat_v5(path, load_mat(path, ["bbox", "data", "mask_new", "nameList", "ra"], ""))
    with pytest.raises(DataFormatError, match=r"holds 6 faces and no n_train; the official file has 24386"):
        read_dataset("aflw", tmp_path)


def test_aflw_missing_images_get_the_placement_fix(tmp_path):
    truth = _write_aflw(tmp_path)
    (tmp_path / aflw.IMAGE_ROOT / truth["names"][2]).unlink()
    with pytest.raises(DataFormatError, match=r"(?s)1 of 6 image files .*image00002\.jpg.*licence-gated"):
        read_dataset("aflw", tmp_path)


# ------------------------------------------------------------------------------------- WFLW


def _write_wflw(root: Path) -> list[dict[str, bool]]:
    from PIL import Image

    rng = np.random.default_rng(2)
    flags = [{a: bool(rng.random() < 0.5) for a in wflw.ATTRIBUTES} for _ in range(4)]
    lines: dict[str, list[str]] = {"train": [], "test": []}
    subsets: dict[str, list[str]] = {a: [] for a in wflw.ATTRIBUTES}
    for split in ("train", "test"):
        for k in range(4):
            name = f"12--Group/12_Group_{split}_{k // 2}.jpg"  # two faces per image, like the real set
            (root / wflw.IMAGE_DIR / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 40)).save(root / wflw.IMAGE_DIR / name)
            points = rng.uniform(0, 40, (98, 2))
            lines[split].append(wflw.format_line(points, [1, 2, 30, 35], flags[k], name))
            if split == "test":
                for a in wflw.ATTRIBUTES:
                    if flags[k][a]:
                        line = wflw.format_line(points, [1, 2, 30, 35], flags[k], name, with_rect_attr=k % 2 == 0)
                        subsets[a].append(line)  # subset lists may have 207 or 197 columns
    wflw.write_lists(root, lines["train"], lines["test"], subsets, [])
    return flags


def test_wflw_lines_attributes_and_subsets(tmp_path):
    flags = _write_wflw(tmp_path)
    faces = read_dataset("wflw", tmp_path)
    assert [len(faces["train"]), len(faces["test"])] == [4, 4]
    assert faces["test"][1].face_id == "12--Group/12_Group_test_0.jpg#2"
    for k, face in enumerate(faces["test"]):
        assert face.attributes == flags[k]
        assert set(face.subsets) == {"full", *(a for a in wflw.ATTRIBUTES if flags[k][a])}
        np.testing.assert_allclose(face.box, [1, 2, 30, 35])
    line = wflw.list_path(tmp_path, "test").read_text().splitlines()[0].split()
    assert len(line) == 207
    np.testing.assert_allclose(faces["test"][0].landmarks[0], [float(line[0]), float(line[1])])


def test_wflw_wrong_column_count_names_file_and_line(tmp_path):
    _write_wflw(tmp_path)
    path = wflw.list_path(tmp_path, "train")
    lines = path.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[1:])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: expected 207 columns, found 206"):
        read_dataset("wflw", tmp_path)


def test_wflw_bad_flag_and_number(tmp_path):
    _write_wflw(tmp_path)
    path = wflw.list_path(tmp_path, "test")
    lines = path.read_text().splitlines()
    fields = lines[1].split()
    fields[-2] = "2"
    lines[1] = " ".join(fields)
    fields = lines[3].split()
    fields[5] = "1.2.3"
    lines[3] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{path}:2: attribute flags must be 0 or 1"):
        read_dataset("wflw", tmp_path)
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: non-numeric column"):
        read_dataset("wflw", tmp_path)


def test_wflw_subset_line_not_in_the_test_list(tmp_path):
    _write_wflw(tmp_path)
    path = wflw.subset_path(tmp_path, "blur")
    path.write_text("1.0 " * 196 + "nowhere/x.jpg\n")
    expected = rf"{path}:1: face 'nowhere/x\.jpg' .* is not in list_98pt_rect_attr_test\.txt"
    with pytest.raises(DataFormatError, match=expected):
        read_dataset("wflw", tmp_path)


def test_wflw_missing_subset_list(tmp_path):
    _write_wflw(tmp_path)
    wflw.subset_path(tmp_path, "makeup").unlink()
    with pytest.raises(DataFormatError, match=r"list_98pt_test_makeup\.txt: WFLW list file not found"):
        read_dataset("wflw", tmp_path)


# ---------------------------------------------------------------------------------------- misc


def test_read_dataset_rejects_unknown_names_and_missing_roots(tmp_path):
    assert DATASET_NAMES == ("300w", "cofw68", "aflw", "wflw")
    with pytest.raises(ValueError, match="unknown dataset 'cofw29'"):
        read_dataset("cofw29", tmp_path)
    with pytest.raises(DataFormatError, match=r"raw root of wflw not found\. Fix: run `ccdn fetch wflw`"):
        read_dataset("wflw", tmp_path / "absent")


def test_unreadable_mat_file_is_named(tmp_path):
    path = tmp_path / "AFLWinfo_release.mat"
    path.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataFormatError, match=rf"{path}: cannot read this \.mat file"):
        read_dataset("aflw", tmp_path)
