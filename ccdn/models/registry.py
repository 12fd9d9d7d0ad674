"""A timm-style model registry: one factory per name, shared by ``ccdn`` and ``baselines``.

Factories are plain functions ``factory(num_landmarks: int, **options) -> nn.Module``; registering
them by name lets the CLI, the pipeline and the tests address every model the same way.
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str | ModelFactory | None = None) -> Callable[[ModelFactory], ModelFactory] | ModelFactory:
    """Register a factory under ``name`` (default: the function's name).

    Usable as ``@register_model`` or ``@register_model("timm/resnet50")``.
    """

    def _register(fn: ModelFactory, model_name: str | None = None) -> ModelFactory:
        key = model_name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            warnings.warn(f"model {key!r} registered twice; the later factory wins", stacklevel=3)
        _REGISTRY[key] = fn
        return fn

    if callable(name):
        return _register(name)
    return lambda fn: _register(fn, name)


def _load_plugins() -> None:
    """Import the optional ``baselines`` package so its models join the registry."""
    try:
        import baselines  # noqa: F401  (registers on import)
    except ImportError as exc:  # pragma: no cover - only when baselines is not installed
        if getattr(exc, "name", None) not in ("baselines",):
            raise


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching an fnmatch ``pattern``."""
    _load_plugins()
    return sorted(n for n in _REGISTRY if "*" not in n and fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_landmarks: int, **options) -> nn.Module:
    """Build a registered model. Unknown names raise with the list of known ones."""
    _load_plugins()
    if name not in _REGISTRY or "*" in name:
        # timm/<anything> is resolved lazily by the baselines package when timm knows the name.
        resolver = _REGISTRY.get("timm/*") if name.startswith("timm/") and "*" not in name else None
        if resolver is not None:
            return resolver(num_landmarks=num_landmarks, timm_name=name.split("/", 1)[1], **options)
        known = ", ".join(list_models())
        raise KeyError(f"unknown model {name!r}; registered models: {known}")
    return _REGISTRY[name](num_landmarks=num_landmarks, **options)


def is_model(name: str) -> bool:
    _load_plugins()
    return name in _REGISTRY or (name.startswith("timm/") and "timm/*" in _REGISTRY)
