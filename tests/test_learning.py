"""The engine learns: every registered model overfits 8 synthetic faces, and the mean-shape reference
equals an independent numpy computation (issue 9, item 4).

A model that cannot drive the error on 8 faces near zero has a broken forward, loss, head or
optimiser wiring; these tests fail for that, not for being slow. The fitted function is judged in
training mode (BatchNorm on the batch's own statistics), since that is the function the steps fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ccdn.data import LandmarkDataset, load_split
from ccdn.data.dataset import mean_shape
from ccdn.data.schemes import get_scheme
from ccdn.losses import compute_loss
from ccdn.models import create_model, list_models
from ccdn.models.registry import model_info
from ccdn.models.head_init import init_head_to_shape

OVERFIT_TARGET = 3.0  # percent inter-ocular NME on the 8 training faces
FACES = 8
# Small sizes that still leave a 68-point face resolvable; steps are a fixed budget, not a time.
DEFAULT_OPTIONS = {"stacks": 1, "channels": 16, "stem_channels": [16, 16], "input_size": 32, "num_excitations": 2}
PER_MODEL = {
    "hg_heatmap": ({"input_size": 64, "channels": 32}, 400, 5e-3),  # 32x32 heatmaps, DARK decoding
    "timm/convnext_tiny": ({}, 260, 3e-3),  # LayerNorm, no BatchNorm: slower to fit 8 faces
    "timm/resnet50": ({}, 150, 3e-3),  # fits in ~80 steps; the largest backbone, so the fewest steps
}
STEPS, LR = 200, 3e-3


def _batch(split_root: Path, input_size: int) -> dict[str, torch.Tensor]:
    split = load_split(split_root, "train")
    dataset = LandmarkDataset(split, input_size, None, indices=np.arange(FACES))
    items = [dataset[i] for i in range(FACES)]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in ("image", "landmarks")}


def _inter_ocular_nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Independent of ccdn.metrics: mean point error over the outer-eye-corner distance, percent."""
    left, right = get_scheme("68").inter_ocular
    distance = np.linalg.norm(gt[:, left] - gt[:, right], axis=-1)
    return float(100 * (np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / distance).mean())


def _options(name: str) -> tuple[dict, int, float]:
    extra, steps, lr = PER_MODEL.get(name, ({}, STEPS, LR))
    options = {**DEFAULT_OPTIONS, **extra}
    if name.startswith("timm/"):
        options = {k: v for k, v in options.items() if k in ("input_size",)}
        options.pop("input_size", None)
    if name == "hg_heatmap":
        options.pop("num_excitations")
    return options, steps, lr


def registered_models() -> list[str]:
    """Every model the package registers (``test/*`` names are test doubles that other test modules add,
    e.g. a constant predictor, which by design cannot fit anything); ``mean_shape`` is checked below."""
    return [n for n in list_models() if not n.startswith("test/") and model_info(n).needs_training]


@pytest.mark.parametrize("name", registered_models())
def test_every_model_overfits_eight_faces(name: str, tiny_300w: Path, single_thread):
    options, steps, lr = _options(name)
    input_size = PER_MODEL.get(name, ({}, 0, 0))[0].get("input_size", DEFAULT_OPTIONS["input_size"])
    batch = _batch(tiny_300w, input_size)
    torch.manual_seed(0)
    model = create_model(name, 68, **options)
    init_head_to_shape(model, batch["landmarks"].mean(0).numpy())
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        losses = compute_loss(model(batch["image"]), batch["landmarks"], coord_loss=model.default_loss
                              if model.default_loss in ("l2", "l1", "wing") else "l2")
        optimiser.zero_grad()
        losses["total"].backward()
        optimiser.step()
    with torch.no_grad():  # still in training mode: BatchNorm uses the batch it was fitted on
        pred = model(batch["image"])["landmarks"].numpy()
    error = _inter_ocular_nme(pred, batch["landmarks"].numpy())
    assert error <= OVERFIT_TARGET, f"{name}: {error:.2f}% inter-ocular NME on its 8 training faces after {steps} steps"


def test_mean_shape_model_predicts_the_numpy_mean(tiny_300w: Path):
    split = load_split(tiny_300w, "train")
    side = split.images.shape[1] / split.cache_margin
    offset = (split.images.shape[1] - side) / 2 - 0.5  # pixel centres: crop edge at -0.5 (Contract 2 geometry)
    expected = ((split.landmarks.astype(np.float64) - offset) / side).mean(axis=0)
    np.testing.assert_allclose(mean_shape(split), expected, atol=1e-6)
    model = create_model("mean_shape", 68, stacks=4, input_size=128)  # recipe options are accepted and ignored
    assert init_head_to_shape(model, mean_shape(split))
    with torch.no_grad():
        pred = model(torch.rand(3, 3, 32, 32))["landmarks"].numpy()
    np.testing.assert_allclose(pred, np.broadcast_to(expected, (3, 68, 2)), atol=1e-6)


def test_the_overfit_check_covers_every_package_model():
    names = registered_models()
    assert {"baseline", "fcdn", "ccdn", "hg_heatmap", "timm/resnet18"} <= set(names)
    assert not [n for n in names if n.startswith("test/")] and "mean_shape" not in names
