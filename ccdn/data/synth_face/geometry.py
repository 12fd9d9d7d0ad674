"""The face model: parameters, the frontal template curves, the ellipsoid head and its projection.

Every feature (jaw line, brows, eyelids, pupils, nose, lips) is one parametric curve in a frontal
*template plane*; each scheme's points are samples of those curves (so the schemes' mirror
permutations hold exactly). The plane is wrapped onto the front of an ellipsoid head, posed with
yaw/pitch/roll and projected orthographically. Coordinates: see :mod:`ccdn.data.synth_face`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np


SCHEME_NAMES = ("68", "98", "29", "19")
CONDITIONS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")  # = WFLW's six attributes
HEAD_AXES = np.array([1.1, 1.4, 1.0])  # ellipsoid semi-axes (x, y, z), template units
VISIBLE_NORMAL_Z = 0.08  # a point counts as self-occluded when its surface turns further away than this


@dataclass(frozen=True)
class Conditions:
    """The hard factors of one face (the WFLW attribute set; True = the hard version)."""

    pose: bool = False
    expression: bool = False
    illumination: bool = False
    makeup: bool = False
    occlusion: bool = False
    blur: bool = False

    def flags(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in CONDITIONS}


@dataclass(frozen=True)
class FaceShape:
    """Identity and expression, in template units (face half-width about 0.85)."""

    jaw_half_width: float = 0.86
    jaw_top: float = -0.04
    jaw_depth: float = 1.06
    jaw_power: float = 2.5
    forehead: float = 0.95
    eye_y: float = -0.12
    eye_inner: float = 0.17
    eye_width: float = 0.36
    eye_upper: float = 0.085
    eye_lower: float = 0.06
    eye_tilt: float = 0.015
    brow_gap: float = 0.23
    brow_arch: float = 0.05
    brow_thickness: float = 0.075
    brow_raise: tuple[float, float] = (0.0, 0.0)  # (image-left, image-right)
    nose_tip: float = 0.34
    nose_half_width: float = 0.14
    mouth_y: float = 0.64
    mouth_half_width: float = 0.33
    lip_upper: float = 0.06
    lip_lower: float = 0.07
    mouth_open: float = 0.0
    smile: float = 0.0


@dataclass(frozen=True)
class Occluder:
    """One occluding primitive in image pixels: a rotated ellipse or rectangle with a flat colour
    (optionally striped); ``alpha`` < 1 lets the face show through (tinted glasses)."""

    kind: str
    centre: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    colour: tuple[float, float, float]
    stripes: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude, frequency (1/px), phase
    alpha: float = 1.0

    def covers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the points ``(x, y)`` (image pixels) inside this primitive."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.centre[0], y - self.centre[1]
        u = (cos * dx + sin * dy) / self.radii[0]
        v = (-sin * dx + cos * dy) / self.radii[1]
        if self.kind == "ellipse":
            return u * u + v * v <= 1.0
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)

    def mirrored(self, width: int) -> Occluder:
        return replace(self, centre=(width - 1 - self.centre[0], self.centre[1]), angle=-self.angle)


@dataclass(frozen=True)
class FaceParams:
    """Everything that determines one rendered face (so rendering itself is deterministic)."""

    width: int
    height: int
    centre: tuple[float, float]
    scale: float  # pixels per template unit
    yaw: float  # degrees
    pitch: float
    roll: float
    shape: FaceShape
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    clutter: tuple[tuple[str, tuple[float, float, float, float], tuple[float, float, float]], ...]
    light: tuple[float, float, float]
    ambient: float
    diffuse: float
    gradient: tuple[float, float, float]  # multiplicative image gradient: strength, direction (rad), offset
    tint: tuple[float, float, float]
    makeup: tuple[float, float, float] | None
    occluders: tuple[Occluder, ...]
    blur: float  # Gaussian radius in pixels
    noise: float  # pixel noise sigma (0..255 scale)
    noise_seed: int
    conditions: Conditions = field(default_factory=Conditions)


@dataclass
class RenderedFace:
    """A rendered image and its exact landmarks per scheme (0-based pixels)."""

    image: np.ndarray
    landmarks: dict[str, np.ndarray]
    self_occluded: dict[str, np.ndarray]
    object_occluded: dict[str, np.ndarray]
    params: FaceParams

    def occluded(self, scheme: str) -> np.ndarray:
        """Points hidden by the face itself (turned away) or by an occluder."""
        return self.self_occluded[scheme] | self.object_occluded[scheme]

    def tight_box(self, scheme: str = "68") -> np.ndarray:
        points = self.landmarks[scheme]
        return np.array([*points.min(axis=0), *points.max(axis=0)], dtype=np.float64)


# ----------------------------------------------------------------------------------- template


class FaceTemplate:
    """The feature curves of one :class:`FaceShape` in the template plane (arrays in, (n, 2) out)."""

    def __init__(self, shape: FaceShape) -> None:
        self.s = shape

    # jaw: u = 0 at the image-left end (level with the eyes), 0.5 at the chin, 1 at the image right
    def jaw(self, u: np.ndarray) -> np.ndarray:
        s = self.s
        theta = math.pi * (1.0 - np.asarray(u, dtype=np.float64))
        power = 2.0 / s.jaw_power
        cos, sin = np.cos(theta), np.sin(theta)
        x = s.jaw_half_width * np.sign(cos) * np.abs(cos) ** power
        y = s.jaw_top + self.jaw_depth * np.abs(sin) ** power
        return np.stack([x, y], axis=-1)

    @property
    def jaw_depth(self) -> float:
        return self.s.jaw_depth + 0.5 * self.s.mouth_open

    # brows: t = 0 at the outer end, 1 at the inner end
    def _brow_ends(self) -> tuple[float, float]:
        s = self.s
        return s.eye_inner + s.eye_width + 0.06, s.eye_inner - 0.02

    def brow(self, side: int, t: np.ndarray, edge: str) -> np.ndarray:
        s = self.s
        t = np.asarray(t, dtype=np.float64)
        outer, inner = self._brow_ends()
        x = side * (outer + (inner - outer) * t)
        lift = s.brow_raise[0] if side < 0 else s.brow_raise[1]
        base = s.eye_y - s.brow_gap - lift - s.brow_arch * np.sin(math.pi * (0.1 + 0.8 * t)) + 0.03 * (1.0 - t)
        half = 0.5 * s.brow_thickness * (0.3 + 0.7 * t)
        offset = {"upper": -half, "lower": half, "mid": 0.0 * half}[edge]
        return np.stack([x, base + offset], axis=-1)

    # eyes: t = 0 at the outer corner, 1 at the inner corner
    def _eye_centre_y(self, t: np.ndarray) -> np.ndarray:
        return self.s.eye_y - self.s.eye_tilt * (1.0 - t)

    def _eye_open(self) -> float:
        return max(0.35, 1.0 - 2.5 * max(self.s.smile, 0.0))  # smiling squints

    def eye(self, side: int, t: np.ndarray, lid: str = "upper") -> np.ndarray:
        s = self.s
        t = np.asarray(t, dtype=np.float64)
        outer = s.eye_inner + s.eye_width
        x = side * (outer + (s.eye_inner - outer) * t)
        bump = np.sin(math.pi * np.clip(t, 0.0, 1.0))
        if lid == "upper":
            y = self._eye_centre_y(t) - s.eye_upper * self._eye_open() * bump**0.8
        else:
            y = self._eye_centre_y(t) + s.eye_lower * self._eye_open() * bump**0.9
        return np.stack([x, y], axis=-1)

    def pupil(self, side: int) -> np.ndarray:
        upper, lower = self.eye(side, np.array([0.5]), "upper")[0], self.eye(side, np.array([0.5]), "lower")[0]
        return np.array([upper[0], 0.5 * (upper[1] + lower[1])])

    def iris_radius(self) -> float:
        return 0.55 * (self.s.eye_upper + self.s.eye_lower)

    # nose: bridge t = 0 between the eyes, 1 at the tip; base t = 0 image-left ala .. 1 image-right
    def bridge(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        top = self.s.eye_y - 0.01
        return np.stack([np.zeros_like(t), top + (self.s.nose_tip - top) * t], axis=-1)

    def nose_base(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        w = self.s.nose_half_width
        x = -w + 2.0 * w * t
        y = self.s.nose_tip + 0.05 + 0.035 * (1.0 - (2.0 * t - 1.0) ** 2)
        return np.stack([x, y], axis=-1)

    # lips: t = 0 image-left corner, 1 image-right corner
    def _mouth_half_width(self) -> float:
        return self.s.mouth_half_width + 0.4 * max(self.s.smile, 0.0)

    def _lip_line(self, t: np.ndarray) -> np.ndarray:
        return self.s.mouth_y - self.s.smile * (2.0 * t - 1.0) ** 2  # smiling lifts the corners

    def lip(self, part: str, t: np.ndarray) -> np.ndarray:
        s = self.s
        t = np.asarray(t, dtype=np.float64)
        if part.startswith("inner"):
            t = 0.05 + 0.9 * t  # inner corners sit just inside the outer ones
        w = self._mouth_half_width()
        x = -w + 2.0 * w * t
        bump = np.sin(math.pi * np.clip(t, 0.0, 1.0))
        line = self._lip_line(t)
        gap = 0.5 * s.mouth_open * bump
        bow = 1.0 - 0.3 * np.exp(-(((t - 0.5) / 0.07) ** 2))  # the dip of the cupid's bow
        y = {
            "inner_upper": line - gap,
            "inner_lower": line + gap,
            "outer_upper": line - gap - s.lip_upper * bump**0.6 * bow,
            "outer_lower": line + gap + s.lip_lower * bump**0.8,
        }[part]
        return np.stack([x, y], axis=-1)

    def mouth_centre(self) -> np.ndarray:
        half = np.array([0.5])
        return 0.5 * (self.lip("inner_upper", half)[0] + self.lip("inner_lower", half)[0])


def template_landmarks(shape: FaceShape) -> dict[str, np.ndarray]:
    """The landmarks of every scheme in the template plane: ``{"68": (68, 2), "98": ..., ...}``."""
    tp = FaceTemplate(shape)
    L, R = -1, 1
    third = np.array([1 / 3, 2 / 3])
    quarter = np.array([0.25, 0.5, 0.75])

    def cat(*parts: np.ndarray) -> np.ndarray:
        return np.concatenate([np.atleast_2d(p) for p in parts], axis=0)

    lips_20 = cat(
        tp.lip("outer_upper", np.linspace(0, 1, 7)),
        tp.lip("outer_lower", np.array([5, 4, 3, 2, 1]) / 6),
        tp.lip("inner_upper", np.linspace(0, 1, 5)),
        tp.lip("inner_lower", quarter[::-1]),
    )
    brow_5 = np.linspace(0, 1, 5)
    pts68 = cat(
        tp.jaw(np.linspace(0, 1, 17)),
        tp.brow(L, brow_5, "upper"),
        tp.brow(R, brow_5[::-1], "upper"),
        tp.bridge(np.linspace(0, 1, 4)),
        tp.nose_base(np.linspace(0, 1, 5)),
        tp.eye(L, np.array([0.0, *third, 1.0]), "upper"),
        tp.eye(L, third[::-1], "lower"),
        tp.eye(R, np.array([1.0, *third[::-1], 0.0]), "upper"),
        tp.eye(R, third, "lower"),
        lips_20,
    )
    brow_lower = np.array([1.0, 0.7, 0.4, 0.1])
    pts98 = cat(
        tp.jaw(np.linspace(0, 1, 33)),
        tp.brow(L, brow_5, "upper"),
        tp.brow(L, brow_lower, "lower"),
        tp.brow(R, brow_5[::-1], "upper"),
        tp.brow(R, brow_lower[::-1], "lower"),
        tp.bridge(np.linspace(0, 1, 4)),
        tp.nose_base(np.linspace(0, 1, 5)),
        tp.eye(L, np.linspace(0, 1, 5), "upper"),
        tp.eye(L, quarter[::-1], "lower"),
        tp.eye(R, np.linspace(1, 0, 5), "upper"),
        tp.eye(R, quarter, "lower"),
        lips_20,
        tp.pupil(L),
        tp.pupil(R),
    )
    zero, half, one = np.array([0.0]), np.array([0.5]), np.array([1.0])
    pts29 = cat(
        tp.brow(L, zero, "mid"), tp.brow(R, zero, "mid"), tp.brow(L, one, "mid"), tp.brow(R, one, "mid"),
        tp.brow(L, half, "upper"), tp.brow(L, half, "lower"), tp.brow(R, half, "upper"), tp.brow(R, half, "lower"),
        tp.eye(L, zero), tp.eye(R, zero), tp.eye(L, one), tp.eye(R, one),
        tp.eye(L, half, "upper"), tp.eye(L, half, "lower"), tp.eye(R, half, "upper"), tp.eye(R, half, "lower"),
        tp.pupil(L), tp.pupil(R),
        tp.nose_base(zero), tp.nose_base(one), tp.bridge(one), tp.nose_base(half),
        tp.lip("outer_upper", zero), tp.lip("outer_upper", one),
        tp.lip("outer_upper", half), tp.lip("inner_upper", half),
        tp.lip("inner_lower", half), tp.lip("outer_lower", half),
        tp.jaw(half),
    )  # fmt: skip
    pts19 = cat(
        tp.brow(L, zero, "mid"), tp.brow(L, half, "mid"), tp.brow(L, one, "mid"),
        tp.brow(R, one, "mid"), tp.brow(R, half, "mid"), tp.brow(R, zero, "mid"),
        tp.eye(L, zero), tp.pupil(L), tp.eye(L, one), tp.eye(R, one), tp.pupil(R), tp.eye(R, zero),
        tp.nose_base(zero), tp.bridge(one), tp.nose_base(one),
        tp.lip("outer_upper", zero), tp.mouth_centre(), tp.lip("outer_upper", one),
        tp.jaw(half),
    )  # fmt: skip
    return {"68": pts68, "98": pts98, "29": pts29, "19": pts19}


# ----------------------------------------------------------------------------------- geometry


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Template → camera rotation ``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (degrees)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def surface_point(xy: np.ndarray) -> np.ndarray:
    """Lift template points onto the front of the head ellipsoid: ``(n, 2) -> (n, 3)``."""
    a, b, c = HEAD_AXES
    inside = 1.0 - (xy[:, 0] / a) ** 2 - (xy[:, 1] / b) ** 2
    if np.any(inside <= 0.0):
        raise ValueError("a template point lies outside the head ellipsoid; the face shape is out of range")
    return np.column_stack([xy, c * np.sqrt(inside)])


def project(params: FaceParams, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Template points → (image pixels ``(n, 2)``, facing-the-camera mask ``(n,)``)."""
    rot = rotation(params.yaw, params.pitch, params.roll)
    points = surface_point(np.asarray(xy, dtype=np.float64))
    camera = points @ rot.T
    pixels = params.scale * camera[:, :2] + np.asarray(params.centre)
    normals = (points / HEAD_AXES**2) @ rot.T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return pixels, normals[:, 2] > VISIBLE_NORMAL_Z


def head_half_extent(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Half width and height of the posed head ellipsoid's silhouette, in template units."""
    rot = rotation(yaw, pitch, roll)
    return np.sqrt(((rot[:2, :] * HEAD_AXES) ** 2).sum(axis=1))


def mirror_params(params: FaceParams) -> FaceParams:
    """The same face seen in a mirror: rendering it gives the horizontally flipped image."""
    shape = replace(params.shape, brow_raise=params.shape.brow_raise[::-1])
    light = (-params.light[0], params.light[1], params.light[2])
    strength, direction, offset = params.gradient
    clutter = tuple(
        (kind, (params.width - 1 - box[2], box[1], params.width - 1 - box[0], box[3]), colour)
        for kind, box, colour in params.clutter
    )
    return replace(
        params,
        centre=(params.width - 1 - params.centre[0], params.centre[1]),
        yaw=-params.yaw,
        roll=-params.roll,
        shape=shape,
        light=light,
        gradient=(strength, math.pi - direction, offset),
        clutter=clutter,
        occluders=tuple(o.mirrored(params.width) for o in params.occluders),
    )


# ----------------------------------------------------------------------------------- rendering


def annotate(params: FaceParams) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Landmarks (image pixels), self-occlusion and occluder flags of every scheme — no pixels drawn."""
    landmarks, self_occ, object_occ = {}, {}, {}
    for scheme, xy in template_landmarks(params.shape).items():
        pixels, facing = project(params, xy)
        landmarks[scheme] = pixels
        self_occ[scheme] = ~facing
        covered = np.zeros(len(pixels), dtype=bool)
        for occluder in params.occluders:
            if occluder.alpha >= 0.5:
                covered |= occluder.covers(pixels[:, 0], pixels[:, 1])
        object_occ[scheme] = covered
    return landmarks, self_occ, object_occ
