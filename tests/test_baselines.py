"""baselines/: heatmap decoding, the heatmap hourglass's intermediate supervision, timm name resolution.

Everything runs on CPU at 64 px with tiny widths; sockets are blocked so nothing can download weights.
"""

from __future__ import annotations

import math
import socket

import pytest
import torch

from baselines.heatmap_hourglass import HeatmapHourglass, decode_heatmaps
from baselines.timm_regressor import PretrainedWeightsUnavailable, TimmLandmarkRegressor
from ccdn.config import load_config
from ccdn.losses import compute_loss, render_heatmaps
from ccdn.models import create_model, list_models
from ccdn.models.cam import face_activation_map

SMALL_HG = {"stacks": 2, "channels": 16, "input_size": 64}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test; the Hugging Face Hub is offline."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _interior_landmarks(count: int, margin: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return margin + (1 - 2 * margin) * torch.rand(1, count, 2, generator=generator)


# ------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_dark_decoding_recovers_subpixel_peaks(sigma: float):
    size = (24, 32)  # (h, w), non-square so that swapped x/y would show
    landmarks = _interior_landmarks(50, margin=0.1)
    heatmaps = render_heatmaps(landmarks, size, sigma)

    decoded = decode_heatmaps(heatmaps, "dark")

    error_px = (decoded - landmarks) * torch.tensor([size[1], size[0]])
    assert error_px.abs().max() < 1e-3  # exact for a Gaussian up to float32 rounding
    # the peaks really are off the pixel centres, so plain arg-max would be off by up to 0.5 px
    argmax_error = (heatmaps.flatten(-2).argmax(-1) % size[1] + 0.5) / size[1] - landmarks[..., 0]
    assert (argmax_error.abs() * size[1]).max() > 0.3


def test_integral_decoding_is_subpixel_and_differentiable():
    size = 32
    landmarks = _interior_landmarks(50, margin=0.15, seed=1)
    heatmaps = render_heatmaps(landmarks, size, 1.0).requires_grad_(True)

    decoded = decode_heatmaps(heatmaps, "integral", radius=3)

    assert ((decoded - landmarks) * size).abs().max() < 0.01
    decoded[..., 0].sum().backward()
    assert heatmaps.grad is not None and heatmaps.grad.abs().sum() > 0


def test_decoding_degenerate_maps_stays_in_crop():
    lone = torch.zeros(1, 1, 8, 8)
    lone[0, 0, 2, 5] = 1.0  # every neighbour equal: no curvature, no offset -> the pixel centre
    assert torch.allclose(decode_heatmaps(lone, "dark"), torch.tensor([[[5.5 / 8, 2.5 / 8]]]))
    noise = torch.randn(3, 7, 16, 16, generator=torch.Generator().manual_seed(2))
    for decoder in ("dark", "integral"):
        decoded = decode_heatmaps(noise, decoder)
        assert decoded.shape == (3, 7, 2) and torch.isfinite(decoded).all()
        assert decoded.min() >= 0 and decoded.max() <= 1
    with pytest.raises(ValueError, match="decoder"):
        decode_heatmaps(noise, "argmin")


# --------------------------------------------------------------------------------- hg_heatmap
def test_hg_heatmap_intermediate_supervision():
    torch.manual_seed(0)
    model = create_model("hg_heatmap", num_landmarks=3, num_excitations=4, **SMALL_HG)
    images = torch.rand(2, 3, 64, 64)

    output = model(images)

    assert isinstance(model, HeatmapHourglass) and model.default_loss == "awing"
    assert output["heatmaps"].shape == (2, 2, 3, 32, 32)  # (B, stacks, L, 64/2, 64/2)
    assert torch.equal(output["landmarks"], decode_heatmaps(output["heatmaps"][:, -1], "dark"))
    assert output["cocs"] == {}
    # stack 0's heatmaps are supervised through their own head; the last head does not feed them
    output["heatmaps"][:, 0].square().sum().backward()
    assert model.heatmap_heads[0].weight.grad.abs().sum() > 0
    last_grad = model.heatmap_heads[1].weight.grad
    assert last_grad is None or not last_grad.any()


def test_hg_heatmap_loss_supervises_every_stack():
    torch.manual_seed(0)
    model = create_model("hg_heatmap", num_landmarks=3, **SMALL_HG)
    output = model(torch.rand(2, 3, 64, 64))
    target = torch.rand(2, 3, 2)

    losses = compute_loss(output, target)
    per_stack = [
        compute_loss({**output, "heatmaps": output["heatmaps"][:, s : s + 1]}, target)["heatmap"] for s in range(2)
    ]

    assert torch.allclose(losses["heatmap"], per_stack[0] + per_stack[1])
    losses["total"].backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in model.heatmap_heads)


def test_hg_heatmap_sizes_and_bad_options():
    newell = create_model("hg_heatmap", num_landmarks=2, stacks=1, channels=16, input_size=64, style="newell")
    assert newell.eval()(torch.rand(1, 3, 64, 64))["heatmaps"].shape == (1, 1, 2, 16, 16)  # stride 4 stem
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("hg_heatmap", num_landmarks=2, stacks=1, channels=16, input_size=48)
    with pytest.raises(ValueError, match="decoder"):
        create_model("hg_heatmap", num_landmarks=2, decoder="median", **SMALL_HG)


def test_hg_heatmap_has_no_activation_maps():
    model = create_model("hg_heatmap", num_landmarks=2, stacks=1, channels=16, input_size=64)
    assert not hasattr(model, "head")
    assert "features" not in model(torch.rand(1, 3, 64, 64))
    with pytest.raises(TypeError, match="head"):
        face_activation_map(model, torch.rand(1, 3, 64, 64))


# ------------------------------------------------------------------------------- timm models
def test_lazy_timm_name_resolution():
    name = "timm/mobilenetv3_small_050"
    assert name not in list_models()

    model = create_model(name, num_landmarks=4, input_size=64, stacks=1, channels=16, num_excitations=2)

    assert isinstance(model, TimmLandmarkRegressor) and model.timm_name == "mobilenetv3_small_050"
    assert model.default_loss == "l2"
    output = model(torch.rand(2, 3, 64, 64))
    assert output["landmarks"].shape == (2, 4, 2) and output["cocs"] == {}
    # the head sits on GAP(features): exactly what face activation maps need
    assert torch.allclose(output["landmarks"].flatten(1), model.head(output["features"].mean(dim=(2, 3))))
    assert face_activation_map(model, torch.rand(1, 3, 64, 64)).shape == (1, *output["features"].shape[-2:])


def test_unknown_timm_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown timm model 'resnt50'.*resnet50"):
        create_model("timm/resnt50", num_landmarks=5)


def test_timm_options_ignored_and_unknown():
    model = create_model("timm/resnet18", num_landmarks=2, output_activation="sigmoid", input_size=999)
    landmarks = model(torch.rand(1, 3, 64, 64))["landmarks"]
    assert torch.allclose(landmarks, torch.full_like(landmarks, 0.5), atol=0.05)  # sigmoid of a ~0 logit
    with pytest.raises(TypeError, match="'widht'.*known options"):
        create_model("timm/resnet18", num_landmarks=2, widht=3)


def test_hrnet_fuses_all_branches():
    model = create_model("timm/hrnet_w18_small_v2", num_landmarks=2)
    features = model(torch.rand(1, 3, 64, 64))["features"]
    assert model.feature_levels == "all"
    assert features.shape == (1, 18 + 36 + 72 + 144, 16, 16)  # HRNetV2: branches at stride 4, concatenated


def test_pretrained_without_network_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=true needs network access"):
        create_model("timm/resnet18", num_landmarks=2, pretrained=True, timm_kwargs={"cache_dir": str(tmp_path)})


# ---------------------------------------------------------------------------- loss per model
@pytest.mark.parametrize("coord", ["l1", "wing"])
def test_coordinate_loss_selected_in_config_for_a_baseline(coord: str):
    config = load_config(overrides=[
        "model.name=timm/resnet18",
        f"loss.coord={coord}",
        "model.options={stacks: 1, channels: 16, input_size: 64, num_excitations: 2}",
    ])
    model = create_model(config["model"]["name"], num_landmarks=3, **config["model"]["options"])
    output = model(torch.rand(2, 3, 64, 64))
    target = torch.rand(2, 3, 2)

    losses = compute_loss(output, target, coord_loss=config["loss"]["coord"], gammas=config["loss"]["gammas"])

    error = (output["landmarks"] - target).detach().abs()
    if coord == "l1":
        expected = error.sum(dim=(1, 2)).mean()
    else:  # Wing, omega=10, epsilon=2, on errors in 128-px crop units
        pixels = error * 128
        c = 10 - 10 * math.log(1 + 10 / 2)
        per = torch.where(pixels < 10, 10 * torch.log(1 + pixels / 2), pixels - c)
        expected = per.sum(dim=(1, 2)).mean()
    assert torch.allclose(losses["coord"], expected, rtol=1e-5)
    assert set(losses) == {"coord", "total"}  # no COCS terms for a baseline


def test_dark_landmarks_carry_no_gradient_and_integral_ones_do():
    heatmaps = render_heatmaps(_interior_landmarks(3, margin=0.2), 16, 1.0).requires_grad_(True)
    assert not decode_heatmaps(heatmaps, "dark").requires_grad
    model = create_model("hg_heatmap", num_landmarks=3, decoder="integral", **SMALL_HG)
    output = model(torch.rand(2, 3, 64, 64))
    losses = compute_loss(output, torch.rand(2, 3, 2), heatmap_weight=0.0, heatmap_coord_weight=1.0)
    losses["total"].backward()  # only the decoded coordinates are supervised here
    assert model.heatmap_heads[-1].weight.grad.abs().sum() > 0
