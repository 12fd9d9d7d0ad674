"""The model registry: names resolve to factories; unknown names fail with the list of known ones."""

import pytest
from torch import nn

from ccdn.models import registry


def test_register_create_and_list():
    @registry.register_model("test/tiny-linear")
    def _tiny(num_landmarks: int, width: int = 3) -> nn.Module:
        return nn.Linear(width, 2 * num_landmarks)

    model = registry.create_model("test/tiny-linear", num_landmarks=5, width=4)
    assert isinstance(model, nn.Linear)
    assert model.in_features == 4 and model.out_features == 10
    assert "test/tiny-linear" in registry.list_models("test/*")
    assert registry.is_model("test/tiny-linear")


def test_unknown_model_names_known_ones():
    with pytest.raises(KeyError) as err:
        registry.create_model("no-such-model", num_landmarks=68)
    assert "no-such-model" in str(err.value)
    assert "registered models" in str(err.value)
