"""A parametric 3-D face that renders itself with exact landmarks in all four schemes (68/98/29/19).

Why this shape: the synthetic sets must exercise the real parsers *and* be learnable by a small
CNN, with landmarks that mean what each scheme says (so the schemes' mirror permutations hold
exactly). So every feature — jaw line, brows, eyelids, pupils, nose, lips — is one parametric curve
in a frontal *template plane*; each scheme's points are samples of those curves, and the texture
that paints the face is drawn from the very same curves. The template plane is wrapped onto the
front of an ellipsoid head, posed with yaw/pitch/roll and ray-cast per pixel (orthographic), which
gives true self-occlusion and Lambertian shading for free. Landmark visibility = the surface faces
the camera; occluders (ellipses, bars, glasses) add per-point occlusion flags from the same masks
that paint them.

Coordinates: template ``x`` grows to the image right, ``y`` downwards, ``z`` towards the camera;
"side" ``-1`` is the image-left feature of an upright frontal face (the ``l`` of
``ccdn.data.schemes``). Image coordinates put pixel ``i``'s centre at ``i`` (0-based), as the
annotations do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CONDITIONS",
    "SCHEME_NAMES",
    "Conditions",
    "FaceShape",
    "Occluder",
    "FaceParams",
    "RenderedFace",
    "sample_shape",
    "sample_params",
    "template_landmarks",
    "project",
    "annotate",
    "render_face",
    "mirror_params",
]

SCHEME_NAMES = ("68", "98", "29", "19")
CONDITIONS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")  # = WFLW's six attributes
HEAD_AXES = np.array([1.1, 1.4, 1.0])  # ellipsoid semi-axes (x, y, z), template units
SUPERSAMPLE = 2
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


class _Template:
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
    tp = _Template(shape)
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


# ----------------------------------------------------------------------------------- sampling


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def sample_shape(rng: np.random.Generator, expression: bool) -> FaceShape:
    """A random identity with a mild expression, or an exaggerated one when ``expression``."""
    eye_y = _u(rng, -0.16, -0.08)
    if expression:
        kind = rng.integers(4)  # 0 open mouth, 1 big smile, 2 surprise (open + brows), 3 one raised brow + frown
        mouth_open = _u(rng, 0.14, 0.26) if kind in (0, 2) else _u(rng, 0.0, 0.04)
        smile = _u(rng, 0.05, 0.09) if kind == 1 else (_u(rng, -0.05, -0.03) if kind == 3 else _u(rng, -0.01, 0.02))
        lift = _u(rng, 0.06, 0.11)
        brow_raise = (0.0, 0.0)
        if kind == 2:
            brow_raise = (lift, lift)
        elif kind == 3:
            brow_raise = (lift, 0.0) if rng.random() < 0.5 else (0.0, lift)
    else:
        mouth_open = _u(rng, 0.0, 0.035) if rng.random() < 0.5 else 0.0
        smile = _u(rng, -0.01, 0.025)
        brow_raise = (_u(rng, 0.0, 0.02), _u(rng, 0.0, 0.02))
    return FaceShape(
        jaw_half_width=_u(rng, 0.8, 0.9),
        jaw_top=eye_y + _u(rng, 0.05, 0.1),
        jaw_depth=_u(rng, 1.0, 1.1),
        jaw_power=_u(rng, 2.2, 2.8),
        forehead=_u(rng, 0.85, 0.95),
        eye_y=eye_y,
        eye_inner=_u(rng, 0.14, 0.2),
        eye_width=_u(rng, 0.3, 0.38),
        eye_upper=_u(rng, 0.07, 0.095),
        eye_lower=_u(rng, 0.05, 0.065),
        eye_tilt=_u(rng, 0.0, 0.03),
        brow_gap=_u(rng, 0.2, 0.25),
        brow_arch=_u(rng, 0.03, 0.06),
        brow_thickness=_u(rng, 0.06, 0.09),
        brow_raise=brow_raise,
        nose_tip=_u(rng, 0.28, 0.36),
        nose_half_width=_u(rng, 0.12, 0.16),
        mouth_y=_u(rng, 0.6, 0.67),
        mouth_half_width=_u(rng, 0.28, 0.35),
        lip_upper=_u(rng, 0.045, 0.07),
        lip_lower=_u(rng, 0.055, 0.08),
        mouth_open=mouth_open,
        smile=smile,
    )


def _colour(rng: np.random.Generator, low: float, high: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(low, high, 3))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, palette: list[list[float]]) -> tuple[float, float, float]:
    row = np.asarray(palette, dtype=np.float64)[rng.integers(len(palette))]
    return (float(row[0]), float(row[1]), float(row[2]))


def _skin(rng: np.random.Generator) -> tuple[float, float, float]:
    light, dark = np.array([0.96, 0.82, 0.72]), np.array([0.42, 0.28, 0.2])
    t = rng.uniform(0.0, 1.0)
    tone = light + (dark - light) * t + rng.normal(0.0, 0.02, 3)
    return tuple(float(v) for v in np.clip(tone, 0.0, 1.0))  # type: ignore[return-value]


def _pose(rng: np.random.Generator, hard: bool, max_yaw: float) -> tuple[float, float, float]:
    if hard:
        yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(35.0, max_yaw))
        return yaw, _u(rng, -28.0, 28.0), _u(rng, -35.0, 35.0)
    return (
        float(np.clip(rng.normal(0.0, 10.0), -25.0, 25.0)),
        float(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0)),
        float(np.clip(rng.normal(0.0, 6.0), -15.0, 15.0)),
    )


def sample_params(
    rng: np.random.Generator,
    conditions: Conditions,
    size_range: tuple[int, int] = (176, 240),
    max_yaw: float = 70.0,
    heavy_occlusion: bool = False,
) -> FaceParams:
    """Draw one face: the hard version of every factor whose condition is set, a mild one otherwise."""
    width, height = (int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
    yaw, pitch, roll = _pose(rng, conditions.pose, max_yaw)
    shape = sample_shape(rng, conditions.expression)
    scale = _u(rng, 0.2, 0.26) * min(width, height)
    half = head_half_extent(yaw, pitch, roll) * scale
    centre = tuple(
        float(rng.uniform(min(h + 2.0, n / 2), max(n - h - 3.0, n / 2))) for h, n in zip(half, (width, height))
    )
    skin = _skin(rng)
    if conditions.illumination:
        side = rng.choice([-1.0, 1.0])
        light = (float(side * rng.uniform(1.2, 3.0)), _u(rng, -1.2, 1.2), _u(rng, 0.2, 0.6))
        ambient, diffuse = _u(rng, 0.08, 0.2), _u(rng, 0.9, 1.2)
        gradient = (_u(rng, 0.45, 0.75), _u(rng, 0.0, 2 * math.pi), _u(rng, -0.2, 0.2))
        tint = _colour(rng, 0.55, 1.0)
    else:
        light = (_u(rng, -0.5, 0.5), _u(rng, -0.7, 0.1), 1.0)
        ambient, diffuse = _u(rng, 0.4, 0.55), _u(rng, 0.45, 0.6)
        gradient = (_u(rng, 0.0, 0.15), _u(rng, 0.0, 2 * math.pi), 0.0)
        tint = _colour(rng, 0.92, 1.0)
    makeup = None
    if conditions.makeup:
        palette = np.array([[0.55, 0.2, 0.65], [0.2, 0.35, 0.8], [0.15, 0.6, 0.45], [0.75, 0.45, 0.15]])
        makeup = tuple(float(v) for v in palette[rng.integers(len(palette))])
        lips = _pick(rng, [[0.8, 0.05, 0.2], [0.55, 0.02, 0.35], [0.9, 0.3, 0.45]])
    else:
        lips = tuple(float(v) for v in 0.5 * np.array(skin) + 0.5 * np.array([0.72, 0.32, 0.32]))
    params = FaceParams(
        width=width,
        height=height,
        centre=centre,  # type: ignore[arg-type]
        scale=scale,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        shape=shape,
        skin=skin,
        hair=_colour(rng, 0.03, 0.22) if rng.random() < 0.8 else (0.55, 0.42, 0.2),
        iris=_pick(rng, [[0.3, 0.17, 0.07], [0.15, 0.3, 0.5], [0.2, 0.35, 0.2]]),
        lips=lips,  # type: ignore[arg-type]
        background=(_colour(rng, 0.1, 0.9), _colour(rng, 0.1, 0.9)),
        clutter=_clutter(rng, width, height),
        light=light,  # type: ignore[arg-type]
        ambient=ambient,
        diffuse=diffuse,
        gradient=gradient,
        tint=tint,
        makeup=makeup,  # type: ignore[arg-type]
        occluders=(),
        blur=_u(rng, 1.6, 3.0) if conditions.blur else (_u(rng, 0.0, 0.6) if rng.random() < 0.5 else 0.0),
        noise=_u(rng, 1.0, 4.0),
        noise_seed=int(rng.integers(2**31)),
        conditions=conditions,
    )
    if conditions.occlusion:
        params = replace(params, occluders=_occluders(rng, params, heavy_occlusion))
    return params


def _clutter(rng: np.random.Generator, width: int, height: int) -> tuple:
    shapes = []
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(10, width / 2), rng.uniform(10, height / 2)
        kind = "ellipse" if rng.random() < 0.5 else "rectangle"
        shapes.append((kind, (float(x0), float(y0), float(x0 + w), float(y0 + h)), _colour(rng, 0.1, 0.9)))
    return tuple(shapes)


_OCCLUDER_TARGETS = ("eyes", "eye", "mouth", "lower", "side", "nose", "spot")


def _occluders(rng: np.random.Generator, params: FaceParams, heavy: bool) -> tuple[Occluder, ...]:
    """1-2 occluders (2-3 when ``heavy``) aimed at facial regions, so they really cover landmarks."""
    landmarks, _ = project(params, template_landmarks(params.shape)["68"])
    s, roll = params.scale, math.radians(params.roll)
    count = int(rng.integers(2, 4)) if heavy else int(rng.integers(1, 3))
    size = 1.3 if heavy else 1.0
    shapes: list[Occluder] = []
    for _ in range(count):
        target = _OCCLUDER_TARGETS[int(rng.integers(len(_OCCLUDER_TARGETS)))]
        colour = _colour(rng, 0.05, 0.95)
        stripes = (_u(rng, 0.0, 0.25), _u(rng, 0.05, 0.3), _u(rng, 0.0, 6.3)) if rng.random() < 0.5 else (0.0, 0.0, 0.0)
        angle = roll + _u(rng, -0.4, 0.4)
        if target == "eyes":  # sunglasses: two tinted lenses and a bridge
            tint = _colour(rng, 0.02, 0.2)
            for eye in (range(36, 42), range(42, 48)):
                centre = landmarks[list(eye)].mean(axis=0)
                lens = (0.26 * s * size, 0.17 * s * size)
                shapes.append(Occluder("ellipse", tuple(centre), lens, roll, tint, alpha=0.9))
            bridge = landmarks[[39, 42]].mean(axis=0)
            shapes.append(Occluder("rect", tuple(bridge), (0.12 * s, 0.025 * s), roll, tint, alpha=0.9))
            continue
        if target == "eye":
            idx = list(range(36, 42)) if rng.random() < 0.5 else list(range(42, 48))
            centre, radii, kind = landmarks[idx].mean(axis=0), (0.35 * s, 0.28 * s), "ellipse"
        elif target == "mouth":
            centre, radii, kind = landmarks[48:68].mean(axis=0), (0.5 * s, 0.28 * s), "ellipse"
        elif target == "lower":  # a scarf or mask over mouth and chin
            centre = 0.5 * (landmarks[33] + landmarks[8])
            radii, kind = (1.1 * s, 0.45 * s), "rect"
        elif target == "side":  # a hand over one cheek
            centre = landmarks[3 if rng.random() < 0.5 else 13] * 0.7 + landmarks[30] * 0.3
            radii, kind = (0.4 * s, 0.6 * s), "ellipse"
        elif target == "nose":
            centre, radii, kind = landmarks[27:36].mean(axis=0), (0.25 * s, 0.4 * s), "ellipse"
        else:
            centre = landmarks[int(rng.integers(68))]
            radii, kind = (0.3 * s, 0.25 * s), "ellipse" if rng.random() < 0.5 else "rect"
        jitter = rng.normal(0.0, 0.08 * s, 2)
        radii = (radii[0] * size * _u(rng, 0.85, 1.15), radii[1] * size * _u(rng, 0.85, 1.15))
        shapes.append(Occluder(kind, tuple(centre + jitter), radii, angle, colour, stripes))  # type: ignore[arg-type]
    return tuple(shapes)


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


def render_face(params: FaceParams) -> RenderedFace:
    """Render ``params`` into an image and its landmarks (all four schemes) with occlusion flags."""
    landmarks, self_occ, object_occ = annotate(params)
    return RenderedFace(_render_image(params), landmarks, self_occ, object_occ, params)


def _axes(size: int, factor: int) -> np.ndarray:
    """Sub-pixel centres along one axis in image coordinates (pixel ``i`` has its centre at ``i``)."""
    return (np.arange(size * factor) + 0.5) / factor - 0.5


def _window(xs: np.ndarray, ys: np.ndarray, centre: tuple[float, float], half: tuple[float, float]):
    """Slices of the canvas covering ``centre ± half`` (image pixels) and the sub-pixel grid there."""
    cols = np.searchsorted(xs, [centre[0] - half[0], centre[0] + half[0]])
    rows = np.searchsorted(ys, [centre[1] - half[1], centre[1] + half[1]])
    window = (slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1])))
    gx, gy = np.meshgrid(xs[window[1]], ys[window[0]])
    return window, gx, gy


def _render_image(params: FaceParams) -> np.ndarray:
    f = SUPERSAMPLE
    xs, ys = _axes(params.width, f), _axes(params.height, f)
    canvas = _background(params, f)
    _paint_head(params, canvas, xs, ys)
    for occluder in params.occluders:
        reach = max(occluder.radii) * math.sqrt(2.0) + 1.0
        window, gx, gy = _window(xs, ys, occluder.centre, (reach, reach))
        mask = occluder.covers(gx, gy)
        colour = np.broadcast_to(np.asarray(occluder.colour), (int(mask.sum()), 3))
        amplitude, frequency, phase = occluder.stripes
        if amplitude:
            dx, dy = gx[mask] - occluder.centre[0], gy[mask] - occluder.centre[1]
            across = -math.sin(occluder.angle) * dx + math.cos(occluder.angle) * dy
            stripes = 1.0 - amplitude * (0.5 + 0.5 * np.sin(frequency * across + phase))  # mirror-invariant
            colour = colour * stripes[:, None]
        region = canvas[window]
        region[mask] = (1.0 - occluder.alpha) * region[mask] + occluder.alpha * colour
    strength, direction, offset = params.gradient
    u = (xs + 0.5) / params.width - 0.5  # symmetric about the image centre, so mirroring is exact
    v = (ys + 0.5) / params.height - 0.5
    ramp = 2.0 * (math.cos(direction) * u[None, :] + math.sin(direction) * v[:, None])
    canvas *= np.clip(1.0 + strength * ramp + offset, 0.05, 2.0)[..., None]
    canvas *= np.asarray(params.tint)
    small = canvas.reshape(params.height, f, params.width, f, 3).mean(axis=(1, 3))
    image = Image.fromarray(np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if params.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(params.blur))
    array = np.asarray(image).astype(np.float64)
    if params.noise > 0.0:
        array += np.random.default_rng(params.noise_seed).normal(0.0, params.noise, array.shape)
    return np.clip(array + 0.5, 0, 255).astype(np.uint8)


def _background(params: FaceParams, f: int) -> np.ndarray:
    """Gradient, a few clutter shapes and the neck (drawn before the head, which covers it)."""
    w, h = params.width * f, params.height * f
    top, bottom = (np.asarray(c) for c in params.background)
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    rows = np.clip(255.0 * (top + (bottom - top) * ramp) + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (h, w, 3))))
    draw = ImageDraw.Draw(image)
    for kind, box, colour in params.clutter:
        corners = [(box[0] + 0.5) * f, (box[1] + 0.5) * f, (box[2] + 0.5) * f, (box[3] + 0.5) * f]
        fill = tuple(int(255 * c) for c in colour)
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(corners, fill=fill)
    rot = rotation(params.yaw, params.pitch, params.roll)
    sh = params.shape
    top = sh.jaw_top + 0.6
    neck = np.array([[-0.55, top, 0.0], [0.55, top, 0.0], [0.65, 3.5, 0.0], [-0.65, 3.5, 0.0]])
    neck_pixels = params.scale * (neck @ rot.T)[:, :2] + np.asarray(params.centre)
    fill = tuple(int(255 * 0.6 * c) for c in params.skin)
    draw.polygon([((x + 0.5) * f, (y + 0.5) * f) for x, y in neck_pixels], fill=fill)
    return np.asarray(image, dtype=np.float64) / 255.0


def _paint_head(params: FaceParams, canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Ray-cast the posed ellipsoid inside its bounding box and paint the textured, lit surface."""
    half = head_half_extent(params.yaw, params.pitch, params.roll) * params.scale + 1.0
    window, gx, gy = _window(xs, ys, params.centre, (float(half[0]), float(half[1])))
    cx, cy = params.centre
    qx, qy = (gx - cx) / params.scale, (gy - cy) / params.scale
    rot = rotation(params.yaw, params.pitch, params.roll)
    metric = rot @ np.diag(1.0 / HEAD_AXES**2) @ rot.T  # the ellipsoid in camera coordinates
    a = metric[2, 2]
    b = metric[2, 0] * qx + metric[2, 1] * qy
    c = metric[0, 0] * qx**2 + 2 * metric[0, 1] * qx * qy + metric[1, 1] * qy**2 - 1.0
    hit = b * b - a * c > 0.0
    qx, qy, b, c = qx[hit], qy[hit], b[hit], c[hit]  # only pixels that see the head from here on
    depth = (-b + np.sqrt(b * b - a * c)) / a  # the root nearer the camera
    camera = np.stack([qx, qy, depth], axis=-1)
    face = camera @ rot  # camera → template frame (rot is orthonormal)
    normal_cam = (face / HEAD_AXES**2) @ rot.T
    normal_cam /= np.linalg.norm(normal_cam, axis=-1, keepdims=True)
    albedo = _albedo(params, face[:, 0], face[:, 1], face[:, 2])
    light = np.asarray(params.light) / np.linalg.norm(params.light)
    shade = params.ambient + params.diffuse * np.clip(normal_cam @ light, 0.0, None)
    region = canvas[window]
    region[hit] = albedo * shade[:, None]


def _in_box(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Indices of the points inside ``(|x| min, |x| max, y min, y max)`` — a feature's neighbourhood."""
    ax = np.abs(x)
    return np.flatnonzero((ax >= box[0]) & (ax <= box[1]) & (y >= box[2]) & (y <= box[3]))


def _albedo(params: FaceParams, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Surface colour of template points ``(x, y, z)`` from the same curves the landmarks sample.

    Each feature is painted only inside its own small neighbourhood (``_in_box``), which keeps the
    per-face cost low; the masks inside are exact.
    """
    sh, tp = params.shape, _Template(params.shape)
    skin, hair = np.asarray(params.skin), np.asarray(params.hair)
    out = np.empty((len(x), 3))
    front = z > 0.0
    in_face = front & _inside_face(sh, tp, x, y)
    out[:] = hair
    out[front & ~in_face & (y > sh.jaw_top + 0.25)] = skin * 0.55
    out[in_face] = skin
    face_idx = np.flatnonzero(in_face)
    fx, fy = x[face_idx], y[face_idx]
    colours = out[face_idx]
    for painter in (_paint_makeup, _paint_brows, _paint_eyes, _paint_nose, _paint_mouth):
        painter(params, tp, fx, fy, colours)
    out[face_idx] = colours
    return out


def _blend(colours: np.ndarray, idx: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 1.0) -> None:
    target = idx[mask]
    colours[target] = (1.0 - alpha) * colours[target] + alpha * np.asarray(colour)


def _eye_frame(tp: _Template, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sh = tp.s
    outer = sh.eye_inner + sh.eye_width
    t = (np.abs(x) - outer) / (sh.eye_inner - outer)
    return t, _curve_y(tp, "eye_upper", 1, t), _curve_y(tp, "eye_lower", 1, t)


def _eye_box(tp: _Template, above: float = 0.0) -> tuple[float, float, float, float]:
    sh = tp.s
    top = sh.eye_y - sh.eye_tilt - sh.eye_upper - above - 0.03
    return (sh.eye_inner - 0.01, sh.eye_inner + sh.eye_width + 0.01, top, sh.eye_y + sh.eye_lower + 0.03)


def _paint_makeup(params: FaceParams, tp: _Template, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
    """Eye shadow above the upper lids and blush on the cheeks (make-up faces only)."""
    if params.makeup is None:
        return
    idx = _in_box(x, y, _eye_box(tp, above=0.1))
    t, upper, _ = _eye_frame(tp, x[idx], y[idx])
    shadow = (t >= 0) & (t <= 1) & (y[idx] < upper) & (y[idx] > upper - 0.09)
    _blend(colours, idx, shadow, np.asarray(params.makeup), 0.65)
    idx = _in_box(x, y, (0.32, 0.68, 0.18, 0.42))
    cheek = ((np.abs(x[idx]) - 0.5) / 0.17) ** 2 + ((y[idx] - 0.3) / 0.11) ** 2 <= 1.0
    _blend(colours, idx, cheek, np.array([0.9, 0.35, 0.45]), 0.35)


def _paint_brows(params: FaceParams, tp: _Template, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
    outer, inner = tp._brow_ends()
    samples = np.linspace(0.0, 1.0, 21)
    top = min(tp.brow(-1, samples, "upper")[:, 1].min(), tp.brow(1, samples, "upper")[:, 1].min())
    bottom = max(tp.brow(-1, samples, "lower")[:, 1].max(), tp.brow(1, samples, "lower")[:, 1].max())
    idx = _in_box(x, y, (inner, outer, top, bottom))
    bx, by = x[idx], y[idx]
    t = (np.abs(bx) - outer) / (inner - outer)
    side = np.where(bx < 0.0, -1, 1)
    inside = (by >= _curve_y(tp, "brow_upper", side, t)) & (by <= _curve_y(tp, "brow_lower", side, t))
    _blend(colours, idx, inside, np.asarray(params.hair) * 0.8)


def _paint_eyes(params: FaceParams, tp: _Template, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
    """Sclera, iris and pupil between the lids, and a dark upper-lid line."""
    idx = _in_box(x, y, _eye_box(tp))
    ex, ey = x[idx], y[idx]
    t, upper, lower = _eye_frame(tp, ex, ey)
    span = (t >= 0.0) & (t <= 1.0)
    opening = span & (ey > upper) & (ey < lower)
    _blend(colours, idx, opening, np.array([0.93, 0.92, 0.88]))
    radius = tp.iris_radius()
    for side in (-1, 1):
        px, py = tp.pupil(side)
        dist2 = (ex - px) ** 2 + (ey - py) ** 2
        _blend(colours, idx, opening & (dist2 < radius**2), np.asarray(params.iris))
        _blend(colours, idx, opening & (dist2 < (0.45 * radius) ** 2), np.array([0.02, 0.02, 0.02]))
    _blend(colours, idx, span & (np.abs(ey - upper) < 0.016), np.array([0.12, 0.08, 0.06]))
    _blend(colours, idx, span & (np.abs(ey - lower) < 0.01), np.asarray(params.skin) * 0.55)


def _paint_nose(params: FaceParams, tp: _Template, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
    """Bridge shading, a lighter tip, the base line through the nostril landmarks and nostrils."""
    sh, skin = tp.s, np.asarray(params.skin)
    w = sh.nose_half_width
    idx = _in_box(x, y, (0.0, w + 0.02, sh.eye_y + 0.04, sh.nose_tip + 0.11))
    nx, ny = x[idx], y[idx]
    along = ny < sh.nose_tip
    _blend(colours, idx, along & (np.abs(np.abs(nx) - 0.07) < 0.018), skin * 0.72)
    _blend(colours, idx, along & (np.abs(nx) < 0.025), np.minimum(skin * 1.12, 1.0))
    _blend(colours, idx, (nx / 0.09) ** 2 + ((ny - sh.nose_tip) / 0.06) ** 2 <= 1.0, np.minimum(skin * 1.08, 1.0))
    t = (nx + w) / (2 * w)
    base = tp.nose_base(np.clip(t, 0.0, 1.0))[..., 1]
    _blend(colours, idx, (t >= 0.0) & (t <= 1.0) & (np.abs(ny - base) < 0.014), skin * 0.45)
    for side in (-1, 1):
        nostril = ((nx - side * 0.55 * w) / 0.045) ** 2 + ((ny - base + 0.03) / 0.022) ** 2 <= 1.0
        _blend(colours, idx, nostril, skin * 0.25)


def _paint_mouth(params: FaceParams, tp: _Template, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
    """Lips between the outer and inner contours, the dark opening, and the seam of a closed mouth."""
    half_w = tp._mouth_half_width()
    samples = np.linspace(0.0, 1.0, 41)
    top = tp.lip("outer_upper", samples)[:, 1].min() - 0.01
    bottom = tp.lip("outer_lower", samples)[:, 1].max() + 0.01
    idx = _in_box(x, y, (0.0, half_w, top, bottom))
    mx, my = x[idx], y[idx]
    t = (mx + half_w) / (2 * half_w)
    lips = (my > _curve_y(tp, "outer_upper", 1, t)) & (my < _curve_y(tp, "outer_lower", 1, t))
    _blend(colours, idx, lips, np.asarray(params.lips))
    inner_t = (t - 0.05) / 0.9
    span = (inner_t >= 0.0) & (inner_t <= 1.0)
    inner_up = _curve_y(tp, "inner_upper", 1, inner_t)
    inner_lo = _curve_y(tp, "inner_lower", 1, inner_t)
    _blend(colours, idx, span & (my > inner_up) & (my < inner_lo), np.array([0.16, 0.03, 0.05]))
    _blend(colours, idx, span & (np.abs(my - 0.5 * (inner_up + inner_lo)) < 0.011), np.array([0.25, 0.06, 0.07]))


def _curve_y(tp: _Template, curve: str, side: np.ndarray | int, t: np.ndarray) -> np.ndarray:
    """``y`` of a template curve at parameter ``t`` (clipped to [0, 1]) for per-pixel sides."""
    t = np.clip(t, 0.0, 1.0)
    if curve in ("eye_upper", "eye_lower"):
        return tp.eye(-1, t, curve.split("_")[1])[..., 1]  # eyes are symmetric: either side's y
    if curve in ("brow_upper", "brow_lower"):
        edge = curve.split("_")[1]
        left, right = tp.brow(-1, t, edge)[..., 1], tp.brow(1, t, edge)[..., 1]
        return np.where(np.asarray(side) < 0, left, right)
    return tp.lip(curve, t)[..., 1]


def _inside_face(sh: FaceShape, tp: _Template, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside the face outline: the jaw curve below ``jaw_top``, a forehead arc above it."""
    dy = y - sh.jaw_top
    lower = np.abs(x / sh.jaw_half_width) ** sh.jaw_power + np.abs(dy / tp.jaw_depth) ** sh.jaw_power <= 1.0
    upper = np.abs(x / sh.jaw_half_width) ** 2.2 + np.abs(dy / sh.forehead) ** 2.2 <= 1.0
    return np.where(dy >= 0.0, lower, upper)
