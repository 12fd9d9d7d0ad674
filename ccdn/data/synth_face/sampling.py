"""Random faces: identity, expression, pose, lighting, clutter and occluders for given conditions.

Hardness is by construction: each WFLW condition (pose, expression, illumination, make-up,
occlusion, blur) switches on the parameter ranges that make a face hard in that way.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ccdn.data.synth_face.geometry import (
    Conditions,
    FaceParams,
    FaceShape,
    Occluder,
    annotate,
    head_half_extent,
    project,
    template_landmarks,
)


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


def hide_fraction(params: FaceParams, fraction: float, direction: float,
                  colour: tuple[float, float, float] = (0.35, 0.35, 0.4), scheme: str = "68") -> FaceParams:
    """``params`` with one opaque bar added so that exactly ``round(fraction × points)`` points of ``scheme``
    are hidden (points the face itself turns away count as hidden; more of those than wanted stay hidden).

    Why a bar: a controlled occlusion sweep needs the hidden share set, not drawn. The bar comes in from
    the side ``direction`` (radians, image axes) and its edge stops between the last point it must hide
    and the next, so the same face and direction at a larger fraction is the same bar reaching further.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"occluded fraction must be in [0, 1], got {fraction}")
    landmarks, self_hidden, object_hidden = annotate(params)
    points, hidden = landmarks[scheme], self_hidden[scheme] | object_hidden[scheme]
    wanted = int(round(fraction * len(points)))
    if wanted <= int(hidden.sum()):
        return params
    along = np.array([math.cos(direction), math.sin(direction)])
    depth = points @ along  # how far in from the bar's side
    ranked = np.sort(depth)
    gaps = np.flatnonzero(np.diff(ranked) > 1e-3)  # coincident points (a closed mouth's corners) go together
    edges = np.concatenate([[ranked[0] - 1.0], (ranked[gaps] + ranked[gaps + 1]) / 2, [ranked[-1] + 1.0]])
    counts = np.array([int((hidden | (depth < e)).sum()) for e in edges])
    edge = float(edges[int(np.argmin(np.abs(counts - wanted)))])  # the first edge closest to the wanted count
    reach = 2.0 * float(max(params.width, params.height))  # half-size: the bar spans the whole image
    across = points.mean(axis=0) - along * (points.mean(axis=0) @ along)
    centre = across + along * (edge - reach)
    bar = Occluder("rect", (float(centre[0]), float(centre[1])), (reach, reach), direction, colour)
    return replace(params, occluders=(*params.occluders, bar))
