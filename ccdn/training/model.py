"""The model a training run starts from: the registry's model with its head started at the mean shape."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from torch import nn

from ccdn.data.dataset import PreparedSplit, mean_shape
from ccdn.models import create_model
from ccdn.models.head_init import init_head_to_shape
from ccdn.models.registry import model_info


def create_training_model(model_cfg: Mapping[str, Any], num_landmarks: int, train_split: PreparedSplit,
                          train_indices: np.ndarray | None = None) -> nn.Module:
    """``create_model`` + the head's start (``model.head_init``, docs/method.md item 18).

    Reference models registered with ``needs_training=False`` (``mean_shape``) are *fitted* by this start,
    so they get the mean training shape whatever ``head_init`` says.
    """
    model = create_model(model_cfg["name"], num_landmarks, **model_cfg["options"])
    if model_cfg["head_init"] == "mean_shape" or not model_info(model_cfg["name"]).needs_training:
        init_head_to_shape(model, mean_shape(train_split, train_indices))
    return model
