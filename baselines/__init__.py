"""Baselines that register into ``ccdn``'s model registry on import.

The ``ccdn.models`` entry point in pyproject.toml names this package; the registry imports it on
first use, so every module imported here joins ``list_models()`` (and the registry never imports
``baselines`` by name: no import circle). Adding a baseline = one module here + one config entry
(see README.md).
"""

from baselines import heatmap_hourglass, mean_shape, timm_regressor  # noqa: F401  (each registers on import)
