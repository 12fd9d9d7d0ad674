"""Initialising a coordinate head at the mean training shape.

The paper does not say how the regression head starts. A head that starts at the crop centre spends its
first epochs learning the average face; starting at the mean shape (as cascaded regressors start from
their initial shape) makes step 0 the mean-shape reference, so every step after it must beat that
reference. Interpretation recorded in docs/method.md.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

HEAD_INITS = ("mean_shape", "centre")


def init_head_to_shape(model: nn.Module, shape: np.ndarray) -> bool:
    """Set ``model.head``'s bias to ``shape`` ``(L, 2)`` (rows x0, y0, x1, y1, … as Contract 3 orders them).

    A sigmoid output gets the logit of the shape. Returns False, doing nothing, for models without a
    ``Linear(D, 2L)`` head (heatmap models decode landmarks from maps instead).
    """
    head = getattr(model, "head", None)
    points = torch.as_tensor(np.asarray(shape, dtype=np.float32).reshape(-1))
    if not isinstance(head, nn.Linear) or head.bias is None or head.out_features != points.numel():
        return False
    if getattr(getattr(model, "config", None), "output_activation", "linear") == "sigmoid" or \
            getattr(model, "output_activation", "linear") == "sigmoid":
        points = torch.logit(points.clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        head.bias.copy_(points.to(head.bias))
    return True
