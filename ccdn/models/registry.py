"""A timm-style model registry: one factory per name plus what others may ask about the model.

Factories are plain functions ``factory(num_landmarks: int, **options) -> nn.Module``; registering
them by name lets the CLI, the pipeline and the tests address every model the same way. Each name
also carries :class:`ModelInfo` metadata (does it have excitation blocks, does it need training,
its default options), so the grid, the report and the figures ask the registry instead of keeping
their own lists::

    @register_model("mean_shape", needs_training=False)
    def mean_shape(num_landmarks, **options): ...

    model_info("ccdn").has_excitations       # True
    model_info("mean_shape").needs_training  # False

Other packages join through the ``ccdn.models`` entry-point group (``pyproject.toml``), loaded on
first use; the registry never imports them by name, so there is no import circle.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from ccdn.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
ENTRY_POINT_GROUP = "ccdn.models"


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its factory and the capabilities others read without building it.

    Attributes:
        name: the registry name (``"ccdn"``, ``"timm/*"``).
        factory: ``factory(num_landmarks, **options) -> nn.Module``.
        has_excitations: built from excitation blocks, so P (``model.options.num_excitations``) applies.
        needs_training: ``False`` for reference models that are complete without ``ccdn train`` steps.
        default_options: option defaults worth knowing outside the model (e.g. ``{"num_excitations": 4}``);
            the factory owns them, this is where others read them.
    """

    name: str
    factory: ModelFactory
    has_excitations: bool = False
    needs_training: bool = True
    default_options: Mapping[str, Any] = field(default_factory=dict)


METADATA_KEYS = tuple(f.name for f in fields(ModelInfo) if f.name not in ("name", "factory"))
_REGISTRY: dict[str, ModelInfo] = {}
_plugins_loaded = False


class UnknownModelError(ConfigError, KeyError):
    """A model name nobody registered (a KeyError too, as before); the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def register_model(name: str | ModelFactory | None = None, **metadata: Any):
    """Register a factory under ``name`` (default: the function's name) with :class:`ModelInfo` metadata.

    Usable as ``@register_model``, ``@register_model("timm/resnet50")`` or
    ``@register_model("mean_shape", needs_training=False)``; an unknown metadata key is a TypeError.
    """
    unknown = sorted(set(metadata) - set(METADATA_KEYS))
    if unknown:
        raise TypeError(f"unknown model metadata {unknown}; known keys: {list(METADATA_KEYS)}")

    def _register(fn: ModelFactory, model_name: str | None = None) -> ModelFactory:
        key = model_name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not fn:
            warnings.warn(f"model {key!r} registered twice; the later factory wins", stacklevel=3)
        _REGISTRY[key] = ModelInfo(name=key, factory=fn, **metadata)
        return fn

    if callable(name):
        return _register(name)
    return lambda fn: _register(fn, name)


def _entry_point_modules() -> list[str]:
    """Modules named in the ``ccdn.models`` entry-point group: the installed metadata, or, in a
    source checkout whose installed metadata predates the group, the checkout's ``pyproject.toml``."""
    from importlib.metadata import entry_points

    modules = [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    if modules:
        return modules
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        return []
    import tomllib

    table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("entry-points", {})
    return [value.split(":")[0] for value in table.get(ENTRY_POINT_GROUP, {}).values()]


def _load_plugins() -> None:
    """Import the modules of the ``ccdn.models`` entry points once; they register on import."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in _entry_point_modules():
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a plugin that is declared but not installed
            if getattr(exc, "name", None) != module:
                raise
            warnings.warn(f"model plugin {module!r} ({ENTRY_POINT_GROUP} entry point) is not importable", stacklevel=2)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching an fnmatch ``pattern``."""
    _load_plugins()
    return sorted(n for n in _REGISTRY if "*" not in n and fnmatch.fnmatch(n, pattern))


def _resolver(name: str) -> ModelInfo | None:
    """``timm/<anything>`` is built by the ``timm/*`` factory when timm knows the name."""
    return _REGISTRY.get("timm/*") if name.startswith("timm/") and "*" not in name else None


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered name (a ``timm/<name>`` gets the ``timm/*`` entry's)."""
    _load_plugins()
    if name in _REGISTRY and "*" not in name:
        return _REGISTRY[name]
    resolver = _resolver(name)
    if resolver is not None:
        return resolver
    raise UnknownModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")


def create_model(name: str, num_landmarks: int, **options) -> nn.Module:
    """Build a registered model. Unknown names raise with the list of known ones."""
    info = model_info(name)
    if info.name != name:  # the timm/* resolver
        return info.factory(num_landmarks=num_landmarks, timm_name=name.split("/", 1)[1], **options)
    return info.factory(num_landmarks=num_landmarks, **options)


def is_model(name: str) -> bool:
    _load_plugins()
    return (name in _REGISTRY and "*" not in name) or _resolver(name) is not None
