"""Cross-order Two-squeeze Multi-excitation module (CTM, paper §3.1, Eqs. 1–4).

Two squeezes summarise a feature map ``X`` (B, D, H, W) per channel:
- first order, Eq. 1: κˢᵗ = GAP(X);
- second order, Eq. 2: κⁿᵈ_d = (1/D) Σ_i Ŷ_{i,d}, the mean over one axis of the post-compensated
  matrix square root Ŷ of the channel covariance (iSQRT-COV, Li et al. 2018, ref. [39]).
P excitation blocks (Eq. 3) each own a first- and a second-order gate
``s^{p,ord} = Sigmoid(W_U^{p,ord} ReLU(W_V^{p,ord} κ^{ord}))`` (1×1 convs D→D/r→D) and output
``X̂ᵖ = s^{p,st}·X + s^{p,nd}·X`` (Eq. 4).

Because every gate is one number per channel, ``X̂ᵖ = gᵖ ⊙ X`` with ``gᵖ = s^{p,st} + s^{p,nd}``:
the module returns the gates and lets callers materialise maps only where they are needed
(GAP(X̂ᵖ) = gᵖ ⊙ κˢᵗ exactly, which makes the COCS terms at T and T−1 cheap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

ORDERS = ("st", "nd")
COVARIANCE_DIVISORS = ("M", "M-1")


def covariance(x: Tensor, *, divisor: str = "M") -> Tensor:
    """Channel covariance ``(B, D, D)`` of ``x`` (B, D, H, W) over its M = H·W positions.

    Computed as a centred batched matmul — never the M×M centring matrix of the reference code.
    ``divisor="M"`` is the reference (biased) estimator; ``"M-1"`` the unbiased one.
    """
    if divisor not in COVARIANCE_DIVISORS:
        raise ValueError(f"covariance divisor must be one of {COVARIANCE_DIVISORS}, got {divisor!r}")
    batch, channels = x.shape[:2]
    flat = x.reshape(batch, channels, -1)
    positions = flat.shape[-1]
    denominator = positions - 1 if divisor == "M-1" else positions
    if denominator < 1:
        raise ValueError(f"covariance needs at least {2 if divisor == 'M-1' else 1} positions, got {positions}")
    centred = flat - flat.mean(dim=2, keepdim=True)
    return torch.bmm(centred, centred.transpose(1, 2)) / denominator


def newton_schulz_sqrt(a: Tensor, iterations: int) -> Tensor:
    """Y_N ≈ A^{1/2} for trace-normalised SPD ``a`` (B, D, D) by the coupled Newton–Schulz iteration.

    Follows fast-MPN-COV's schedule: N−1 coupled (Y, Z) steps and a final Y-only step, so N matrix
    products of the full iteration are computed and no Z_N is wasted. N < 2 gives ½A(3I − A).
    """
    if iterations < 1:
        raise ValueError(f"Newton–Schulz needs iterations >= 1, got {iterations}")
    identity = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    three_i = 3.0 * identity
    if iterations < 2:
        return 0.5 * a.bmm(three_i - a)
    t = 0.5 * (three_i - a)
    y = a.bmm(t)
    z = t
    for _ in range(iterations - 2):
        t = 0.5 * (three_i - z.bmm(y))
        y = y.bmm(t)
        z = t.bmm(z)
    return 0.5 * y.bmm(three_i - z.bmm(y))


def isqrt_cov(x: Tensor, iterations: int = 5, *, divisor: str = "M", eps: float = 1e-12) -> Tensor:
    """iSQRT-COV: the post-compensated square root Ŷ ``(B, D, D)`` of the covariance of ``x`` (B, D, H, W).

    Steps (docs/research/method.md §1): covariance Σ (divisor M), pre-normalisation A = Σ / tr Σ,
    Newton–Schulz for A^{1/2}, post-compensation Ŷ = √(tr Σ) · Y_N. Runs in at least float32 with
    autocast disabled: the iteration is ill-conditioned in half precision.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        sigma = covariance(x.to(dtype), divisor=divisor)
        trace = sigma.diagonal(dim1=1, dim2=2).sum(dim=1).clamp_min(eps)
        y = newton_schulz_sqrt(sigma / trace.view(-1, 1, 1), iterations)
        return y * trace.sqrt().view(-1, 1, 1)


def first_order_squeeze(x: Tensor) -> Tensor:
    """κˢᵗ (Eq. 1): global average pooling, ``(B, D)``."""
    return x.mean(dim=(2, 3))


def second_order_squeeze(x: Tensor, iterations: int = 5, *, divisor: str = "M") -> Tensor:
    """κⁿᵈ (Eq. 2): mean over one axis of Ŷ = iSQRT-COV(x), ``(B, D)`` (Ŷ is symmetric: either axis)."""
    return isqrt_cov(x, iterations, divisor=divisor).mean(dim=1)


class ExcitationGate(nn.Module):
    """One gate of Eq. 3: ``Sigmoid(W_U ReLU(W_V κ))`` with 1×1 convs D_in → D/r → D."""

    def __init__(self, in_channels: int, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze_to_hidden = nn.Conv2d(in_channels, hidden, 1)  # W_V
        self.hidden_to_gate = nn.Conv2d(hidden, channels, 1)  # W_U

    def forward(self, kappa: Tensor) -> Tensor:
        hidden = torch.relu(self.squeeze_to_hidden(kappa[:, :, None, None]))
        return torch.sigmoid(self.hidden_to_gate(hidden)).flatten(1)


@dataclass
class CTMOutput:
    """What one CTM computes for ``x``: per-excitation channel gates and the first-order squeeze.

    ``gates``: (B, P, D), gᵖ = s^{p,st} (+ s^{p,nd}); X̂ᵖ = gᵖ ⊙ x (Eq. 4).
    ``kappa_st``: (B, D), GAP(x); GAP(X̂ᵖ) = gᵖ ⊙ kappa_st.
    """

    gates: Tensor
    kappa_st: Tensor

    def excitation_maps(self, x: Tensor) -> Tensor:
        """X̂ᵖ for all p, ``(B, P, D, H, W)``."""
        return self.gates[:, :, :, None, None] * x[:, None]

    def pooled(self) -> Tensor:
        """fᵖ = GAP(X̂ᵖ) for all p, ``(P, B, D)``: the features the COCS regulariser correlates (Eq. 5)."""
        return (self.gates * self.kappa_st[:, None]).transpose(0, 1)


class CrossOrderTwoSqueezeMultiExcitation(nn.Module):
    """The CTM of Fig. 3 with ``num_excitations`` blocks and the squeezes named in ``orders``.

    ``orders=("st",)`` is FCDN's first-order-only CTM: it builds no second-order parameters at all.
    ``gcp_channels`` optionally reduces D before the covariance (1×1 conv + BN + ReLU, as fast-MPN-COV
    does for 2048-channel ResNets); ``None`` (default) uses the D channels directly.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_excitations: int = 4,
        orders: tuple[str, ...] = ORDERS,
        reduction: int = 4,
        isqrt_iterations: int = 5,
        gcp_channels: int | None = None,
        covariance_divisor: str = "M",
    ) -> None:
        super().__init__()
        unknown = [o for o in orders if o not in ORDERS]
        if unknown or not orders:
            raise ValueError(f"orders must be a non-empty subset of {ORDERS}, got {orders!r}")
        if num_excitations < 1:
            raise ValueError(f"num_excitations (P) must be >= 1, got {num_excitations}")
        if covariance_divisor not in COVARIANCE_DIVISORS:
            raise ValueError(f"covariance_divisor must be one of {COVARIANCE_DIVISORS}, got {covariance_divisor!r}")
        self.orders = tuple(orders)
        self.num_excitations = num_excitations
        self.isqrt_iterations = isqrt_iterations
        self.covariance_divisor = covariance_divisor
        self.gcp_reduce: nn.Module | None = None
        second_order_dim = channels
        if "nd" in self.orders and gcp_channels is not None:
            self.gcp_reduce = nn.Sequential(
                nn.Conv2d(channels, gcp_channels, 1, bias=False), nn.BatchNorm2d(gcp_channels), nn.ReLU(inplace=True)
            )
            second_order_dim = gcp_channels
        self.first_order_gates = nn.ModuleList(
            ExcitationGate(channels, channels, reduction) for _ in range(num_excitations)
        ) if "st" in self.orders else None
        self.second_order_gates = nn.ModuleList(
            ExcitationGate(second_order_dim, channels, reduction) for _ in range(num_excitations)
        ) if "nd" in self.orders else None

    def second_order_kappa(self, x: Tensor) -> Tensor:
        """κⁿᵈ of ``x`` (after the optional channel reduction)."""
        source = self.gcp_reduce(x) if self.gcp_reduce is not None else x
        return second_order_squeeze(source, self.isqrt_iterations, divisor=self.covariance_divisor)

    def forward(self, x: Tensor) -> CTMOutput:
        kappa_st = first_order_squeeze(x)
        gates = torch.zeros(x.shape[0], self.num_excitations, x.shape[1], dtype=kappa_st.dtype, device=x.device)
        if self.first_order_gates is not None:
            gates = gates + torch.stack([gate(kappa_st) for gate in self.first_order_gates], dim=1)
        if self.second_order_gates is not None:
            kappa_nd = self.second_order_kappa(x)
            gates = gates + torch.stack([gate(kappa_nd) for gate in self.second_order_gates], dim=1)
        return CTMOutput(gates=gates.to(x.dtype), kappa_st=kappa_st)
