"""Any timm backbone as a landmark coordinate regressor: ``timm/<timm-name>``.

Why: reviewers want CCDN next to modern backbones trained under the same recipe. The backbone is
``timm.create_model(name, features_only=True)``; its feature map feeds a GAP + one ``Linear(D, 2L)``
head, the same head CCDN has, so face activation maps (Fig. 8) work for it too (``output["features"]``
+ ``model.head``).

Output (docs/architecture.md, Contract 3): ``"landmarks"`` ``(B, L, 2)`` (x, y) normalised to the
input crop, ``"cocs"`` empty, ``"features"`` the map under the head. The head matches CCDN's
(:mod:`ccdn.models.ccdn`) so the comparison is fair: a linear output by default (``output_activation``
``"linear"`` or ``"sigmoid"``), weights initialised small (std 1e-3) and the bias at the crop centre, so
training starts from "every landmark at the centre" whatever the backbone's feature scale.

Which map: ``feature_levels="last"`` (default) is the last, coarsest map. ``"all"`` upsamples every
level of stride ≥ 4 to the finest of them (nearest neighbour) and concatenates them — HRNetV2's
representation, the way
HRNet is used for landmarks — and is the default for ``hrnet*`` names (with timm's raw branch outputs,
``feature_location=""``): HRNet's last map alone comes from its lowest-resolution branch only, which
would leave the high-resolution branches unused (and DDP fails on unused parameters).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccdn.errors import CCDNError
from ccdn.models.registry import UnknownModelError, register_model

# Hourglass options of the common recipe (Contract 8); they have no meaning for a timm backbone
# (it takes any input size) and are accepted and ignored so one config can drive every model.
IGNORED_RECIPE_OPTIONS = ("input_size", "stacks", "channels", "num_excitations", "stem_channels", "hourglass_depth")

# Registered explicitly so ``list_models()`` shows them; any other timm name resolves through "timm/*".
EXPLICIT_TIMM_BACKBONES = ("resnet18", "resnet50", "hrnet_w18_small_v2", "convnext_tiny")

OUTPUT_ACTIVATIONS = ("linear", "sigmoid")  # the same choices as ccdn.models.ccdn
FEATURE_LEVELS = ("last", "all")
MIN_FUSED_STRIDE = 4  # "all" skips stride-2 stems: too large to be worth fusing, little semantics


class UnknownTimmModel(UnknownModelError):
    """A ``timm/<name>`` whose name timm does not know (a KeyError, like the registry's unknown names)."""


class PretrainedWeightsUnavailable(CCDNError, RuntimeError):
    """``pretrained=True`` was asked for but the weights could not be fetched or found in the cache."""


def _check_timm_name(timm_name: str) -> None:
    """Fail early, naming close timm names, instead of timm's bare ``Unknown model``."""
    import timm

    if timm.is_model(timm_name):
        return
    close = difflib.get_close_matches(timm_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise UnknownTimmModel(
        f"unknown timm model {timm_name!r} (asked for as 'timm/{timm_name}'){hint}. "
        f"List valid names with `python -c \"import timm; print(timm.list_models('*{timm_name[:4]}*'))\"`."
    )


def create_timm_features(timm_name: str, *, pretrained: bool = False, **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(name, features_only=True)``; weight-download failures get a clear message."""
    import timm

    _check_timm_name(timm_name)
    try:
        return timm.create_model(timm_name, features_only=True, pretrained=pretrained, **timm_kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/HTTP/offline errors come in many types
        if not pretrained:
            raise ValueError(
                f"timm model {timm_name!r} cannot be built as a feature extractor (features_only=True) "
                f"with {timm_kwargs or 'no extra arguments'}: {type(exc).__name__}: {exc}. "
                "Pick a backbone that supports features_only (convolutional ones do) or fix timm_kwargs."
            ) from exc
        raise PretrainedWeightsUnavailable(
            f"could not load pretrained weights for timm model {timm_name!r}: {type(exc).__name__}: {exc}. "
            "pretrained=true needs network access to the Hugging Face Hub (or the weights already in the "
            "local HF cache, see HF_HOME) and HF_HUB_OFFLINE unset; on machines without it set "
            "model.options.pretrained=false."
        ) from exc


def default_feature_levels(timm_name: str) -> str:
    """``"all"`` (HRNetV2 fusion) for HRNets, ``"last"`` for every other backbone."""
    return "all" if timm_name.split(".", 1)[0].startswith("hrnet") else "last"


class TimmLandmarkRegressor(nn.Module):
    """timm feature extractor → feature map → GAP → ``Linear(D, 2L)`` → landmarks in the crop."""

    default_loss = "l2"

    def __init__(
        self,
        num_landmarks: int,
        timm_name: str,
        *,
        pretrained: bool = False,
        output_activation: str = "linear",
        feature_levels: str | None = None,
        normalize_input: bool = True,
        timm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        feature_levels = feature_levels or default_feature_levels(timm_name)
        if num_landmarks < 1:
            raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if feature_levels not in FEATURE_LEVELS:
            raise ValueError(f"feature_levels must be one of {FEATURE_LEVELS}, got {feature_levels!r}")
        self.num_landmarks = num_landmarks
        self.timm_name = timm_name
        self.output_activation = output_activation
        self.feature_levels = feature_levels
        self.normalize_input = normalize_input
        self.backbone = create_timm_features(
            timm_name, pretrained=pretrained, **self._timm_kwargs(timm_name, feature_levels, timm_kwargs)
        )
        self.level_indices = self._select_levels(self.backbone.feature_info.reduction(), feature_levels)
        channels = self.backbone.feature_info.channels()
        self.num_features = sum(int(channels[i]) for i in self.level_indices)
        self.head = nn.Linear(self.num_features, 2 * num_landmarks)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.constant_(self.head.bias, 0.5 if output_activation == "linear" else 0.0)
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        # Non-persistent: the statistics come from timm, not from a checkpoint.
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @staticmethod
    def _timm_kwargs(timm_name: str, feature_levels: str, user_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        kwargs = dict(user_kwargs or {})
        if feature_levels == "last":
            kwargs.setdefault("out_indices", (-1,))  # only compute what the head uses
        elif default_feature_levels(timm_name) == "all":
            kwargs.setdefault("feature_location", "")  # HRNet's raw branches, not its classification "incre" maps
        return kwargs

    @staticmethod
    def _select_levels(reductions: list[int], feature_levels: str) -> list[int]:
        if feature_levels == "last":
            return [len(reductions) - 1]
        fused = [i for i, r in enumerate(reductions) if r >= MIN_FUSED_STRIDE]
        return fused or list(range(len(reductions)))

    def forward_features(self, images: Tensor) -> Tensor:
        """The map under the head ``(B, D, h, w)``; images are in [0, 1] as every dataset yields them."""
        if self.normalize_input:
            images = (images - self.input_mean) / self.input_std
        maps = self.backbone(images)
        levels = [maps[i] for i in self.level_indices]
        if len(levels) == 1:
            return levels[0]
        # Nearest-neighbour by integer factors: GAP of the result equals GAP of each level, so the
        # upsampling only gives activation maps their fine grid; bilinear's CUDA backward is also
        # refused under torch.use_deterministic_algorithms.
        size = max((m.shape[-2:] for m in levels), key=lambda s: s[0] * s[1])
        upsampled = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="nearest") for m in levels]
        return torch.cat(upsampled, dim=1)

    def forward_head(self, features: Tensor) -> Tensor:
        """GAP + linear head → ``(B, L, 2)``; head rows are ordered x0, y0, x1, y1, …"""
        coordinates = self.head(features.mean(dim=(2, 3))).view(-1, self.num_landmarks, 2)
        return torch.sigmoid(coordinates) if self.output_activation == "sigmoid" else coordinates

    def forward(self, images: Tensor) -> dict[str, Any]:
        features = self.forward_features(images)
        return {"landmarks": self.forward_head(features), "cocs": {}, "features": features}


def timm_regressor(num_landmarks: int, timm_name: str, **options: Any) -> TimmLandmarkRegressor:
    """Factory for ``timm/<timm_name>``; drops the hourglass-only recipe options (see module doc)."""
    for key in IGNORED_RECIPE_OPTIONS:
        options.pop(key, None)
    known = [p for p in inspect.signature(TimmLandmarkRegressor).parameters if p not in ("num_landmarks", "timm_name")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"unknown model option(s) {unknown} for timm/{timm_name}; known options: {known} "
            f"(ignored recipe options: {list(IGNORED_RECIPE_OPTIONS)})"
        )
    return TimmLandmarkRegressor(num_landmarks, timm_name, **options)


def _register_explicit(timm_name: str) -> None:
    def factory(num_landmarks: int, **options: Any) -> TimmLandmarkRegressor:
        return timm_regressor(num_landmarks, timm_name, **options)

    factory.__name__ = factory.__qualname__ = f"timm_{timm_name}"
    factory.__doc__ = f"timm backbone {timm_name!r} + GAP + Linear(D, 2L) coordinate head."
    register_model(f"timm/{timm_name}")(factory)


register_model("timm/*")(timm_regressor)
for _name in EXPLICIT_TIMM_BACKBONES:
    _register_explicit(_name)
