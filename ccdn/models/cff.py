"""Cross-layer Feature Fusion block (CFF, paper §3.2, Eq. 7, Fig. 4).

``X̂_G = BN(K₂ * (X̂_{T−1} + Fconv(K₁ * X̂_T)))``: K₁ a 1×1 convolution, Fconv a ×2 deconvolution
(the paper prefers it to bilinear upsampling), K₂ a 3×3 convolution. Layer T must have half the
resolution of layer T−1, which is why CCDN's T−1 and T are consecutive stride-2 stages (docs/method.md).
Callers fuse each excitation p separately by folding P into the batch, so the weights are shared
across excitations and BN statistics are taken over all (batch, excitation) maps together.
"""

from __future__ import annotations

from torch import Tensor, nn


class CrossLayerFeatureFusion(nn.Module):
    """Eq. 7 for maps ``lower`` (N, D, 2h, 2w) at layer T−1 and ``upper`` (N, D, h, w) at layer T."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k1 = nn.Conv2d(channels, channels, 1)
        self.fconv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.k2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, lower: Tensor, upper: Tensor) -> Tensor:
        upsampled = self.fconv(self.k1(upper))
        if upsampled.shape != lower.shape:
            raise ValueError(
                f"CFF needs layer T at half the resolution of layer T-1: deconv(T) has shape "
                f"{tuple(upsampled.shape)} but T-1 has {tuple(lower.shape)}"
            )
        return self.bn(self.k2(lower + upsampled))
