"""Datasets: raw formats → prepared per-split cache → model-ready crops.

The reader names are re-exported lazily so that importing a parser (``ccdn.data.formats``) does not
pull in torch.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["load_split", "PreparedSplit", "LandmarkDataset", "AugmentConfig"]

_EXPORTS = {
    "load_split": "ccdn.data.dataset",
    "PreparedSplit": "ccdn.data.dataset",
    "LandmarkDataset": "ccdn.data.dataset",
    "AugmentConfig": "ccdn.data.augment",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ccdn.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
