"""Stacked hourglass backbone (CCDN §4.1: "four stacked hourglass networks", 128×128 input).

Why this design: no CCDN code is public; the first author's nearest public network (MMDN) uses a
128-input hourglass (docs/research/method.md §2), which we take as the default ``style="wan"``:
conv3×3 stride 1 (3→64) → ConvBlock(64→128) → max-pool ×2 → ConvBlock(128→256) → ``stacks``
hourglasses of depth 4 (avg-pool down, ConvTranspose k4 s2 up). Newell et al.'s original stem
(conv7×7 stride 2, nearest-neighbour upsampling) is ``style="newell"``. Stacks are chained the
Newell way without heatmaps: ``x_{s+1} = x_s + conv1×1(lin(ConvBlock(HG(x_s))))``.
"""

from __future__ import annotations

from torch import Tensor, nn

BACKBONE_STYLES = ("wan", "newell")


class ConvBlock(nn.Module):
    """Pre-activation bottleneck residual (BN-ReLU-1×1 → BN-ReLU-3×3 → BN-ReLU-1×1) with projection skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
        )
        self.skip: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        # The skip is computed first: the body's in-place ReLUs must not touch ``x`` (they act on BN outputs).
        return self.skip(x) + self.body(x)


def downsample(style: str) -> nn.Module:
    """Stride-2 pooling: average pooling (Wan's hourglass) or max pooling (Newell's)."""
    return nn.AvgPool2d(2) if style == "wan" else nn.MaxPool2d(2)


def upsample(style: str, channels: int) -> nn.Module:
    """×2 upsampling: learned ConvTranspose k4 s2 p1 (Wan's) or nearest neighbour (Newell's)."""
    if style == "wan":
        return nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
    return nn.Upsample(scale_factor=2, mode="nearest")


class Hourglass(nn.Module):
    """One recursive hourglass: ``up1(x) + upsample(low3(inner(low1(pool(x)))))`` over ``depth`` levels."""

    def __init__(self, depth: int, channels: int, style: str = "wan") -> None:
        super().__init__()
        self.up1 = ConvBlock(channels, channels)
        self.pool = downsample(style)
        self.low1 = ConvBlock(channels, channels)
        self.inner: nn.Module = Hourglass(depth - 1, channels, style) if depth > 1 else ConvBlock(channels, channels)
        self.low3 = ConvBlock(channels, channels)
        self.up2 = upsample(style, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.up1(x) + self.up2(self.low3(self.inner(self.low1(self.pool(x)))))


PAPER_STEM_CHANNELS = (64, 128)


def stem(style: str, channels: int, stem_channels: tuple[int, int] = PAPER_STEM_CHANNELS) -> tuple[nn.Sequential, int]:
    """The input stem and its total stride (2 for Wan's 128-input stem, 4 for Newell's).

    ``stem_channels`` are the widths of the first conv and the first residual block: (64, 128) in both
    source designs; narrower stems keep tiny CPU models from spending most of their time at full resolution.
    """
    first, second = stem_channels
    if style == "wan":
        layers = [
            nn.Conv2d(3, first, 3, padding=1),
            ConvBlock(first, second),
            nn.MaxPool2d(2),
            ConvBlock(second, channels),
        ]
        return nn.Sequential(*layers), 2
    layers = [
        nn.Conv2d(3, first, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(first),
        nn.ReLU(inplace=True),
        ConvBlock(first, second),
        nn.MaxPool2d(2),
        ConvBlock(second, second),
        ConvBlock(second, channels),
    ]
    return nn.Sequential(*layers), 4


def post_stack_block(channels: int) -> nn.Sequential:
    """Residual + "lin" (1×1 conv, BN, ReLU) after each hourglass (Newell et al.); shared with hg_heatmap."""
    return nn.Sequential(
        ConvBlock(channels, channels),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


class StackedHourglass(nn.Module):
    """``stacks`` hourglasses over a stem; returns one ``(B, channels, S/stride, S/stride)`` map."""

    def __init__(
        self,
        *,
        stacks: int = 4,
        channels: int = 256,
        depth: int = 4,
        input_size: int = 128,
        style: str = "wan",
        stem_channels: tuple[int, int] = PAPER_STEM_CHANNELS,
    ) -> None:
        super().__init__()
        if style not in BACKBONE_STYLES:
            raise ValueError(f"backbone style must be one of {BACKBONE_STYLES}, got {style!r}")
        if stacks < 1 or depth < 1 or channels < 2:
            raise ValueError(f"need stacks >= 1, depth >= 1, channels >= 2; got {stacks=}, {depth=}, {channels=}")
        self.stem, self.stride = stem(style, channels, tuple(stem_channels))
        self.out_size = input_size // self.stride
        if input_size % self.stride or self.out_size % (2**depth):
            raise ValueError(
                f"input_size={input_size} does not fit the backbone: the {style!r} stem divides it by "
                f"{self.stride} and a depth-{depth} hourglass needs that divisible by {2**depth}; "
                f"use a multiple of {self.stride * 2**depth}"
            )
        self.channels = channels
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels, style) for _ in range(stacks))
        self.post = nn.ModuleList(post_stack_block(channels) for _ in range(stacks))
        self.merges = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1))

    def forward(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        for index, (hourglass, post) in enumerate(zip(self.hourglasses, self.post)):
            y = post(hourglass(x))
            if index == len(self.hourglasses) - 1:
                return y
            x = x + self.merges[index](y)
        raise AssertionError("unreachable: at least one stack")
