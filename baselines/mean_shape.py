"""``mean_shape``: the reference every landmark model must beat — predict the mean training face.

Fitting is the mean of the training landmarks in the models' own normalised crop frame (no gradient
steps): registered with ``needs_training=False``, so ``ccdn train`` sets the head's bias to it (:func:`ccdn.models.head_init.init_head_to_shape`)
and the grid runs it with ``optim.epochs: 0``. It is a ``Linear(1, 2L)`` head on a constant feature, so
``ccdn evaluate``, checkpoints, activation maps and tables treat it like any other model; the same
constant is the L2-optimal prediction, so training it would only move it to the augmented mean.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ccdn.models.registry import register_model


class MeanShapeModel(nn.Module):
    """Predicts one fixed shape for every face (the head's bias); features are a constant 1×1 map."""

    default_loss = "l2"

    def __init__(self, num_landmarks: int) -> None:
        super().__init__()
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
        self.num_landmarks = num_landmarks
        self.head = nn.Linear(1, 2 * num_landmarks)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 0.5)  # the crop centre until the mean shape is set

    def forward_features(self, images: Tensor) -> Tensor:
        return images.new_ones(images.shape[0], 1, 1, 1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features.mean(dim=(2, 3))).view(-1, self.num_landmarks, 2)

    def forward(self, images: Tensor) -> dict[str, Any]:
        features = self.forward_features(images)
        return {"landmarks": self.forward_head(features), "cocs": {}, "features": features}


@register_model("mean_shape", needs_training=False)
def mean_shape(num_landmarks: int, **options: Any) -> MeanShapeModel:
    """Mean training shape (reference row of every table); recipe options (sizes, P) do not apply."""
    return MeanShapeModel(num_landmarks)
