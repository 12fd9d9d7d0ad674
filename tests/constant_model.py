"""A model that predicts one fixed crop position for every landmark, and a run directory holding it.

Used by the own-data tests (custom sets, partial sets, ``ccdn predict``): with a constant prediction
``u`` the landmark in original pixels is known in closed form, ``centre + (u - 0.5) * side`` of the
model crop, so the tests check geometry exactly without training anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ccdn.config import save_config
from ccdn.models.registry import register_model

from conftest import tiny_config

NAME = "test/fixed-point"


class FixedPoint(nn.Module):
    """GAP + linear head with zero weights: every landmark at crop position ``(x, y)``."""

    def __init__(self, num_landmarks: int, *, x: float = 0.5, y: float = 0.5, **_: Any) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.body = nn.Conv2d(3, 4, 3, stride=4)
        self.head = nn.Linear(4, 2 * num_landmarks)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([x, y]).repeat(num_landmarks))

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        features = self.body(images)
        landmarks = self.head(features.mean(dim=(2, 3))).view(-1, self.num_landmarks, 2)
        return {"landmarks": landmarks, "cocs": {}, "features": features}


register_model(NAME)(lambda num_landmarks, **options: FixedPoint(num_landmarks, **options))


def fixed_point_run(run_dir: Path, data_root: Path, dataset: str, x: float, y: float, num_landmarks: int = 68) -> Path:
    """A run directory as `ccdn train` leaves it (config.yaml + model.pt) holding :class:`FixedPoint`."""
    config = tiny_config(data_root, f"model.name={NAME}", f"model.options.x={x}", f"model.options.y={y}",
                         f"data.dataset={dataset}")
    save_config(config, Path(run_dir) / "config.yaml")
    torch.save(FixedPoint(num_landmarks, x=x, y=y).state_dict(), Path(run_dir) / "model.pt")
    return Path(run_dir)
