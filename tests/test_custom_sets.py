"""Own data: ``ccdn prepare custom`` and ``--partial`` on real annotation files, lenient readers, exact errors.

Real data: ``tests/data/skimage_astronaut`` (68-point ``.pts`` with its image) and the dlib example
XML (68 points, images absent by design: synthetic stand-ins of the sizes the XML states are drawn).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdn.cli import main
from ccdn.data import load_split
from ccdn.data.custom import prepare_custom, split_faces
from ccdn.data.errors import DataFormatError
from ccdn.data.formats import read_dataset, w300
from ccdn.data.formats.folder import read_annotated_folder
from ccdn.data.formats.ljson import read_ljson
from ccdn.data.formats.pts import read_pts
from ccdn.data.prepare import prepare_dataset
from ccdn.evaluate import evaluate
from ccdn.report.rows import data_label, metrics_rows, render_rows_markdown

from constant_model import fixed_point_run

REALDATA = Path(__file__).resolve().parent / "data"
ASTRONAUT_PTS = REALDATA / "skimage_astronaut" / "astronaut.pts"
ASTRONAUT_PNG = REALDATA / "skimage_astronaut" / "astronaut.png"
DLIB_TEST_XML = REALDATA / "dlib_examples_faces" / "annotations" / "testing_with_face_landmarks.xml"
ASTRONAUT_BOX = [175.0, 76.0, 265.0, 166.0]  # dlib's HOG box (tests/data/skimage_astronaut/README.md)


def _hand_edited(text: str) -> bytes:
    """The same .pts as a hand edit often leaves it: BOM, CRLF, blank lines, trailing spaces."""
    lines = text.splitlines()
    lines.insert(3, "")  # a blank line after "{"
    lines.insert(10, "   ")
    edited = "\r\n".join(line + "  " for line in lines) + "\r\n\r\n"
    return b"\xef\xbb\xbf" + edited.encode("utf-8")


def _own_folder(root: Path) -> Path:
    """astronaut.png + .pts, a .ppm copy with a hand-edited .pts, and the dlib test XML with stand-in images."""
    root.mkdir(parents=True)
    shutil.copyfile(ASTRONAUT_PNG, root / "astronaut.png")
    shutil.copyfile(ASTRONAUT_PTS, root / "astronaut.pts")
    (root / "more").mkdir()
    Image.open(ASTRONAUT_PNG).convert("RGB").save(root / "more" / "astronaut_copy.ppm")
    (root / "more" / "astronaut_copy.pts").write_bytes(_hand_edited(ASTRONAUT_PTS.read_text()))
    shutil.copyfile(DLIB_TEST_XML, root / "voc.xml")
    rng = np.random.default_rng(0)
    text = DLIB_TEST_XML.read_text(encoding="iso-8859-1")
    for name, width, height in _xml_images(text):
        pixels = rng.integers(0, 256, (int(height) // 8, int(width) // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((int(width), int(height))).save(root / Path(name).with_suffix(".png"))
    return root


def _xml_images(text: str) -> list[tuple[str, str, str]]:
    import re

    return re.findall(r"<image file='([^']+)' width='(\d+)' height='(\d+)'", text)


# ------------------------------------------------------------------------------------ lenient readers


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda text: "\ufeff" + text, id="byte-order mark"),
        pytest.param(lambda text: text.replace("\n", "\r\n"), id="CRLF"),
        pytest.param(lambda text: text.replace("{\n", "{\n\n").replace("}", "\n}\n\n\n"), id="blank lines"),
        pytest.param(lambda text: text.replace("\n", " \t \n"), id="trailing spaces"),
    ],
)
def test_each_hand_edit_is_tolerated(tmp_path, edit):
    path = tmp_path / "edited.pts"
    path.write_bytes(edit(ASTRONAUT_PTS.read_text()).encode("utf-8"))
    assert path.read_bytes() != ASTRONAUT_PTS.read_bytes()
    np.testing.assert_array_equal(read_pts(path), read_pts(ASTRONAUT_PTS))


def test_hand_edited_pts_reads_like_the_original(tmp_path):
    edited = tmp_path / "edited.pts"
    edited.write_bytes(_hand_edited(ASTRONAUT_PTS.read_text()))
    np.testing.assert_array_equal(read_pts(edited), read_pts(ASTRONAUT_PTS))


def test_ljson_v3_points_are_y_then_x(tmp_path):
    points = read_pts(ASTRONAUT_PTS)
    path = tmp_path / "astronaut.ljson"
    groups = {"eyes": {"landmarks": {"points": [[1, 2]] * 12}, "labels": []},
              "face": {"landmarks": {"points": points[:, ::-1].tolist(), "connectivity": []}, "labels": []}}
    path.write_text(json.dumps({"version": 3, "groups": groups}))
    np.testing.assert_array_equal(read_ljson(path, 68), points)
    with pytest.raises(DataFormatError, match=r"astronaut.ljson: needs exactly one group of 98 points; groups and "
                                              r"sizes: 'eyes': 12, 'face': 68"):
        read_ljson(path, 98)


def test_ljson_null_point_is_named(tmp_path):
    points = read_pts(ASTRONAUT_PTS)[:, ::-1].tolist()
    points[5] = [None, None]
    path = tmp_path / "a.ljson"
    path.write_text(json.dumps({"version": 2, "labels": [], "landmarks": {"points": points}}))
    with pytest.raises(DataFormatError, match=r"a.ljson: point\(s\) \[5\] are null"):
        read_ljson(path, 68)


def test_images_are_found_by_stem_in_any_pillow_format(tmp_path):
    folder = read_annotated_folder(_own_folder(tmp_path / "own"), 68)
    by_id = {face.face_id: face for face in folder.faces}
    assert by_id["more/astronaut_copy"].image_path.name == "astronaut_copy.ppm"
    assert by_id["astronaut"].image_path.name == "astronaut.png"
    assert by_id["voc/2008_002470.jpg#0"].image_path.name == "2008_002470.png"  # the XML says .jpg
    assert len(folder.faces) == 2 + 25
    assert folder.box_source_counts() == {"annotation": 25, "landmarks": 2}


def test_a_missing_image_is_missing_under_every_extension(tmp_path):
    root = tmp_path / "own"
    root.mkdir()
    shutil.copyfile(ASTRONAUT_PTS, root / "astronaut.pts")
    shutil.copyfile(ASTRONAUT_PTS, root / "astronaut.jpg.bak")  # not an image extension: ignored
    with pytest.raises(DataFormatError) as info:
        read_annotated_folder(root, 68)
    text = str(info.value)
    assert "1 of 1 image files" in text and f"{root / 'astronaut.*'}" in text
    assert "any extension Pillow reads: " in text and " .png " in text and " .ppm " in text and " .tiff " in text


# ------------------------------------------------------------------------------------ custom sets


def test_custom_set_goes_through_prepare_evaluate_and_a_report_row(tmp_path):
    raw = _own_folder(tmp_path / "own")
    paths = prepare_custom(raw, tmp_path / "prepared", "68", settings=None)
    assert sorted(paths) == ["test"]
    split = load_split(tmp_path / "prepared", "test")
    assert len(split) == 27 and split.meta["custom"] is True and split.synthetic is False
    assert split.meta["dataset"] == "custom-own" and split.meta["source"] == str(raw.resolve())
    assert split.meta["box_sources"] == {"annotation": 25, "landmarks": 2}
    index = list(split.face_ids).index("astronaut")
    np.testing.assert_allclose(split.original_landmarks[index], read_pts(ASTRONAUT_PTS), atol=1e-4)
    copy = list(split.face_ids).index("more/astronaut_copy")
    np.testing.assert_array_equal(split.images[copy], split.images[index])  # .ppm decodes to the same pixels

    run = fixed_point_run(tmp_path / "run", tmp_path / "prepared", "custom-own", 0.5, 0.5)
    metrics = evaluate(run, tmp_path / "prepared", out=tmp_path / "eval", activation_maps=0, track=False)
    assert metrics["synthetic"] is False and metrics["custom"] is True and metrics["partial"] is None
    assert metrics["normalisers"] == ["inter_pupil", "inter_ocular"] and metrics["subsets"]["full"]["n"] == 27
    # the constant prediction is the model crop's centre = the box centre, in original pixels
    gt = split.original_landmarks.astype(np.float64)
    centres = np.stack([(split.boxes[:, 0] + split.boxes[:, 2]) / 2, (split.boxes[:, 1] + split.boxes[:, 3]) / 2], 1)
    error = np.linalg.norm(gt - centres[:, None, :], axis=-1).mean(axis=1)
    inter_ocular = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    assert metrics["subsets"]["full"]["nme"]["inter_ocular"] == pytest.approx(100 * np.mean(error / inter_ocular),
                                                                               rel=1e-4)
    rows = metrics_rows(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    assert [row["subset"] for row in rows] == ["full"] and rows[0]["n"] == 27
    assert rows[0]["data"] == f"custom set ({raw.resolve()})"
    assert "custom set" in render_rows_markdown(rows)


def test_custom_train_split_trains_unchanged(tmp_path, single_thread):
    from ccdn.train import train

    from conftest import tiny_config

    raw = _own_folder(tmp_path / "own")
    paths = prepare_custom(raw, tmp_path / "prepared", "68", train_fraction=0.75, settings=None)
    assert sorted(paths) == ["test", "train"]
    n_train, n_test = len(load_split(paths["train"].parent, "train")), len(load_split(paths["test"].parent, "test"))
    assert (n_train, n_test) == (20, 7)
    config = tiny_config(tmp_path / "prepared", "model.name=test/tiny", "data.dataset=custom-own", "optim.epochs=1")
    result = train(config, tmp_path / "run", progress=False)
    assert (result.run_dir / "model.pt").is_file() and np.isfinite(result.history[-1]["val_nme"])
    assert result.history[-1]["val_norm"] == "inter_pupil"  # the 68-point scheme's first, as evaluate scores it


def test_a_synthetic_folder_stays_synthetic_as_a_custom_set(tmp_path):
    raw = tmp_path / "own"
    raw.mkdir()
    shutil.copyfile(ASTRONAUT_PNG, raw / "astronaut.png")
    shutil.copyfile(ASTRONAUT_PTS, raw / "astronaut.pts")
    (raw / "SYNTHETIC.json").write_text(json.dumps({"synthetic": True, "seed": 0}))
    prepare_custom(raw, tmp_path / "prepared", "68", settings=None)
    split = load_split(tmp_path / "prepared", "test")
    assert split.synthetic is True and split.meta["custom"] is True


def test_split_is_seeded_and_disjoint():
    faces = list(range(10))
    first, second = split_faces(faces, 0.3), split_faces(faces, 0.3)
    assert first == second and len(first["train"]) == 3 and sorted(first["train"] + first["test"]) == faces


def test_cli_custom_with_a_boxes_file(tmp_path, capsys):
    raw = tmp_path / "own"
    raw.mkdir()
    shutil.copyfile(ASTRONAUT_PNG, raw / "astronaut.png")
    shutil.copyfile(ASTRONAUT_PTS, raw / "astronaut.pts")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"astronaut": ASTRONAUT_BOX}))
    out = tmp_path / "prepared"
    assert main(["prepare", "custom", "--raw", str(raw), "--scheme", "68", "--boxes", str(boxes), "--out", str(out),
                 "cache_size=32"]) == 0
    split = load_split(out, "test")
    np.testing.assert_allclose(split.boxes[0], ASTRONAUT_BOX)
    assert split.meta["box_sources"] == {"file": 1} and split.meta["boxes_file"] == str(boxes.resolve())
    boxes.write_text(json.dumps({"astronaut": ASTRONAUT_BOX, "astronot": ASTRONAUT_BOX}))
    assert main(["prepare", "custom", "--raw", str(raw), "--scheme", "68", "--boxes", str(boxes),
                 "--out", str(tmp_path / "other")]) == 2
    assert "1 box entry name no face of the set: ['astronot']" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no annotations", "no annotation files (.pts, .ljson, .xml) in this folder or below"),
        ("missing image", "1 of 1 image files referenced by the annotations are missing"),
        ("wrong scheme", "astronaut.pts:2: n_points is 68, expected 98"),
        ("count mismatch", "astronaut.pts:71: count mismatch: n_points is 68 but the body between '{' and '}' has 67"),
    ],
)
def test_bad_custom_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, case, message):
    raw = tmp_path / "own"
    raw.mkdir()
    (raw / "notes.txt").write_text("not an annotation")
    if case != "no annotations":
        shutil.copyfile(ASTRONAUT_PTS, raw / "astronaut.pts")
    if case in ("wrong scheme", "count mismatch"):
        shutil.copyfile(ASTRONAUT_PNG, raw / "astronaut.png")
    if case == "count mismatch":
        lines = ASTRONAUT_PTS.read_text().splitlines()
        (raw / "astronaut.pts").write_text("\n".join(lines[:-2] + ["}"]) + "\n")
    scheme = "98" if case == "wrong scheme" else "68"
    out = tmp_path / "prepared"
    assert main(["prepare", "custom", "--raw", str(raw), "--scheme", scheme, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(raw) in err and "Traceback" not in err
    assert not out.exists()


# ----------------------------------------------------------------------------------- partial 300W


def _partial_300w(root: Path) -> None:
    """Two of 300W's six folders, each with the real astronaut under a real-style name."""
    points = read_pts(ASTRONAUT_PTS)
    tight = np.array([*points.min(axis=0), *points.max(axis=0)])
    for folder, stem in {"ibug": "image_092 _01", "helen/testset": "296814969_3"}.items():
        (root / folder).mkdir(parents=True)
        shutil.copyfile(ASTRONAUT_PNG, root / folder / f"{stem}.png")
        shutil.copyfile(ASTRONAUT_PTS, root / folder / f"{stem}.pts")
        entries = [(f"{stem}.png", ASTRONAUT_BOX, tight)]
        if folder == "ibug":
            entries.append(("image_093.jpg", ASTRONAUT_BOX, tight))
        w300.write_bounding_boxes(w300.box_file(root, folder), entries)
    shutil.copyfile(ASTRONAUT_PTS, root / "ibug" / "image_093.pts")  # annotation whose image is absent


def test_partial_300w_is_labelled_partial_and_never_synthetic(tmp_path):
    raw = tmp_path / "raw"
    _partial_300w(raw)
    routes = r"300W folder not found.*ccdn prepare 300w --partial.*ccdn prepare custom"
    with pytest.raises(DataFormatError, match=routes):
        read_dataset("300w", raw)
    paths = prepare_dataset("300w", raw, tmp_path / "prepared", {"cache_size": 32}, partial=True)
    assert sorted(paths) == ["test"]  # no training folder present
    split = load_split(tmp_path / "prepared", "test")
    assert split.meta["partial"] == {"n": 2, "of": 689} and split.synthetic is False
    assert sorted(map(str, split.face_ids)) == ["helen/testset/296814969_3", "ibug/image_092 _01"]
    run = fixed_point_run(tmp_path / "run", tmp_path / "prepared", "300w", 0.5, 0.5)
    evaluate(run, tmp_path / "prepared", out=tmp_path / "eval", activation_maps=0, track=False)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["partial"] == {"n": 2, "of": 689} and metrics["synthetic"] is False
    assert data_label(metrics) == "partial: 2 of 689 faces"
    assert {row["subset"]: row["n"] for row in metrics_rows(metrics)} == {"full": 2, "common": 1, "challenging": 1}


def test_without_partial_the_count_error_names_both_routes(tmp_path, capsys):
    raw = tmp_path / "raw"
    _partial_300w(raw)
    for folder in w300.FOLDERS:
        if not (raw / folder).exists():
            shutil.copytree(raw / "ibug", raw / folder)
            shutil.copyfile(w300.box_file(raw, "ibug"), w300.box_file(raw, folder))
    (raw / "ibug" / "image_093.pts").unlink()
    for folder in w300.FOLDERS:
        (raw / folder / "image_093.pts").unlink(missing_ok=True)
    assert main(["prepare", "300w", "--raw", str(raw), "--out", str(tmp_path / "prepared")]) == 2
    err = capsys.readouterr().err
    assert "does not have the standard split sizes" in err and "ccdn prepare 300w --partial" in err
    assert "ccdn prepare custom --raw DIR --scheme N" in err and not (tmp_path / "prepared").exists()


def test_partial_wflw_leaves_out_faces_without_images(tmp_path, capsys):
    from ccdn.data.synth import synthesize

    raw = tmp_path / "wflw"
    synthesize("wflw", raw, seed=0, n_train=4, n_test=4)
    (raw / "SYNTHETIC.json").unlink()  # stands for a real release with some images not downloaded
    for hidden in raw.glob(".ccdn-synth*"):
        shutil.rmtree(hidden) if hidden.is_dir() else hidden.unlink()
    missing = sorted((raw / "WFLW_images").rglob("*test*.jpg"))[0]
    missing.unlink()
    with pytest.raises(DataFormatError, match="1 of 8 image files referenced by the annotations are missing"):
        prepare_dataset("wflw", raw, tmp_path / "prepared", {"cache_size": 32})
    prepare_dataset("wflw", raw, tmp_path / "prepared", {"cache_size": 32}, partial=True)
    assert "test: 1 face(s) without an image file left out" in capsys.readouterr().err
    train, test = load_split(tmp_path / "prepared", "train"), load_split(tmp_path / "prepared", "test")
    assert train.meta["partial"] == {"n": 4, "of": 7500} and test.meta["partial"] == {"n": 3, "of": 2500}
    assert not train.synthetic and not test.synthetic
