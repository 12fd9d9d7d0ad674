"""Models: the registry plus CCDN, FCDN and the Baseline (registered on import).

``create_model(name, num_landmarks, **options)`` builds any registered model; ``list_models()`` names
them (``baselines/`` adds its own on first use). See docs/architecture.md, Contract 3.
"""

from ccdn.models import ccdn as _ccdn  # noqa: F401  (registers "ccdn", "fcdn", "baseline")
from ccdn.models.registry import ModelInfo, create_model, is_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "is_model", "list_models", "model_info", "register_model"]
