"""Baselines that register into ``ccdn``'s model registry on import.

``ccdn.models.registry.create_model`` imports this package, so every module imported here joins
``list_models()``. Adding a baseline = one module here + one config entry (see README.md).
"""

from baselines import heatmap_hourglass, timm_regressor  # noqa: F401  (each registers on import)
