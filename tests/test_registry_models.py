"""Every registered model (ccdn, fcdn, baseline and all of baselines/) trains on CPU at a small size.

Parametrised over ``list_models()`` so a newly registered model is tested without editing this file
(timm-style). Nothing may download weights: sockets are blocked, the Hugging Face Hub is put offline
and every ``timm.create_model`` call is checked for ``pretrained=False``.
"""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from ccdn.losses import compute_loss
from ccdn.models import create_model, list_models

NUM_LANDMARKS = 5
BATCH = 2
INPUT_SIZE = 64
# The common recipe at the small CPU size (Contract 3); every model must accept all of it.
SMALL_OPTIONS = {"stacks": 1, "channels": 16, "input_size": INPUT_SIZE, "num_excitations": 2}
KNOWN_LOSSES = {"l2", "l1", "wing", "awing"}

# "timm/*" is the lazy resolver of any timm name, not a model (exercised in tests/test_baselines.py);
# "test/*" names are fixtures other test files register (tests/conftest.py), not shipped models.
MODEL_NAMES = [name for name in list_models() if "*" not in name and not name.startswith("test/")]


class NetworkAttempt(AssertionError):
    """Raised when code under test tries to open a connection."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Block sockets, put the HF Hub offline, and record the kwargs of every ``timm.create_model`` call."""
    import huggingface_hub.constants
    import timm

    def refuse(*args, **kwargs):
        raise NetworkAttempt(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    calls: list[dict] = []
    real_create = timm.create_model

    def recording_create(*args, **kwargs):
        calls.append(dict(kwargs, model_name=args[0] if args else kwargs.get("model_name")))
        return real_create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording_create)
    return calls


def test_registry_lists_core_models_and_baselines():
    names = set(MODEL_NAMES)
    assert {"ccdn", "fcdn", "baseline", "hg_heatmap"} <= names
    assert {"timm/resnet18", "timm/resnet50", "timm/hrnet_w18_small_v2", "timm/convnext_tiny"} <= names


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_small_cpu(name: str, no_network: list[dict]):
    torch.manual_seed(0)
    model = create_model(name, num_landmarks=NUM_LANDMARKS, **SMALL_OPTIONS)
    model.train()
    images = torch.rand(BATCH, 3, INPUT_SIZE, INPUT_SIZE)
    target = torch.rand(BATCH, NUM_LANDMARKS, 2)

    output = model(images)

    landmarks = output["landmarks"]
    assert landmarks.shape == (BATCH, NUM_LANDMARKS, 2)
    assert torch.isfinite(landmarks).all()
    assert landmarks.min() >= 0.0 and landmarks.max() <= 1.0
    assert isinstance(output["cocs"], dict)
    assert model.default_loss in KNOWN_LOSSES
    if "features" in output:  # GAP + linear head models: the CAM contract
        assert output["features"].dim() == 4 and output["features"].shape[0] == BATCH
        assert isinstance(model.head, nn.Linear)
        assert model.head.in_features == output["features"].shape[1]
        assert model.head.out_features == 2 * NUM_LANDMARKS
    if "heatmaps" in output:
        heatmaps = output["heatmaps"]
        assert heatmaps.dim() == 5 and heatmaps.shape[:3] == (BATCH, SMALL_OPTIONS["stacks"], NUM_LANDMARKS)
        assert model.default_loss == "awing"

    losses = compute_loss(output, target, coord_loss="l2")
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)

    assert all(call.get("pretrained") is False for call in no_network), no_network
    if name.startswith("timm/"):
        assert [call["model_name"] for call in no_network] == [name.split("/", 1)[1]]
