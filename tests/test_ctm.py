"""CTM (Eqs. 1–4): iSQRT-COV against independent references, gradients, and the excitation algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccdn.models.ctm import (
    CrossOrderTwoSqueezeMultiExcitation,
    covariance,
    first_order_squeeze,
    isqrt_cov,
    second_order_squeeze,
)


def relu_features(batch: int, channels: int, size: int, *, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """ReLU-like random maps, as a CNN would produce."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=generator, dtype=dtype).relu() + 0.1


def reference_newton_schulz(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Textbook coupled Newton–Schulz, written independently: N full (Y, Z) updates, Y_N returned."""
    results = []
    for sample in x:
        m = sample.reshape(sample.shape[0], -1).double()
        m = m - m.mean(dim=1, keepdim=True)
        sigma = m @ m.T / m.shape[1]
        trace = torch.trace(sigma)
        y = sigma / trace
        z = torch.eye(sigma.shape[0], dtype=sigma.dtype)
        for _ in range(iterations):
            t = 0.5 * (3 * torch.eye(sigma.shape[0], dtype=sigma.dtype) - z @ y)
            y, z = y @ t, t @ z
        results.append(torch.sqrt(trace) * y)
    return torch.stack(results)


def eigh_sqrt_cov(x: np.ndarray) -> np.ndarray:
    """Exact principal square root of the (biased) covariance by eigendecomposition."""
    out = []
    for sample in x:
        m = sample.reshape(sample.shape[0], -1)
        sigma = np.cov(m, bias=True)
        values, vectors = np.linalg.eigh(sigma)
        out.append(vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T)
    return np.stack(out)


def test_covariance_matches_numpy_biased_estimator():
    x = relu_features(2, 5, 4)
    expected = np.stack([np.cov(s.reshape(5, -1).numpy(), bias=True) for s in x])
    np.testing.assert_allclose(covariance(x).numpy(), expected, rtol=1e-12, atol=1e-14)
    unbiased = np.stack([np.cov(s.reshape(5, -1).numpy()) for s in x])
    np.testing.assert_allclose(covariance(x, divisor="M-1").numpy(), unbiased, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5, 8])
def test_isqrt_cov_equals_independent_newton_schulz(iterations):
    x = relu_features(3, 6, 5, seed=iterations)
    np.testing.assert_allclose(
        isqrt_cov(x, iterations).numpy(), reference_newton_schulz(x, iterations).numpy(), rtol=1e-10, atol=1e-12
    )


def test_isqrt_cov_converges_to_eigendecomposition_sqrt():
    x = relu_features(2, 8, 6, seed=3)  # M = 36 > D = 8: full-rank covariance
    approx = isqrt_cov(x, iterations=30).numpy()
    exact = eigh_sqrt_cov(x.numpy())
    relative = np.linalg.norm(approx - exact, axis=(1, 2)) / np.linalg.norm(exact, axis=(1, 2))
    assert relative.max() < 1e-6
    # ... and 5 iterations are far from converged (why tests never compare 5 iterations to sqrtm).
    five = isqrt_cov(x, iterations=5).numpy()
    assert (np.linalg.norm(five - exact, axis=(1, 2)) / np.linalg.norm(exact, axis=(1, 2))).max() > 1e-3


def test_isqrt_cov_is_float32_under_autocast_and_matches_full_precision():
    x = relu_features(2, 8, 6, seed=4, dtype=torch.float32)
    reference = isqrt_cov(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = isqrt_cov(x.to(torch.bfloat16))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, isqrt_cov(x.to(torch.bfloat16).float()))
    assert torch.allclose(inside, reference, rtol=0.05, atol=1e-2)


def test_isqrt_cov_gradcheck_float64():
    x = relu_features(2, 3, 3, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: isqrt_cov(t, iterations=5), (x,))


def test_ctm_gradcheck_float64():
    torch.manual_seed(0)
    ctm = CrossOrderTwoSqueezeMultiExcitation(4, num_excitations=2, reduction=2).double()
    x = relu_features(2, 4, 3, seed=6).requires_grad_()

    def excitation_maps(t: torch.Tensor) -> torch.Tensor:
        return ctm(t).excitation_maps(t)

    assert torch.autograd.gradcheck(excitation_maps, (x,))


def test_second_order_kappa_is_mean_over_either_axis_of_y_hat():
    x = relu_features(2, 6, 4, seed=7)
    y_hat = isqrt_cov(x)
    torch.testing.assert_close(y_hat, y_hat.transpose(1, 2))
    torch.testing.assert_close(second_order_squeeze(x), y_hat.sum(dim=2) / 6)
    torch.testing.assert_close(first_order_squeeze(x), x.flatten(2).mean(dim=2))


def test_excitations_follow_eqs_3_and_4():
    torch.manual_seed(1)
    ctm = CrossOrderTwoSqueezeMultiExcitation(8, num_excitations=3).double()
    x = relu_features(2, 8, 4, seed=8)
    out = ctm(x)
    kappa_st = x.mean(dim=(2, 3))
    kappa_nd = isqrt_cov(x).mean(dim=1)
    for p in range(3):
        first, second = ctm.first_order_gates[p], ctm.second_order_gates[p]
        assert first.squeeze_to_hidden.out_channels == 2 and first.hidden_to_gate.out_channels == 8  # D→D/4→D
        s_st = torch.sigmoid(first.hidden_to_gate(torch.relu(first.squeeze_to_hidden(kappa_st[..., None, None]))))
        s_nd = torch.sigmoid(second.hidden_to_gate(torch.relu(second.squeeze_to_hidden(kappa_nd[..., None, None]))))
        expected = s_st * x + s_nd * x  # Eq. 4: X̂ᵖ = X^{p,st} + X^{p,nd}
        torch.testing.assert_close(out.excitation_maps(x)[:, p], expected)
    # GAP(X̂ᵖ) = gᵖ ⊙ GAP(X): the pooled features used by COCS need no maps.
    torch.testing.assert_close(out.pooled(), out.excitation_maps(x).mean(dim=(3, 4)).transpose(0, 1))


def test_excitation_blocks_are_independent_and_differ():
    torch.manual_seed(2)
    ctm = CrossOrderTwoSqueezeMultiExcitation(8, num_excitations=2)
    gates = ctm(relu_features(2, 8, 4, dtype=torch.float32)).gates
    assert gates.shape == (2, 2, 8)
    assert not torch.allclose(gates[:, 0], gates[:, 1])
    assert ((gates > 0) & (gates < 2)).all()  # two sigmoids


def test_first_order_ctm_has_no_second_order_parameters():
    ctm = CrossOrderTwoSqueezeMultiExcitation(8, num_excitations=2, orders=("st",), gcp_channels=4)
    names = [name for name, _ in ctm.named_parameters()]
    assert names and all(name.startswith("first_order_gates") for name in names)
    gates = ctm(relu_features(1, 8, 4, dtype=torch.float32)).gates
    assert ((gates > 0) & (gates < 1)).all()  # one sigmoid only


def test_gcp_channel_reduction_feeds_second_order_gates():
    ctm = CrossOrderTwoSqueezeMultiExcitation(8, num_excitations=2, gcp_channels=4)
    assert ctm.second_order_gates[0].squeeze_to_hidden.in_channels == 4
    assert ctm(relu_features(2, 8, 4, dtype=torch.float32)).gates.shape == (2, 2, 8)


def test_bad_ctm_arguments_are_rejected():
    with pytest.raises(ValueError, match="orders"):
        CrossOrderTwoSqueezeMultiExcitation(8, orders=("rd",))
    with pytest.raises(ValueError, match="num_excitations"):
        CrossOrderTwoSqueezeMultiExcitation(8, num_excitations=0)
    with pytest.raises(ValueError, match="iterations"):
        isqrt_cov(relu_features(1, 3, 2), iterations=0)
