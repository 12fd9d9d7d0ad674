"""Painting a face: ray-cast the posed ellipsoid head per (super-sampled) pixel, shade it, and draw
every feature from the same template curves the landmarks sample (so texture and labels agree).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ccdn.data.synth_face.geometry import (
    HEAD_AXES,
    FaceParams,
    FaceShape,
    FaceTemplate,
    RenderedFace,
    annotate,
    head_half_extent,
    rotation,
)


SUPERSAMPLE = 2


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
    sh, tp = params.shape, FaceTemplate(params.shape)
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


def _eye_frame(tp: FaceTemplate, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sh = tp.s
    outer = sh.eye_inner + sh.eye_width
    t = (np.abs(x) - outer) / (sh.eye_inner - outer)
    return t, _curve_y(tp, "eye_upper", 1, t), _curve_y(tp, "eye_lower", 1, t)


def _eye_box(tp: FaceTemplate, above: float = 0.0) -> tuple[float, float, float, float]:
    sh = tp.s
    top = sh.eye_y - sh.eye_tilt - sh.eye_upper - above - 0.03
    return (sh.eye_inner - 0.01, sh.eye_inner + sh.eye_width + 0.01, top, sh.eye_y + sh.eye_lower + 0.03)


def _paint_makeup(params: FaceParams, tp: FaceTemplate, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
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


def _paint_brows(params: FaceParams, tp: FaceTemplate, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
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


def _paint_eyes(params: FaceParams, tp: FaceTemplate, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
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


def _paint_nose(params: FaceParams, tp: FaceTemplate, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
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


def _paint_mouth(params: FaceParams, tp: FaceTemplate, x: np.ndarray, y: np.ndarray, colours: np.ndarray) -> None:
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


def _curve_y(tp: FaceTemplate, curve: str, side: np.ndarray | int, t: np.ndarray) -> np.ndarray:
    """``y`` of a template curve at parameter ``t`` (clipped to [0, 1]) for per-pixel sides."""
    t = np.clip(t, 0.0, 1.0)
    if curve in ("eye_upper", "eye_lower"):
        return tp.eye(-1, t, curve.split("_")[1])[..., 1]  # eyes are symmetric: either side's y
    if curve in ("brow_upper", "brow_lower"):
        edge = curve.split("_")[1]
        left, right = tp.brow(-1, t, edge)[..., 1], tp.brow(1, t, edge)[..., 1]
        return np.where(np.asarray(side) < 0, left, right)
    return tp.lip(curve, t)[..., 1]


def _inside_face(sh: FaceShape, tp: FaceTemplate, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside the face outline: the jaw curve below ``jaw_top``, a forehead arc above it."""
    dy = y - sh.jaw_top
    lower = np.abs(x / sh.jaw_half_width) ** sh.jaw_power + np.abs(dy / tp.jaw_depth) ** sh.jaw_power <= 1.0
    upper = np.abs(x / sh.jaw_half_width) ** 2.2 + np.abs(dy / sh.forehead) ** 2.2 <= 1.0
    return np.where(dy >= 0.0, lower, upper)
