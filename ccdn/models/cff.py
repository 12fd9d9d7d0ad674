"""Cross-layer Feature Fusion block (CFF, paper §3.2, Eq. 7, Fig. 4).

``X̂ᵖ_G = BN(K₂ * (X̂ᵖ_{T−1} + Fconv(K₁ * X̂ᵖ_T)))``: K₁ a 1×1 convolution, Fconv a ×2 deconvolution
(the paper prefers it to bilinear upsampling), K₂ a 3×3 convolution. Layer T must have half the
resolution of layer T−1, which is why CCDN's T−1 and T are consecutive stride-2 stages (docs/method.md).
The P excitations share K₁, Fconv and K₂ (P is folded into the batch). Where Eq. 7's BatchNorm takes
its statistics is the ``norm`` option (docs/method.md, item 14), because it decides whether L(Q^G)
constrains anything: BN centres every channel over the batch, and Eq. 5's batch-mode Q is built from
batch means, so a BN shared by all excitations removes most of what L(Q^G) measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

# per_excitation: one BN per p (Cross-X, the paper's ref. [17]); shared: one BN over all (image, p) maps;
# pooled_before: shared BN on the path, but fᵖ_G for L(Q^G) is pooled before it; none: no BN.
CFF_NORMS = ("per_excitation", "shared", "pooled_before", "none")


@dataclass
class FusedMaps:
    """What CFF computes: the maps X̂ᵖ_G ``(B, P, D, H, W)`` and fᵖ_G ``(P, B, D)`` (float32) for L(Q^G)."""

    maps: Tensor
    pooled: Tensor


class CrossLayerFeatureFusion(nn.Module):
    """Eq. 7 for excitation maps ``lower`` (B, P, D, 2h, 2w) at layer T−1 and ``upper`` (B, P, D, h, w) at T."""

    def __init__(self, channels: int, num_excitations: int = 1, norm: str = "per_excitation") -> None:
        super().__init__()
        if norm not in CFF_NORMS:
            raise ValueError(f"CFF norm must be one of {CFF_NORMS}, got {norm!r}")
        self.norm = norm
        self.num_excitations = num_excitations
        self.k1 = nn.Conv2d(channels, channels, 1)
        self.fconv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.k2 = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none")
        # per_excitation: BatchNorm2d over P·D channels of (B, P·D, H, W) is exactly one BN per excitation.
        bn_channels = channels * num_excitations if norm == "per_excitation" else channels
        self.bn = nn.BatchNorm2d(bn_channels) if norm != "none" else None

    def fuse(self, lower: Tensor, upper: Tensor) -> Tensor:
        """K₂ * (lower + Fconv(K₁ * upper)) for 4-D maps (N, D, ·, ·): Eq. 7 before its BatchNorm."""
        upsampled = self.fconv(self.k1(upper))
        if upsampled.shape != lower.shape:
            raise ValueError(
                f"CFF needs layer T at half the resolution of layer T-1: deconv(T) has shape "
                f"{tuple(upsampled.shape)} but T-1 has {tuple(lower.shape)}"
            )
        return self.k2(lower + upsampled)

    def normalise(self, fused: Tensor) -> Tensor:
        """Eq. 7's BatchNorm of the pre-BN maps (B, P, D, H, W), with the statistics ``norm`` names."""
        if self.bn is None:
            return fused
        if self.norm == "per_excitation":
            return self.bn(fused.flatten(1, 2)).unflatten(1, fused.shape[1:3])
        return self.bn(fused.flatten(0, 1)).unflatten(0, fused.shape[:2])

    def forward(self, lower: Tensor, upper: Tensor) -> FusedMaps:
        if lower.dim() != 5 or upper.dim() != 5 or lower.shape[1] != self.num_excitations:
            raise ValueError(
                f"CFF expects excitation maps (B, P={self.num_excitations}, D, H, W); got "
                f"{tuple(lower.shape)} and {tuple(upper.shape)}"
            )
        batch, excitations = lower.shape[:2]
        fused = self.fuse(lower.flatten(0, 1), upper.flatten(0, 1)).unflatten(0, (batch, excitations))
        maps = self.normalise(fused)
        source = fused if self.norm == "pooled_before" else maps
        pooled = source.mean(dim=(3, 4), dtype=torch.float32).transpose(0, 1)
        return FusedMaps(maps=maps, pooled=pooled)
