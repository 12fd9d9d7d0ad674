"""CCDN, FCDN and the Baseline (paper §3.3, Fig. 2, §4.4), registered as ``ccdn``, ``fcdn``, ``baseline``.

One network, three variants, so the ablation changes nothing but what the paper changes:

    images → stacked hourglass (B, D, S/2, S/2)
           → [plain stride-2 stages]            (only when tail_stages > 2)
           → stage T−1: pool + ConvBlock → CTM → Σₚ X̂ᵖ_{T−1}
           → stage T:   pool + ConvBlock → CTM → Σₚ X̂ᵖ_T  = "features"
           → GAP → Linear(D, 2L) → landmarks (x0, y0, x1, y1, …)
    COCS (Eq. 8): L(Qᵀ), L(Qᵀ⁻¹) from GAP(X̂ᵖ) at T, T−1; L(Q^G) from G_p = CFF(X̂ᵖ_{T−1}, X̂ᵖ_T) (Eq. 7).

- ``ccdn``: both squeezes (first- and second-order gates per excitation);
- ``fcdn``: first-order gates only — no second-order parameters exist;
- ``baseline``: the same hourglasses, stages and head without any CTM or COCS (``cocs == {}``).
Every interpretation (where T−1/T sit, merging the P outputs, …) is listed in docs/method.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from ccdn.losses import COCS_MODES, cocs_loss
from ccdn.models.cff import CFF_NORMS, CrossLayerFeatureFusion, FusedMaps
from ccdn.models.ctm import COVARIANCE_DIVISORS, CrossOrderTwoSqueezeMultiExcitation, CTMOutput
from ccdn.models.hourglass import BACKBONE_STYLES, PAPER_STEM_CHANNELS, ConvBlock, StackedHourglass, downsample
from ccdn.models.registry import register_model

VARIANT_ORDERS: dict[str, tuple[str, ...]] = {"ccdn": ("st", "nd"), "fcdn": ("st",), "baseline": ()}
MERGE_MODES = ("sum", "mean", "concat")
HEAD_SOURCES = ("T", "G")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")
MAX_EXCITATIONS = 8


@dataclass(frozen=True)
class CCDNConfig:
    """Model options (``model.options`` in the training config). Defaults are the paper's size."""

    stacks: int = 4
    channels: int = 256
    input_size: int = 128
    num_excitations: int = 4
    hourglass_depth: int = 4
    backbone_style: str = "wan"
    stem_channels: tuple[int, int] = PAPER_STEM_CHANNELS
    tail_stages: int = 2
    reduction: int = 4
    isqrt_iterations: int = 5
    gcp_channels: int | None = None
    covariance_divisor: str = "M"
    merge: str = "sum"
    head_source: str = "T"
    cocs_mode: str = "batch"
    cff_norm: str = "per_excitation"
    output_activation: str = "linear"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "CCDNConfig":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown model option(s) {unknown} for the hourglass models; known options: {known}")
        if "stem_channels" in options:  # YAML gives a list; the frozen config keeps a hashable tuple
            options = {**options, "stem_channels": tuple(int(c) for c in options["stem_channels"])}
        config = cls(**options)
        config.validate()
        return config

    def validate(self) -> None:
        choices = {
            "backbone_style": BACKBONE_STYLES,
            "covariance_divisor": COVARIANCE_DIVISORS,
            "merge": MERGE_MODES,
            "head_source": HEAD_SOURCES,
            "cocs_mode": COCS_MODES,
            "cff_norm": CFF_NORMS,
            "output_activation": OUTPUT_ACTIVATIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model option {key}={getattr(self, key)!r} is not one of {allowed}")
        if not 1 <= self.num_excitations <= MAX_EXCITATIONS:
            raise ValueError(f"num_excitations (P) must be in 1..{MAX_EXCITATIONS}, got {self.num_excitations}")
        if self.tail_stages < 2:
            raise ValueError(f"tail_stages must be >= 2 (layers T-1 and T are the last two), got {self.tail_stages}")
        if len(self.stem_channels) != 2 or min(self.stem_channels) < 1:
            raise ValueError(f"stem_channels must be two positive widths, got {self.stem_channels}")
        if self.isqrt_iterations < 1 or self.reduction < 1:
            raise ValueError(f"isqrt_iterations and reduction must be >= 1, got {self.isqrt_iterations}, {self.reduction}")


class ExcitationMerge(nn.Module):
    """Merges the P excitation outputs into the one map the forward path continues with."""

    def __init__(self, mode: str, channels: int, num_excitations: int) -> None:
        super().__init__()
        self.mode = mode
        self.project = nn.Conv2d(num_excitations * channels, channels, 1) if mode == "concat" else None

    def from_gates(self, x: Tensor, ctm_output: CTMOutput) -> Tensor:
        """Merge X̂ᵖ = gᵖ ⊙ x without materialising the P maps unless concatenating."""
        if self.project is not None:
            return self.from_maps(ctm_output.excitation_maps(x))
        gate = ctm_output.gates.sum(dim=1) if self.mode == "sum" else ctm_output.gates.mean(dim=1)
        return x * gate[:, :, None, None]

    def from_maps(self, maps: Tensor) -> Tensor:
        """Merge explicit maps (B, P, D, H, W)."""
        if self.project is not None:
            return self.project(maps.flatten(1, 2))
        return maps.sum(dim=1) if self.mode == "sum" else maps.mean(dim=1)


def tail_stage(style: str, channels: int) -> nn.Sequential:
    """One stride-2 regression stage; its output is "the output of a residual block" (the CTM input, §3.1.1)."""
    return nn.Sequential(downsample(style), ConvBlock(channels, channels))


class HourglassLandmarkNetwork(nn.Module):
    """The hourglass coordinate regressor shared by ``ccdn``, ``fcdn`` and ``baseline``."""

    default_loss = "l2"

    def __init__(self, num_landmarks: int, variant: str, config: CCDNConfig) -> None:
        super().__init__()
        if variant not in VARIANT_ORDERS:
            raise ValueError(f"unknown variant {variant!r}; one of {sorted(VARIANT_ORDERS)}")
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
        self.num_landmarks = num_landmarks
        self.variant = variant
        self.config = config
        channels = config.channels
        self.backbone = StackedHourglass(
            stacks=config.stacks, channels=channels, depth=config.hourglass_depth,
            input_size=config.input_size, style=config.backbone_style, stem_channels=config.stem_channels,
        )
        if self.backbone.out_size % (2**config.tail_stages):
            raise ValueError(
                f"input_size={config.input_size}: the backbone map ({self.backbone.out_size} px) cannot be halved "
                f"{config.tail_stages} times (tail_stages); use a multiple of "
                f"{self.backbone.stride * 2 ** max(config.tail_stages, config.hourglass_depth)}"
            )
        self.stages = nn.ModuleList(tail_stage(config.backbone_style, channels) for _ in range(config.tail_stages))
        orders = VARIANT_ORDERS[variant]
        excitations = config.num_excitations if orders else 1
        self.ctms = nn.ModuleDict()
        self.merges = nn.ModuleDict()
        if orders:
            for layer in ("T-1", "T"):
                self.ctms[layer] = CrossOrderTwoSqueezeMultiExcitation(
                    channels, num_excitations=excitations, orders=orders, reduction=config.reduction,
                    isqrt_iterations=config.isqrt_iterations, gcp_channels=config.gcp_channels,
                    covariance_divisor=config.covariance_divisor,
                )
                self.merges[layer] = ExcitationMerge(config.merge, channels, excitations)
            if config.head_source == "G":
                self.merges["G"] = ExcitationMerge(config.merge, channels, excitations)
        self.cff = (
            CrossLayerFeatureFusion(channels, excitations, config.cff_norm) if orders or config.head_source == "G" else None
        )
        self.head = nn.Linear(channels, 2 * num_landmarks)
        # Start near the crop centre (0.5 for a linear output, logit 0 for a sigmoid) with small weights:
        # the merged CTM maps are large (Σₚ gates ≈ P at init), so default-initialised weights would
        # start predictions several crop widths away.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, 0.5 if config.output_activation == "linear" else 0.0)

    @property
    def has_cocs(self) -> bool:
        return len(self.ctms) > 0

    def _excite(self, layer: str, x: Tensor) -> tuple[Tensor, CTMOutput | None]:
        """CTM at ``layer`` (or nothing for the baseline): the merged map and the CTM's gates."""
        if layer not in self.ctms:
            return x, None
        ctm_output = self.ctms[layer](x)
        return self.merges[layer].from_gates(x, ctm_output), ctm_output

    def _fuse(self, lower: Tensor, upper: Tensor, low: CTMOutput | None, up: CTMOutput | None) -> FusedMaps:
        """Eq. 7 per excitation: maps (B, P, D, H, W) and pooled fᵖ_G (P = 1 for the baseline)."""
        if low is None or up is None:
            return self.cff(lower[:, None], upper[:, None])
        return self.cff(low.excitation_maps(lower), up.excitation_maps(upper))

    def forward_features(self, images: Tensor, *, with_cocs: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """The map feeding the head and, when ``with_cocs``, the COCS terms (Eq. 6 values, unweighted)."""
        x = self.backbone(images)
        for stage in self.stages[:-2]:
            x = stage(x)
        lower = self.stages[-2](x)
        lower_merged, low = self._excite("T-1", lower)
        upper = self.stages[-1](lower_merged)
        features, up = self._excite("T", upper)
        cocs: dict[str, Tensor] = {}
        fused = self._fuse(lower, upper, low, up) if self.cff is not None else None
        if with_cocs and low is not None and up is not None and fused is not None:
            mode = self.config.cocs_mode  # float32: the normalised dot products are too coarse in bf16
            cocs["T"] = cocs_loss(up.pooled().float(), mode=mode)
            cocs["T-1"] = cocs_loss(low.pooled().float(), mode=mode)
            cocs["G"] = cocs_loss(fused.pooled, mode=mode)
        if self.config.head_source == "G" and fused is not None:
            features = self.merges["G"].from_maps(fused.maps) if "G" in self.merges else fused.maps[:, 0]
        return features, cocs

    def forward_head(self, features: Tensor) -> Tensor:
        """GAP + Linear(D, 2L) → (B, L, 2); linear in ``features`` so CAM maps are exact (cam.py)."""
        coordinates = self.head(features.mean(dim=(2, 3))).view(-1, self.num_landmarks, 2)
        return torch.sigmoid(coordinates) if self.config.output_activation == "sigmoid" else coordinates

    def forward(self, images: Tensor, *, with_cocs: bool | None = None) -> dict[str, Any]:
        """``"cocs"`` holds the regulariser terms only when a loss needs them: in training mode, or
        when ``with_cocs=True`` (evaluation and inference skip them; mmpose keeps loss apart from predict)."""
        features, cocs = self.forward_features(images, with_cocs=self.training if with_cocs is None else with_cocs)
        return {"landmarks": self.forward_head(features), "cocs": cocs, "features": features}


def build(variant: str, num_landmarks: int, options: dict[str, Any]) -> HourglassLandmarkNetwork:
    return HourglassLandmarkNetwork(num_landmarks, variant, CCDNConfig.from_options(options))


EXCITATION_DEFAULTS = {"num_excitations": CCDNConfig.num_excitations}  # P = 4, read by grid and config


@register_model("ccdn", has_excitations=True, default_options=EXCITATION_DEFAULTS)
def ccdn(num_landmarks: int, **options: Any) -> HourglassLandmarkNetwork:
    """CCDN: CTM with first- and second-order squeezes + COCS at T, T−1, G."""
    return build("ccdn", num_landmarks, options)


@register_model("fcdn", has_excitations=True, default_options=EXCITATION_DEFAULTS)
def fcdn(num_landmarks: int, **options: Any) -> HourglassLandmarkNetwork:
    """FCDN: CCDN with first-order statistics only (no GCP, no second-order gates)."""
    return build("fcdn", num_landmarks, options)


@register_model("baseline")
def baseline(num_landmarks: int, **options: Any) -> HourglassLandmarkNetwork:
    """Baseline: stacked hourglasses regressing coordinates, no CTM, no COCS."""
    return build("baseline", num_landmarks, options)


def describe(model: HourglassLandmarkNetwork) -> dict[str, Any]:
    """The variant and options, for logging."""
    return {"variant": model.variant, **asdict(model.config)}
