"""The training objective (Eq. 9) and its parts: COCS (Eqs. 5, 6), coordinate and heatmap losses.

Eq. 9: ``Φ = Σᵢ ‖S*ᵢ − CCDN(IMGᵢ)‖²₂ + γ₁ L(Qᵀ) + γ₂ L(Qᵀ⁻¹) + γ₃ L(Q^G)``. Every term is returned
separately by :func:`compute_loss` so training can log it (docs/architecture.md, Contract 4).
Coordinates are normalised to the model crop ([0, 1] spans it); the sum over the 2L coordinates of
one image is kept (Eq. 9 as written) and images are averaged so the scale does not depend on the
batch size. Interpretations are listed in docs/method.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ccdn.global_batch import global_batch_mean

COCS_MODES = ("batch", "per_sample")
COCS_TERMS = ("T", "T-1", "G")
COORD_REDUCTIONS = ("sum", "mean")
WING_DEFAULT_SCALE = 128.0  # the paper's crop in pixels: ω, ε of the Wing loss are pixel quantities


# --------------------------------------------------------------------------------------------- COCS
def correlation_matrix(features: Tensor, *, mode: str = "batch", eps: float = 1e-12) -> Tensor:
    """Q of Eq. 5 from pooled excitation features ``features`` (P, B, D).

    Each fᵖ_b is l2-normalised. ``mode="batch"`` is Eq. 5 as written,
    ``Q_{p,p'} = (1/B²) Σ_{b,b'} ⟨fᵖ_b, fᵖ'_b'⟩`` — i.e. the dot product of the batch means —
    returning (P, P); under DDP B is the global batch (``ccdn.global_batch``). ``mode="per_sample"`` returns one ``Q_b = F_b F_bᵀ`` per image, (B, P, P),
    whose diagonal is exactly 1 (:func:`cross_semantic_loss` averages over the leading axis).
    """
    if features.dim() != 3:
        raise ValueError(f"correlation_matrix expects features (P, B, D), got shape {tuple(features.shape)}")
    normalised = F.normalize(features, dim=-1, eps=eps)
    if mode == "batch":
        # (1/B) Σ_b fᵖ_b over the global batch (all DDP processes), so Q = mean·meanᵀ = (1/B²) Σ Fᵀ F
        batch_mean = global_batch_mean(normalised, dim=1)
        return batch_mean @ batch_mean.T
    if mode == "per_sample":
        return torch.einsum("pbd,qbd->bpq", normalised, normalised)
    raise ValueError(f"correlation mode must be one of {COCS_MODES}, got {mode!r}")


def cross_semantic_loss(q: Tensor, *, eps: float = 1e-12) -> Tensor:
    """L(Q) of Eq. 6: ``(‖Q‖²_F − ‖diag Q‖²₂) / ‖diag Q‖²₂`` for ``q`` (..., P, P), averaged over ``...``.

    The numerator is summed over the off-diagonal entries directly (no cancellation); ``eps`` only
    guards a zero diagonal.
    """
    if q.dim() < 2 or q.shape[-1] != q.shape[-2]:
        raise ValueError(f"cross_semantic_loss expects square matrices (..., P, P), got shape {tuple(q.shape)}")
    size = q.shape[-1]
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=q.device)
    off = (q.square() * off_diagonal).sum(dim=(-2, -1))
    diagonal = q.diagonal(dim1=-2, dim2=-1).square().sum(dim=-1)
    return (off / diagonal.clamp_min(eps)).mean()


def cocs_loss(features: Tensor, *, mode: str = "batch") -> Tensor:
    """L(Q) of pooled excitation features (P, B, D): Eq. 6 applied to Eq. 5."""
    return cross_semantic_loss(correlation_matrix(features, mode=mode))


# ---------------------------------------------------------------------------- elementwise losses
def wing(x: Tensor, omega: float = 10.0, epsilon: float = 2.0) -> Tensor:
    """Wing loss of an error ``x`` (Feng et al. 2018): ω ln(1+|x|/ε) below ω, |x| − C above."""
    magnitude = x.abs()
    c = omega - omega * math.log1p(omega / epsilon)
    return torch.where(magnitude < omega, omega * torch.log1p(magnitude / epsilon), magnitude - c)


def adaptive_wing(
    pred: Tensor, target: Tensor, omega: float = 14.0, theta: float = 0.5, epsilon: float = 1.0, alpha: float = 2.1
) -> Tensor:
    """Adaptive Wing loss per heatmap pixel (Wang et al. 2019); the exponent α − y adapts to the target y."""
    delta = (target - pred).abs()
    exponent = alpha - target
    ratio = theta / epsilon
    a = omega * (1.0 / (1.0 + ratio**exponent)) * exponent * ratio ** (exponent - 1.0) / epsilon
    c = theta * a - omega * torch.log1p(ratio**exponent)
    small = omega * torch.log1p((delta / epsilon) ** exponent)
    return torch.where(delta < theta, small, a * delta - c)


# ----------------------------------------------------------------------------- coordinate losses
def _reduce_coordinates(per_coordinate: Tensor, reduction: str) -> Tensor:
    """Sum (Eq. 9's squared norm) or mean over the (L, 2) coordinates of an image, then mean over images."""
    if reduction not in COORD_REDUCTIONS:
        raise ValueError(f"coord_reduction must be one of {COORD_REDUCTIONS}, got {reduction!r}")
    per_image = per_coordinate.flatten(1)
    per_image = per_image.sum(dim=1) if reduction == "sum" else per_image.mean(dim=1)
    return per_image.mean()


def l2_loss(pred: Tensor, target: Tensor, *, scale: float = 1.0, reduction: str = "sum") -> Tensor:
    """The paper's loss: ‖S* − S‖²₂ per image (mean over images); ``scale`` multiplies the errors."""
    return _reduce_coordinates(((pred - target) * scale).square(), reduction)


def l1_loss(pred: Tensor, target: Tensor, *, scale: float = 1.0, reduction: str = "sum") -> Tensor:
    """‖S* − S‖₁ per image (mean over images)."""
    return _reduce_coordinates(((pred - target) * scale).abs(), reduction)


def wing_loss(
    pred: Tensor,
    target: Tensor,
    *,
    scale: float = WING_DEFAULT_SCALE,
    reduction: str = "sum",
    omega: float = 10.0,
    epsilon: float = 2.0,
) -> Tensor:
    """Wing loss summed over coordinates (mean over images); errors are ``scale``× the normalised ones."""
    return _reduce_coordinates(wing((pred - target) * scale, omega, epsilon), reduction)


COORD_LOSSES: dict[str, Callable[..., Tensor]] = {"l2": l2_loss, "l1": l1_loss, "wing": wing_loss}


# ------------------------------------------------------------------------------------- heatmaps
def render_heatmaps(landmarks01: Tensor, size: int | tuple[int, int], sigma: float) -> Tensor:
    """Gaussian heatmaps ``(B, L, h, w)`` with peak 1 at each landmark (x, y in [0, 1] of the crop).

    Pixel i covers [i/w, (i+1)/w) of the crop, so a landmark at x maps to the continuous pixel
    coordinate ``x·w − 0.5`` (decoders must invert this: ``x = (u + 0.5) / w``). ``sigma`` in heatmap pixels.
    """
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be > 0, got {sigma}")
    height, width = (size, size) if isinstance(size, int) else size
    xs = torch.arange(width, dtype=landmarks01.dtype, device=landmarks01.device)
    ys = torch.arange(height, dtype=landmarks01.dtype, device=landmarks01.device)
    cx = landmarks01[..., 0, None] * width - 0.5
    cy = landmarks01[..., 1, None] * height - 0.5
    gx = torch.exp(-((xs - cx) ** 2) / (2 * sigma**2))  # (B, L, w)
    gy = torch.exp(-((ys - cy) ** 2) / (2 * sigma**2))  # (B, L, h)
    return gy[..., :, None] * gx[..., None, :]


def adaptive_wing_loss(
    pred: Tensor,
    target: Tensor,
    *,
    omega: float = 14.0,
    theta: float = 0.5,
    epsilon: float = 1.0,
    alpha: float = 2.1,
    weight: float = 10.0,
    weight_threshold: float = 0.2,
) -> Tensor:
    """Mean Adaptive Wing loss over heatmaps ``(..., h, w)`` with the paper's loss-weighted map.

    Weight = ``weight·M + 1`` where M marks pixels whose 3×3 grey dilation of the target exceeds
    ``weight_threshold`` (the AWing paper's W = 10); ``weight=0`` gives the plain mean.
    """
    loss = adaptive_wing(pred, target, omega, theta, epsilon, alpha)
    if weight:
        flat = target.reshape(-1, 1, *target.shape[-2:])
        dilated = F.max_pool2d(flat, 3, stride=1, padding=1).reshape(target.shape)
        loss = loss * (weight * (dilated > weight_threshold).to(loss.dtype) + 1.0)
    return loss.mean()


# ------------------------------------------------------------------------------------ objective
@dataclass(frozen=True)
class LossOptions:
    """Options of :func:`compute_loss` beyond ``coord_loss`` and ``gammas``."""

    coord_scale: float | None = None  # None: 1 for l2/l1 (normalised units), WING_DEFAULT_SCALE for wing
    coord_reduction: str = "sum"
    wing_omega: float = 10.0
    wing_epsilon: float = 2.0
    heatmap_sigma: float = 1.0
    heatmap_weight: float = 1.0
    heatmap_coord_weight: float = 0.0
    awing_omega: float = 14.0
    awing_theta: float = 0.5
    awing_epsilon: float = 1.0
    awing_alpha: float = 2.1
    awing_weight: float = 10.0

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> "LossOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown loss option(s) {unknown}; known options: {sorted(known)}")
        return cls(**options)


def coordinate_loss(pred: Tensor, target: Tensor, name: str, options: LossOptions) -> Tensor:
    """The named coordinate loss with the scale/reduction of ``options``."""
    if name not in COORD_LOSSES:
        raise ValueError(f"unknown coord_loss {name!r}; choose one of {sorted(COORD_LOSSES)}")
    scale = options.coord_scale
    if scale is None:
        scale = WING_DEFAULT_SCALE if name == "wing" else 1.0
    if name == "wing":
        return wing_loss(
            pred, target, scale=scale, reduction=options.coord_reduction,
            omega=options.wing_omega, epsilon=options.wing_epsilon,
        )
    return COORD_LOSSES[name](pred, target, scale=scale, reduction=options.coord_reduction)


def heatmap_loss(heatmaps: Tensor, target: Tensor, options: LossOptions) -> Tensor:
    """AWing between predicted heatmaps (B, S, L, h, w) — or (B, L, h, w) — and Gaussians at ``target``.

    Intermediate supervision: the per-stack means are summed over the S stacks.
    """
    if heatmaps.dim() == 4:
        heatmaps = heatmaps[:, None]
    if heatmaps.dim() != 5 or heatmaps.shape[2] != target.shape[1]:
        raise ValueError(
            f"heatmaps must be (B, stacks, L, h, w) with L={target.shape[1]}, got shape {tuple(heatmaps.shape)}"
        )
    rendered = render_heatmaps(target.to(heatmaps.dtype), tuple(heatmaps.shape[-2:]), options.heatmap_sigma)
    per_stack = [
        adaptive_wing_loss(
            heatmaps[:, s], rendered, omega=options.awing_omega, theta=options.awing_theta,
            epsilon=options.awing_epsilon, alpha=options.awing_alpha, weight=options.awing_weight,
        )
        for s in range(heatmaps.shape[1])
    ]
    return torch.stack(per_stack).sum()


def compute_loss(
    output: Mapping[str, Any],
    target: Tensor,
    *,
    coord_loss: str = "l2",
    gammas: tuple[float, float, float] | list[float] = (0.025, 0.01, 0.05),
    **loss_options: Any,
) -> dict[str, Tensor]:
    """Eq. 9 for a model ``output`` (Contract 3) and ground truth ``target`` (B, L, 2) in [0, 1] of the crop.

    Returns ``total``, ``coord``, and ``cocs_T``, ``cocs_T-1``, ``cocs_G`` when the model returned COCS
    terms (weighted by γ₁, γ₂, γ₃ in ``total``), plus ``heatmap`` for heatmap models, whose ``total`` is
    ``heatmap_weight·heatmap + heatmap_coord_weight·coord`` (+ COCS).
    """
    options = LossOptions.from_kwargs(loss_options)
    if len(gammas) != len(COCS_TERMS):
        raise ValueError(f"gammas must have {len(COCS_TERMS)} values (T, T-1, G), got {list(gammas)}")
    landmarks = output["landmarks"]
    if landmarks.shape != target.shape:
        raise ValueError(f"predicted landmarks {tuple(landmarks.shape)} and target {tuple(target.shape)} differ")
    losses: dict[str, Tensor] = {"coord": coordinate_loss(landmarks, target.to(landmarks.dtype), coord_loss, options)}
    if "heatmaps" in output:
        losses["heatmap"] = heatmap_loss(output["heatmaps"], target, options)
        total = options.heatmap_weight * losses["heatmap"] + options.heatmap_coord_weight * losses["coord"]
    else:
        total = losses["coord"]
    cocs = output.get("cocs") or {}
    if cocs:
        missing = [term for term in COCS_TERMS if term not in cocs]
        if missing:
            raise KeyError(f"model output 'cocs' lacks term(s) {missing}; expected keys {list(COCS_TERMS)}")
        for gamma, term in zip(gammas, COCS_TERMS):
            losses[f"cocs_{term}"] = cocs[term]
            total = total + gamma * cocs[term]
    losses["total"] = total
    return losses
