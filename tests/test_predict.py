"""``ccdn predict``: landmarks in original pixels on one's own images, with a given box or a detected one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdn.cli import CCDNError, main
from ccdn.data.formats.pts import read_pts
from ccdn.face_detector import detect_faces
from ccdn.predict import read_image_boxes

from constant_model import fixed_point_run

ASTRONAUT_PNG = Path(__file__).resolve().parent / "data" / "skimage_astronaut" / "astronaut.png"
ASTRONAUT_PTS = ASTRONAUT_PNG.with_suffix(".pts")
X, Y = 0.25, 0.75  # the fixed crop position every landmark is predicted at


def _expected(box, enlarge=1.1):
    """Crop position (X, Y) in original pixels: the model crop is the square of side enlarge*max(w, h)."""
    box = np.asarray(box, dtype=np.float64)
    side = enlarge * max(box[2] - box[0], box[3] - box[1])
    centre = (box[:2] + box[2:]) / 2
    return centre + (np.array([X, Y]) - 0.5) * side


@pytest.fixture
def run_dir(tmp_path):
    return fixed_point_run(tmp_path / "run", tmp_path / "no-data", "300w", X, Y)


def test_predict_with_a_given_box(run_dir, tmp_path, capsys):
    image = tmp_path / "in" / "astronaut.png"
    image.parent.mkdir()
    shutil.copyfile(ASTRONAUT_PNG, image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "--run-dir", str(run_dir), "--box", "175,76,265,166", "--out", str(out),
                 "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert line == [f"{image}: 1 face(s) (--box) -> {out / 'astronaut.pts'}, {out / 'astronaut.json'}, "
                    f"{out / 'astronaut_overlay.png'}"]
    points = read_pts(out / "astronaut.pts")
    np.testing.assert_allclose(points, np.tile(_expected([175, 76, 265, 166]), (68, 1)), atol=1e-3)
    record = json.loads((out / "astronaut.json").read_text())
    assert record["box_source"] == "--box" and record["width"] == 512 and record["scheme"] == "68"
    np.testing.assert_allclose(record["faces"][0]["landmarks"], points, atol=1e-3)
    overlay = np.asarray(Image.open(out / "astronaut_overlay.png"))
    x, y = np.rint(points[0]).astype(int)
    assert overlay.shape == (512, 512, 3) and tuple(overlay[y, x]) == (255, 40, 40)
    assert tuple(overlay[120, 175]) == (0, 220, 0)  # left edge of the box


def test_detector_finds_the_astronaut_near_dlibs_box():
    boxes = detect_faces(np.asarray(Image.open(ASTRONAUT_PNG).convert("RGB")))
    assert boxes.shape == (1, 4)
    np.testing.assert_allclose(boxes[0], [175, 76, 265, 166], atol=12)
    truth = read_pts(ASTRONAUT_PTS)
    assert (truth.mean(axis=0) > boxes[0, :2]).all() and (truth.mean(axis=0) < boxes[0, 2:]).all()


def test_predict_with_the_detector_and_an_image_without_a_face(run_dir, tmp_path, capsys):
    blank = tmp_path / "blank.ppm"
    Image.new("RGB", (200, 160), (128, 128, 128)).save(blank)
    out = tmp_path / "out"
    code = main(["predict", str(ASTRONAUT_PNG), str(blank), "--run-dir", str(run_dir), "--out", str(out),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"{ASTRONAUT_PNG}: 1 face(s) (detector) -> ")
    assert lines[1] == f"{blank}: no face found; nothing written (give its box with --box or --boxes)"
    assert "1 of 2 image(s) without a face" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut.pts", "astronaut_overlay.png"]
    record = json.loads((out / "astronaut.json").read_text())
    box = record["faces"][0]["box"]
    np.testing.assert_allclose(read_pts(out / "astronaut.pts"), np.tile(_expected(box), (68, 1)), atol=1e-3)


def test_boxes_file_with_two_faces_writes_numbered_pts(run_dir, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    two = [[175, 76, 265, 166], [300, 200, 340, 240]]
    boxes.write_text(json.dumps({"astronaut.png": two}))
    out = tmp_path / "out"
    assert main(["predict", str(ASTRONAUT_PNG), "--run-dir", str(run_dir), "--boxes", str(boxes), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "2 face(s) (--boxes)" in capsys.readouterr().out
    for k, box in enumerate(two, start=1):
        np.testing.assert_allclose(read_pts(out / f"astronaut_{k:02d}.pts"), np.tile(_expected(box), (68, 1)),
                                   atol=1e-3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--box", "10,10,5,20"], "is not a box x1, y1, x2, y2 with x2 > x1 and y2 > y1"),
        (["--box", "1,2,three,4"], "expected four numbers x1,y1,x2,y2"),
    ],
)
def test_bad_box_is_refused(run_dir, tmp_path, capsys, args, message):
    code = main(["predict", str(ASTRONAUT_PNG), "--run-dir", str(run_dir), "--out", str(tmp_path / "out"), *args])
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_missing_image_and_bad_boxes_file_are_clear_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "nope.jpg"), "--run-dir", str(run_dir), "--out", str(out)]) == 2
    assert f"image file(s) not found: {tmp_path / 'nope.jpg'}" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(ASTRONAUT_PNG), str(broken), "--run-dir", str(run_dir), "--out", str(out)]) == 2
    assert f"{broken}: not an image Pillow can read" in capsys.readouterr().err
    bad = tmp_path / "boxes.json"
    bad.write_text(json.dumps({"astronaut.png": [1, 2, 3]}))
    with pytest.raises(CCDNError, match=r"boxes.json: entry 'astronaut.png': \[1.0, 2.0, 3.0\] is not a box"):
        read_image_boxes(bad)
    assert not out.exists()
