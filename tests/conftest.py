"""Shared test fixtures: tiny prepared synthetic datasets, tiny training configs, tiny test models.

Reuse them from any test file:

- ``tiny_300w`` / ``tiny_cofw68``: a prepared cache directory (``data/prepared/<dataset>`` layout)
  built once per session with ``ccdn.data.synth.synthesize`` + ``ccdn.data.prepare.prepare_dataset``;
- ``tiny_config(data_root, *overrides)``: a resolved training config for a tiny CPU run;
- ``"test/tiny"``: a BatchNorm-free GAP + linear regressor registered in the model registry
  (fast, deterministic under DDP, with ``nan_at_forward`` to inject a non-finite loss);
- ``trained_run``: one tiny tracked training run of ``ccdn`` (session-scoped; read it, don't modify it);
- ``single_thread``: run a test with one torch thread (the CI machine has 2 shared cores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ccdn.models.registry import register_model

TINY_MODEL_OPTIONS = ("model.options.stacks=1", "model.options.channels=16", "model.options.input_size=32",
                      "model.options.num_excitations=2")


def tiny_config(data_root: Path | str, *overrides: str) -> dict[str, Any]:
    """A training config for a few CPU seconds: tiny model, batch 8, no workers, no tracking."""
    from ccdn.config import load_config

    base = [f"data.root={data_root}", *TINY_MODEL_OPTIONS, "optim.batch_size=8", "optim.lr=1e-3",
            "optim.epochs=2", "optim.milestones=[1]", "train.num_workers=0", "train.device=cpu",
            "tracking.enabled=false", "augment.rotation_sigma=5.0"]
    return load_config(overrides=[*base, *overrides])


class TinyRegressor(nn.Module):
    """conv → ReLU → conv → ReLU → GAP → Linear(D, 2L): Contract 3 outputs with no BatchNorm.

    ``nan_at_forward=k`` makes the k-th forward pass in training mode return NaN landmarks;
    ``step_seconds`` makes each training forward pass that much slower (a job to interrupt mid-run).
    """

    default_loss = "l2"

    def __init__(self, num_landmarks: int, *, width: int = 8, nan_at_forward: int | None = None,
                 step_seconds: float = 0.0, **_: Any) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, 2 * num_landmarks)
        nn.init.constant_(self.head.bias, 0.5)
        self.nan_at_forward = nan_at_forward
        self.step_seconds = step_seconds
        self.training_forwards = 0

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        features = self.body(images)
        landmarks = self.head(features.mean(dim=(2, 3))).view(-1, self.num_landmarks, 2)
        if self.training:
            time.sleep(self.step_seconds)
            self.training_forwards += 1
            if self.training_forwards == self.nan_at_forward:
                landmarks = landmarks * float("nan")
        return {"landmarks": landmarks, "cocs": {}, "features": features}


@register_model("test/tiny")
def tiny(num_landmarks: int, **options: Any) -> TinyRegressor:
    return TinyRegressor(num_landmarks, **options)


def _prepare(tmp_path_factory: pytest.TempPathFactory, name: str, n_train: int, n_test: int) -> Path:
    from ccdn.data.prepare import prepare_dataset
    from ccdn.data.synth import synthesize

    root = tmp_path_factory.mktemp(f"data-{name}")
    raw, prepared = root / "raw" / name, root / "prepared" / name
    synthesize(name, raw, seed=0, n_train=n_train, n_test=n_test)
    prepare_dataset(name, raw, prepared, {"cache_size": 48})
    return prepared


@pytest.fixture(scope="session")
def tiny_300w(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared synthetic 300W: train and test (full/common/challenging) splits, 48-pixel caches."""
    return _prepare(tmp_path_factory, "300w", n_train=64, n_test=24)


@pytest.fixture(scope="session")
def tiny_cofw68(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared synthetic COFW-68 (test split only), for cross-dataset evaluation of 300W models."""
    return _prepare(tmp_path_factory, "cofw68", n_train=0, n_test=12)


@pytest.fixture(scope="session")
def trained_run(tiny_300w: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished 2-epoch ``ccdn`` run tracked into its own SQLite store."""
    from ccdn.train import train

    root = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = train(tiny_config(tiny_300w, "tracking.enabled=true"), root / "run", progress=False)
        finally:
            torch.set_num_threads(threads)
    return {"run_dir": result.run_dir, "uri": uri, "data": tiny_300w, "history": result.history}


@pytest.fixture
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
