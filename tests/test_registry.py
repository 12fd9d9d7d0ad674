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


def test_unknown_model_is_a_user_error_printed_without_traceback():
    from ccdn.errors import CCDNError

    with pytest.raises(CCDNError, match="unknown model 'nope'; registered models: .*ccdn"):
        registry.model_info("nope")


def test_metadata_is_registered_with_the_factory_and_read_by_name():
    @registry.register_model("test/reference", needs_training=False)
    def _reference(num_landmarks: int) -> nn.Module:
        return nn.Identity()

    info = registry.model_info("test/reference")
    assert info.factory is _reference and info.needs_training is False and info.has_excitations is False
    with pytest.raises(TypeError, match="unknown model metadata \\['needs_trainig'\\]"):
        registry.register_model("test/typo", needs_trainig=False)


def test_capabilities_of_the_packaged_models():
    assert registry.model_info("ccdn").has_excitations and registry.model_info("fcdn").has_excitations
    assert registry.model_info("ccdn").default_options["num_excitations"] == 4  # P of the paper, written once
    assert not registry.model_info("baseline").has_excitations
    assert all(registry.model_info(name).needs_training for name in ("ccdn", "fcdn", "baseline", "hg_heatmap"))
    # a timm/<name> the registry has not seen gets the timm/* entry's metadata
    assert registry.model_info("timm/some_backbone").name == "timm/*"


def test_baselines_join_through_the_entry_point_group():
    assert "baselines" in registry._entry_point_modules()
    assert {"hg_heatmap", "timm/resnet18"} <= set(registry.list_models())
