"""``hg_heatmap``: a heatmap-regression stacked hourglass — the paper's "HGs [37]" family.

Why: CCDN is compared against heatmap methods; this is the Newell-style network trained the way
they are (Gaussian heatmaps, Adaptive Wing loss, intermediate supervision) but built from the very
blocks of CCDN's own backbone (:mod:`ccdn.models.hourglass`), so the comparison isolates "heatmaps
vs CTM + coordinate regression" rather than two unrelated code bases.

Per stack s: ``y = lin(ConvBlock(HG_s(x)))``; heatmaps ``H_s = conv1×1(y)`` (one map per landmark);
between stacks ``x ← x + conv1×1(y) + conv1×1(H_s)`` (Newell et al.). Every ``H_s`` is returned in
``"heatmaps"`` ``(B, stacks, L, h, w)`` so the loss supervises every stack; ``h = input_size / 2``
with the default ``style="wan"`` stem (``/4`` with ``"newell"``).

Decoding (``"landmarks"``, from the last stack): ``decoder="dark"`` (default) takes the arg-max pixel
and refines it by one Newton step on the log-heatmap (Taylor expansion, Zhang et al. "DARK"), exact
for a Gaussian peak; where the log-Hessian is not negative definite it falls back to the classic
quarter-pixel offset towards the higher neighbour; its output carries no gradient.
``decoder="integral"`` is the differentiable alternative — a local soft-arg-max, the centroid of
``relu(H)`` in a window at the arg-max — for the loss option ``heatmap_coord_weight > 0``, which also
trains on the decoded coordinates. A global ``softmax(beta·H)`` was rejected: on σ = 1 px Gaussians
it is biased by ~0.3 px for any usable beta.
Both invert :func:`ccdn.losses.render_heatmaps`: pixel u covers [u/w, (u+1)/w), so ``x = (u + 0.5)/w``.

No GAP + linear head, hence no ``"features"`` and no ``.head``: face activation maps (Fig. 8) are not
defined for this model (its heatmaps are already spatial).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccdn.models.hourglass import BACKBONE_STYLES, PAPER_STEM_CHANNELS, Hourglass, post_stack_block, stem
from ccdn.models.registry import register_model

DECODERS = ("dark", "integral")
LOG_FLOOR = 1e-10  # heatmap values are clamped here before the log of the DARK step


# ------------------------------------------------------------------------------------ decoding
def _neighbourhood(maps: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """The 3×3 values around ``(ix, iy)`` of ``maps`` (B, L, h, w), edge-replicated: (B, L, 3, 3)."""
    batch, landmarks, height, width = maps.shape
    padded = F.pad(maps.reshape(batch * landmarks, 1, height, width), (1, 1, 1, 1), mode="replicate")
    padded = padded.reshape(batch, landmarks, -1)
    steps = torch.arange(3, device=maps.device)
    rows = (iy[..., None] + steps)[..., :, None]  # padded row index of y-1, y, y+1
    cols = (ix[..., None] + steps)[..., None, :]
    index = (rows * (width + 2) + cols).reshape(batch, landmarks, 9)
    return padded.gather(-1, index).reshape(batch, landmarks, 3, 3)


def _argmax_pixels(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    flat_index = heatmaps.flatten(-2).argmax(dim=-1)
    width = heatmaps.shape[-1]
    return flat_index % width, flat_index // width


@torch.no_grad()
def dark_decode(heatmaps: Tensor) -> Tensor:
    """Arg-max + second-order Taylor refinement of ``heatmaps`` (B, L, h, w) → (B, L, 2) in [0, 1].

    Not differentiable (run without autograd): the arg-max is not, and gradients of the log-heatmap
    (∝ 1/H) near the background would be huge; coordinate supervision uses :func:`integral_decode`.
    """
    maps = heatmaps.float()
    height, width = maps.shape[-2:]
    ix, iy = _argmax_pixels(maps)
    n = _neighbourhood(maps.clamp_min(LOG_FLOOR).log(), ix, iy)  # n[..., row, col]
    dx = (n[..., 1, 2] - n[..., 1, 0]) / 2
    dy = (n[..., 2, 1] - n[..., 0, 1]) / 2
    dxx = n[..., 1, 2] - 2 * n[..., 1, 1] + n[..., 1, 0]
    dyy = n[..., 2, 1] - 2 * n[..., 1, 1] + n[..., 0, 1]
    dxy = (n[..., 2, 2] - n[..., 0, 2] - n[..., 2, 0] + n[..., 0, 0]) / 4
    det = dxx * dyy - dxy * dxy
    concave = (dxx < 0) & (det > 0)  # log-Hessian negative definite: a real maximum
    safe_det = torch.where(concave, det, torch.ones_like(det))
    newton_x = -(dyy * dx - dxy * dy) / safe_det
    newton_y = -(dxx * dy - dxy * dx) / safe_det
    raw = _neighbourhood(maps, ix, iy)
    quarter_x = 0.25 * torch.sign(raw[..., 1, 2] - raw[..., 1, 0])
    quarter_y = 0.25 * torch.sign(raw[..., 2, 1] - raw[..., 0, 1])
    offset_x = torch.where(concave, newton_x, quarter_x).clamp(-0.5, 0.5)
    offset_y = torch.where(concave, newton_y, quarter_y).clamp(-0.5, 0.5)
    x = (ix.to(maps.dtype) + offset_x + 0.5) / width
    y = (iy.to(maps.dtype) + offset_y + 0.5) / height
    return torch.stack((x, y), dim=-1)


def integral_decode(heatmaps: Tensor, radius: int = 3) -> Tensor:
    """Local soft-arg-max: centroid of ``relu(H)`` in a (2r+1)² window at the arg-max → (B, L, 2) in [0, 1].

    Differentiable in the heatmap values (unlike the arg-max of :func:`dark_decode`); the window
    keeps background noise far from the peak out of the mean. r = 3 suits the σ = 1 px targets.
    """
    maps = heatmaps.float()
    height, width = maps.shape[-2:]
    ix, iy = _argmax_pixels(maps)
    xs = torch.arange(width, device=maps.device)
    ys = torch.arange(height, device=maps.device)
    in_x = ((xs - ix[..., None]).abs() <= radius).to(maps.dtype)  # (B, L, w)
    in_y = ((ys - iy[..., None]).abs() <= radius).to(maps.dtype)  # (B, L, h)
    weights = maps.clamp_min(0) * in_y[..., :, None] * in_x[..., None, :]
    mass = weights.sum(dim=(-2, -1))
    has_mass = mass > 0
    safe_mass = torch.where(has_mass, mass, torch.ones_like(mass))
    centre_x = (weights.sum(dim=-2) * (xs.to(maps.dtype) + 0.5)).sum(dim=-1) / safe_mass
    centre_y = (weights.sum(dim=-1) * (ys.to(maps.dtype) + 0.5)).sum(dim=-1) / safe_mass
    # A window with no positive value (an untrained map) falls back to the arg-max pixel centre.
    x = torch.where(has_mass, centre_x, ix.to(maps.dtype) + 0.5) / width
    y = torch.where(has_mass, centre_y, iy.to(maps.dtype) + 0.5) / height
    return torch.stack((x, y), dim=-1)


def decode_heatmaps(heatmaps: Tensor, decoder: str = "dark", *, radius: int = 3) -> Tensor:
    """Sub-pixel landmarks (B, L, 2) in [0, 1] of the crop from heatmaps (B, L, h, w)."""
    if heatmaps.dim() != 4:
        raise ValueError(f"decode_heatmaps expects (B, L, h, w), got shape {tuple(heatmaps.shape)}")
    if decoder == "dark":
        return dark_decode(heatmaps)
    if decoder == "integral":
        return integral_decode(heatmaps, radius)
    raise ValueError(f"heatmap decoder must be one of {DECODERS}, got {decoder!r}")


# --------------------------------------------------------------------------------------- model
class HeatmapHourglass(nn.Module):
    """Stacked hourglass with one heatmap head per stack (intermediate supervision) and sub-pixel decoding."""

    default_loss = "awing"

    def __init__(
        self,
        num_landmarks: int,
        *,
        stacks: int = 4,
        channels: int = 256,
        input_size: int = 128,
        depth: int = 4,
        style: str = "wan",
        decoder: str = "dark",
        integral_radius: int = 3,
        stem_channels: tuple[int, int] = PAPER_STEM_CHANNELS,
    ) -> None:
        super().__init__()
        if style not in BACKBONE_STYLES:
            raise ValueError(f"backbone style must be one of {BACKBONE_STYLES}, got {style!r}")
        if decoder not in DECODERS:
            raise ValueError(f"heatmap decoder must be one of {DECODERS}, got {decoder!r}")
        if num_landmarks < 1 or stacks < 1 or depth < 1 or channels < 2:
            raise ValueError(
                f"need num_landmarks >= 1, stacks >= 1, depth >= 1, channels >= 2; "
                f"got {num_landmarks=}, {stacks=}, {depth=}, {channels=}"
            )
        self.num_landmarks = num_landmarks
        self.decoder = decoder
        self.integral_radius = integral_radius
        self.stem, self.stride = stem(style, channels, tuple(stem_channels))
        self.heatmap_size = input_size // self.stride
        if input_size % self.stride or self.heatmap_size % (2**depth):
            raise ValueError(
                f"input_size={input_size} does not fit hg_heatmap: the {style!r} stem divides it by {self.stride} "
                f"and a depth-{depth} hourglass needs that divisible by {2**depth}; "
                f"use a multiple of {self.stride * 2**depth}"
            )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels, style) for _ in range(stacks))
        self.post = nn.ModuleList(post_stack_block(channels) for _ in range(stacks))
        self.heatmap_heads = nn.ModuleList(nn.Conv2d(channels, num_landmarks, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_landmarks, channels, 1) for _ in range(stacks - 1))

    def forward_heatmaps(self, images: Tensor) -> Tensor:
        """Heatmaps of every stack, (B, stacks, L, h, w)."""
        x = self.stem(images)
        per_stack = []
        for index, (hourglass, post, head) in enumerate(zip(self.hourglasses, self.post, self.heatmap_heads)):
            features = post(hourglass(x))
            heatmaps = head(features)
            per_stack.append(heatmaps)
            if index < len(self.merge_features):
                x = x + self.merge_features[index](features) + self.merge_heatmaps[index](heatmaps)
        return torch.stack(per_stack, dim=1)

    def forward(self, images: Tensor) -> dict[str, Any]:
        heatmaps = self.forward_heatmaps(images)
        landmarks = decode_heatmaps(heatmaps[:, -1], self.decoder, radius=self.integral_radius)
        return {"landmarks": landmarks, "cocs": {}, "heatmaps": heatmaps}


@register_model("hg_heatmap")
def hg_heatmap(num_landmarks: int, *, num_excitations: int | None = None, hourglass_depth: int | None = None,
               **options: Any) -> HeatmapHourglass:
    """Heatmap stacked hourglass; ``num_excitations`` (a CCDN option of the common recipe) is ignored and the
    recipe's ``hourglass_depth`` (CCDN's name for it) sets ``depth``."""
    del num_excitations
    if hourglass_depth is not None:
        options.setdefault("depth", hourglass_depth)
    return HeatmapHourglass(num_landmarks, **options)
