"""dlib ``imglab`` XML annotations (``<image file=...><box top left width height><part name x y/>``).

The only real 68-point annotations we may ship (``tests/data/dlib_examples_faces``) come in this
format, without their images, so the reader does not require the images to exist: ``image_path``
points where the image would be (relative names are resolved against the XML's folder). Points are
dlib's 0-based integer pixel coordinates in the iBUG 300-W order; boxes become ``x1, y1, x2, y2``
with ``x2 = left + width``. Parsed with expat so every error can name its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from ccdn.data.formats.common import format_error
from ccdn.data.records import RawFace

__all__ = ["read_dlib_xml"]

_FIX = "fix or re-export the file with dlib's imglab (each <box> needs all its <part> elements)"


@dataclass
class _Box:
    line: int
    image: str
    rect: np.ndarray
    parts: dict[int, tuple[float, float]] = field(default_factory=dict)


class _Collector:
    """expat callbacks that gather boxes and their parts, with the line each came from."""

    def __init__(self, path: Path, parser: expat.XMLParserType, num_points: int) -> None:
        self.path, self.parser, self.num_points = path, parser, num_points
        self.image: str | None = None
        self.box: _Box | None = None
        self.boxes: list[_Box] = []

    def _number(self, attrs: dict[str, str], key: str, tag: str) -> float:
        if key not in attrs:
            raise format_error(self.path, f"<{tag}> has no {key!r} attribute", _FIX, line=self.parser.CurrentLineNumber)
        try:
            return float(attrs[key])
        except ValueError as exc:
            raise format_error(
                self.path,
                f"<{tag}> attribute {key}={attrs[key]!r} is not a number",
                _FIX,
                line=self.parser.CurrentLineNumber,
            ) from exc

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        line = self.parser.CurrentLineNumber
        if tag == "image":
            if "file" not in attrs:
                raise format_error(self.path, "<image> has no 'file' attribute", _FIX, line=line)
            self.image = attrs["file"]
        elif tag == "box":
            if self.image is None:
                raise format_error(self.path, "<box> outside an <image>", _FIX, line=line)
            left, top = self._number(attrs, "left", tag), self._number(attrs, "top", tag)
            width, height = self._number(attrs, "width", tag), self._number(attrs, "height", tag)
            self.box = _Box(line, self.image, np.array([left, top, left + width, top + height], dtype=np.float64))
        elif tag == "part":
            if self.box is None:
                raise format_error(self.path, "<part> outside a <box>", _FIX, line=line)
            name = attrs.get("name", "")
            if not name.isdigit() or int(name) >= self.num_points:
                problem = f"part name {name!r} is not an index 0..{self.num_points - 1}"
                raise format_error(self.path, problem, _FIX, line=line)
            if int(name) in self.box.parts:
                raise format_error(self.path, f"part {name!r} appears twice in this box", _FIX, line=line)
            self.box.parts[int(name)] = (self._number(attrs, "x", tag), self._number(attrs, "y", tag))

    def end(self, tag: str) -> None:
        if tag == "box" and self.box is not None:
            if len(self.box.parts) != self.num_points:
                missing = sorted(set(range(self.num_points)) - set(self.box.parts))
                raise format_error(
                    self.path,
                    f"box has {len(self.box.parts)} parts, expected {self.num_points} (missing {missing[:5]})",
                    _FIX,
                    line=self.box.line,
                )
            self.boxes.append(self.box)
            self.box = None
        elif tag == "image":
            self.image = None


def read_dlib_xml(path: Path, num_points: int = 68) -> list[RawFace]:
    """Every annotated box of a dlib imglab XML file as a :class:`RawFace` (subset ``full``)."""
    path = Path(path)
    if not path.is_file():
        raise format_error(path, "file not found", "check the path")
    parser = expat.ParserCreate()
    collector = _Collector(path, parser, num_points)
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    try:
        with open(path, "rb") as handle:
            parser.ParseFile(handle)
    except expat.ExpatError as exc:
        raise format_error(path, f"malformed XML ({exc})", _FIX, line=exc.lineno) from exc
    faces = []
    per_image: dict[str, int] = {}
    for box in collector.boxes:
        k = per_image.get(box.image, 0)
        per_image[box.image] = k + 1
        faces.append(
            RawFace(
                face_id=f"{box.image}#{k}",
                image_path=path.parent / box.image,
                landmarks=np.array([box.parts[i] for i in range(num_points)], dtype=np.float64),
                box=box.rect,
                occluded=np.zeros(num_points, dtype=bool),
                subsets=("full",),
            )
        )
    return faces
