"""Losses: COCS (Eqs. 5, 6), L2/L1/Wing/AWing against hand-computed values, and the Eq. 9 objective."""

from __future__ import annotations

import math

import pytest
import torch

from ccdn.losses import (
    adaptive_wing,
    adaptive_wing_loss,
    compute_loss,
    correlation_matrix,
    cross_semantic_loss,
    l1_loss,
    l2_loss,
    render_heatmaps,
    wing,
    wing_loss,
)


# ------------------------------------------------------------------------------------------ COCS
def test_cross_semantic_loss_is_zero_for_orthogonal_excitations():
    # P = 3 excitations, B = 4 images, D = 5: excitation p always activates channel p only.
    features = torch.zeros(3, 4, 5)
    for p in range(3):
        features[p, :, p] = torch.rand(4) + 0.5
    for mode in ("batch", "per_sample"):
        q = correlation_matrix(features, mode=mode)
        assert float(cross_semantic_loss(q)) == pytest.approx(0.0, abs=1e-12)


def test_cross_semantic_loss_hand_computed_batch_case():
    # p0: b0 (3, 4) → (0.6, 0.8), b1 (1, 0);  p1: b0 (0, 2) → (0, 1), b1 (0, 1).
    features = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)
    # Eq. 5: Q = (1/B²) Σ FᵀF = mean_p · mean_p'; mean_0 = (0.8, 0.4), mean_1 = (0, 1).
    q = correlation_matrix(features)
    torch.testing.assert_close(q, torch.tensor([[0.8, 0.4], [0.4, 1.0]], dtype=torch.float64))
    # Eq. 6: (‖Q‖² − ‖diag‖²) / ‖diag‖² = 2·0.16 / (0.64 + 1).
    assert float(cross_semantic_loss(q)) == pytest.approx(0.32 / 1.64, rel=1e-12)


def test_cross_semantic_loss_on_explicit_matrix():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert float(cross_semantic_loss(q)) == pytest.approx((4 + 9) / (1 + 16))
    stacked = torch.stack([q, torch.eye(2)])  # per-sample matrices are averaged
    assert float(cross_semantic_loss(stacked)) == pytest.approx((13 / 17 + 0) / 2)


def test_per_sample_cocs_equals_mean_squared_cosines():
    torch.manual_seed(0)
    features = torch.randn(4, 3, 6, dtype=torch.float64)
    q = correlation_matrix(features, mode="per_sample")
    assert q.shape == (3, 4, 4)
    torch.testing.assert_close(q.diagonal(dim1=1, dim2=2), torch.ones(3, 4, dtype=torch.float64))
    expected = []
    for b in range(3):
        f = torch.nn.functional.normalize(features[:, b], dim=1)
        pairs = [float(f[i] @ f[j]) ** 2 for i in range(4) for j in range(i + 1, 4)]
        expected.append(2 / 4 * sum(pairs))  # L = (2/P) Σ_{i<j} cos²
    assert float(cross_semantic_loss(q)) == pytest.approx(sum(expected) / 3, rel=1e-12)


def test_correlation_matrix_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(P, B, D\)"):
        correlation_matrix(torch.rand(3, 4))
    with pytest.raises(ValueError, match="mode"):
        correlation_matrix(torch.rand(2, 3, 4), mode="pairs")
    with pytest.raises(ValueError, match="square"):
        cross_semantic_loss(torch.rand(2, 3))


# ------------------------------------------------------------------------------ coordinate losses
PRED = torch.tensor([[[0.1, 0.2], [3.0, 4.0]]], dtype=torch.float64)  # one small, one large error
TARGET = torch.zeros_like(PRED)


def test_l2_loss_hand_computed():
    assert float(l2_loss(PRED, TARGET)) == pytest.approx(0.01 + 0.04 + 9 + 16)
    assert float(l2_loss(PRED, TARGET, reduction="mean")) == pytest.approx((0.01 + 0.04 + 9 + 16) / 4)
    two_images = torch.cat([PRED, 2 * PRED])  # mean over images of per-image sums
    assert float(l2_loss(two_images, torch.zeros_like(two_images))) == pytest.approx(5 * 25.05 / 2)


def test_l1_loss_hand_computed():
    assert float(l1_loss(PRED, TARGET)) == pytest.approx(0.1 + 0.2 + 3 + 4)
    assert float(l1_loss(PRED, TARGET, scale=10)) == pytest.approx(1 + 2 + 30 + 40)


def test_wing_hand_computed_small_and_large_errors():
    small = 10 * math.log(1 + 1 / 2)  # |x| = 1 < ω: ω ln(1 + |x|/ε)
    large = 15 - (10 - 10 * math.log(1 + 10 / 2))  # |x| = 15 ≥ ω: |x| − C
    values = wing(torch.tensor([1.0, -1.0, 15.0], dtype=torch.float64))
    assert values.tolist() == pytest.approx([small, small, large], rel=1e-12)
    # continuous at |x| = ω
    edge = wing(torch.tensor([10 - 1e-9, 10 + 1e-9], dtype=torch.float64))
    assert float(edge[0]) == pytest.approx(float(edge[1]), abs=1e-6)
    pred = torch.tensor([[[1.0, 15.0]]], dtype=torch.float64)
    assert float(wing_loss(pred, torch.zeros_like(pred), scale=1.0)) == pytest.approx(small + large)
    # default scale: normalised errors are measured in pixels of the 128-px paper crop
    assert float(wing_loss(pred / 128, torch.zeros_like(pred))) == pytest.approx(small + large)


def awing_by_hand(y: float, y_hat: float, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1) -> float:
    delta = abs(y - y_hat)
    if delta < theta:
        return omega * math.log(1 + (delta / epsilon) ** (alpha - y))
    a = omega * (1 / (1 + (theta / epsilon) ** (alpha - y))) * (alpha - y) * (theta / epsilon) ** (alpha - y - 1) / epsilon
    c = theta * a - omega * math.log(1 + (theta / epsilon) ** (alpha - y))
    return a * delta - c


@pytest.mark.parametrize("y,y_hat", [(0.0, 0.2), (0.3, 0.35), (1.0, 0.2), (0.0, 0.9), (0.8, 0.0)])
def test_adaptive_wing_hand_computed(y, y_hat):
    value = adaptive_wing(torch.tensor([y_hat], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
    assert float(value) == pytest.approx(awing_by_hand(y, y_hat), rel=1e-12)


def test_adaptive_wing_numbers_at_small_and_large_errors():
    # small error, background pixel: 14 ln(1 + 0.2^2.1)
    assert awing_by_hand(0.0, 0.2) == pytest.approx(14 * math.log(1 + 0.2**2.1))
    assert awing_by_hand(0.0, 0.2) == pytest.approx(0.4688, abs=1e-4)  # 0.2^2.1 = 0.03405
    # large error at the peak: linear part A·0.8 − C with exponent 1.1
    assert awing_by_hand(1.0, 0.2) == pytest.approx(8.2998, abs=1e-4)  # A = 9.7976, C = -0.4615
    # continuous at θ
    for y in (0.0, 0.5, 1.0):
        below = adaptive_wing(torch.tensor([y + 0.5 - 1e-9], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
        above = adaptive_wing(torch.tensor([y + 0.5 + 1e-9], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
        assert float(below) == pytest.approx(float(above), abs=1e-6)


def test_adaptive_wing_loss_weight_map():
    target = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    target[0, 0, 2, 2] = 1.0
    pred = torch.full_like(target, 0.1)
    per_pixel = adaptive_wing(pred, target)
    weights = torch.ones_like(target)
    weights[0, 0, 1:4, 1:4] = 11.0  # 3×3 dilation of the peak exceeds 0.2 → W·M + 1 with W = 10
    assert float(adaptive_wing_loss(pred, target)) == pytest.approx(float((per_pixel * weights).mean()))
    assert float(adaptive_wing_loss(pred, target, weight=0)) == pytest.approx(float(per_pixel.mean()))


def test_render_heatmaps_peak_and_pixel_convention():
    landmarks = torch.tensor([[[2.5 / 8, 5.5 / 8], [0.0, 0.0]]])  # centre of pixel (x=2, y=5); the crop corner
    maps = render_heatmaps(landmarks, 8, sigma=1.0)
    assert maps.shape == (1, 2, 8, 8)
    assert float(maps[0, 0, 5, 2]) == pytest.approx(1.0)
    assert int(maps[0, 0].argmax()) == 5 * 8 + 2
    assert float(maps[0, 0, 5, 3]) == pytest.approx(math.exp(-0.5))
    assert float(maps[0, 1, 0, 0]) == pytest.approx(math.exp(-0.25))  # corner is half a pixel from (0, 0)
    assert render_heatmaps(landmarks, (4, 6), 1.0).shape == (1, 2, 4, 6)


# ------------------------------------------------------------------------------------- objective
def coordinate_output(landmarks: torch.Tensor, cocs: dict | None = None) -> dict:
    return {"landmarks": landmarks, "cocs": cocs or {}}


def test_compute_loss_is_eq9_with_every_term_separate():
    pred = torch.full((2, 3, 2), 0.5)
    target = torch.zeros(2, 3, 2)
    cocs = {"T": torch.tensor(1.0), "T-1": torch.tensor(2.0), "G": torch.tensor(4.0)}
    losses = compute_loss(coordinate_output(pred, cocs), target)
    assert set(losses) == {"total", "coord", "cocs_T", "cocs_T-1", "cocs_G"}
    assert float(losses["coord"]) == pytest.approx(6 * 0.25)
    assert float(losses["total"]) == pytest.approx(1.5 + 0.025 * 1 + 0.01 * 2 + 0.05 * 4)
    custom = compute_loss(coordinate_output(pred, cocs), target, gammas=[1, 1, 1], coord_loss="l1")
    assert float(custom["total"]) == pytest.approx(6 * 0.5 + 7)


def test_compute_loss_without_cocs_has_only_coordinate_terms():
    losses = compute_loss(coordinate_output(torch.zeros(1, 2, 2)), torch.ones(1, 2, 2), coord_loss="wing")
    assert set(losses) == {"total", "coord"}
    assert float(losses["total"]) == pytest.approx(4 * float(wing(torch.tensor(128.0))))


def test_compute_loss_heatmap_models_get_awing_on_rendered_targets():
    target = torch.tensor([[[0.3, 0.6]]])
    perfect = render_heatmaps(target, 8, sigma=1.0)
    output = {"landmarks": target.clone(), "cocs": {}, "heatmaps": torch.stack([perfect, 0 * perfect], dim=1)}
    losses = compute_loss(output, target)
    assert set(losses) == {"total", "coord", "heatmap"}
    expected = float(adaptive_wing_loss(torch.zeros_like(perfect), perfect))  # stack 1 is perfect → 0
    assert float(losses["heatmap"]) == pytest.approx(expected)
    assert float(losses["total"]) == pytest.approx(expected)  # heatmap_coord_weight = 0 by default


def test_compute_loss_rejects_bad_arguments():
    output = coordinate_output(torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="unknown loss option"):
        compute_loss(output, torch.zeros(1, 2, 2), wing_omgea=3)
    with pytest.raises(ValueError, match="coord_loss"):
        compute_loss(output, torch.zeros(1, 2, 2), coord_loss="huber")
    with pytest.raises(ValueError, match="gammas"):
        compute_loss(output, torch.zeros(1, 2, 2), gammas=(1, 2))
    with pytest.raises(ValueError, match="differ"):
        compute_loss(output, torch.zeros(1, 3, 2))
    with pytest.raises(KeyError, match="T-1"):
        compute_loss(coordinate_output(torch.zeros(1, 2, 2), {"T": torch.tensor(0.0)}), torch.zeros(1, 2, 2))
