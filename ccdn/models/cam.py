"""Face activation maps (paper §4.3, Fig. 8) for any model with a GAP + ``Linear(D, 2L)`` head.

CAM (Zhou et al. 2016, ref. [59]): for a head ``y_k = w_k · GAP(F) + b_k`` the map of output k is
``M_k = Σ_d w_{k,d} F_d``. The paper builds two maps per landmark (its x and y outputs) and averages
the maps of all landmarks into one face activation map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _minmax(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Rescale each map (..., h, w) to [0, 1], as CAM does before visualising a map."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    high = flat.max(dim=-1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(eps)).view_as(maps)


def output_activation_maps(features: Tensor, head: nn.Linear) -> Tensor:
    """The 2L CAM maps ``(B, 2L, h, w)`` (x0, y0, x1, y1, …) of a linear head over GAP(``features``)."""
    if head.in_features != features.shape[1]:
        raise ValueError(
            f"head expects {head.in_features} channels but the features have {features.shape[1]}: "
            "face activation maps need the map that feeds the GAP + linear head"
        )
    return torch.einsum("kd,bdhw->bkhw", head.weight.to(features.dtype), features)


@torch.no_grad()
def face_activation_map(
    model: nn.Module, images: Tensor, *, normalize_each: bool = True, size: int | None = None
) -> Tensor:
    """The face activation map ``(B, h, w)``: the mean over landmarks of their x and y CAM maps.

    ``normalize_each`` min–max scales every x/y map before averaging (the signs of the head's x and y
    weights are arbitrary, so raw maps can cancel); ``False`` averages the raw linear maps. ``size``
    bilinearly resizes the result (e.g. to the input size). The model runs in eval mode and is put back.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no `.head` nn.Linear: face activation maps need a GAP + linear head")
    was_training = model.training
    model.eval()
    try:
        output = model(images)
    finally:
        model.train(was_training)
    if "features" not in output:
        raise KeyError(f"{type(model).__name__} output has no 'features' map (Contract 3)")
    maps = output_activation_maps(output["features"], head)
    if normalize_each:
        maps = _minmax(maps)
    face_map = maps.mean(dim=1)
    if size is not None:
        face_map = F.interpolate(face_map[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return face_map
