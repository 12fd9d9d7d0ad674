"""Training configs: the packaged recipe, merging, overrides, strict keys, the stable hash, run names."""

from __future__ import annotations

import pytest
import yaml

from ccdn.config import (
    ConfigError,
    apply_overrides,
    config_hash,
    default_run_name,
    flatten_config,
    load_config,
    parse_override,
    save_config,
)


def test_default_is_the_papers_recipe():
    config = load_config()
    options = config["model"]["options"]
    assert config["model"]["name"] == "ccdn"
    assert (options["stacks"], options["input_size"], options["num_excitations"]) == (4, 128, 4)
    assert config["loss"]["gammas"] == [0.025, 0.01, 0.05]
    optim = config["optim"]
    assert optim["lr"] == pytest.approx(2.5e-4)
    assert optim["milestones"] == [40, 100]
    # "decayed to 6.25e-5 after 100 epochs": two halvings.
    assert optim["lr"] * optim["lr_gamma"] ** len(optim["milestones"]) == pytest.approx(6.25e-5)
    assert (optim["name"], optim["betas"], optim["batch_size"]) == ("adam", [0.5, 0.999], 6)
    assert config["train"]["deterministic"] is True


def test_user_file_is_deep_merged(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim: {lr: 1.0e-3}\nmodel: {options: {stacks: 1, my_option: 7}}\n")
    config = load_config(path)
    assert config["optim"]["lr"] == pytest.approx(1e-3)
    assert config["optim"]["betas"] == [0.5, 0.999]  # siblings kept
    assert config["model"]["options"]["stacks"] == 1
    assert config["model"]["options"]["channels"] == 256
    assert config["model"]["options"]["my_option"] == 7  # model options are free-form


def test_overrides_use_dotted_keys_and_yaml_values():
    config = load_config(overrides=["loss.gammas=[0.01,0.01,0.01]", "model.options.num_excitations=2",
                                    "optim.lr=1e-3", "train.max_steps_per_epoch=null", "tracking.tags.owner=me"])
    assert config["loss"]["gammas"] == [0.01, 0.01, 0.01]
    assert config["model"]["options"]["num_excitations"] == 2
    assert config["optim"]["lr"] == 1e-3 and isinstance(config["optim"]["lr"], float)  # YAML 1.1 would give "1e-3"
    assert config["train"]["max_steps_per_epoch"] is None
    assert config["tracking"]["tags"] == {"owner": "me"}


@pytest.mark.parametrize("override, key", [
    ("optim.learning_rate=1", "optim.learning_rate"),
    ("trian.device=cpu", "trian"),
    ("model.name.sub=1", "model.name"),
])
def test_unknown_keys_are_rejected_with_the_known_ones(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    message = str(err.value)
    assert repr(key) in message or key in message
    if key == "optim.learning_rate":
        assert "optim.lr" in message and "optim.betas" in message


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {momentum: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.momentum"):
        load_config(path)


def test_bad_values_and_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="optim.name"):
        load_config(overrides=["optim.name=sgd"])
    with pytest.raises(ConfigError, match="loss.gammas"):
        load_config(overrides=["loss.gammas=[1, 2]"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(overrides=["optim=3"])
    with pytest.raises(ConfigError, match="train.num_workers"):
        load_config(overrides=["train.num_workers=-1"])


def test_hash_is_stable_and_ignores_runtime_keys():
    base = load_config()
    reordered = {key: base[key] for key in reversed(list(base))}
    assert config_hash(reordered) == config_hash(base)
    runtime = ["train.num_workers=3", "train.checkpoint_minutes=1", "tracking.tags.owner=me", "tracking.enabled=false"]
    assert config_hash(apply_overrides(base, runtime)) == config_hash(base)
    assert config_hash(apply_overrides(base, ["optim.lr=1e-3"])) != config_hash(base)
    assert config_hash(apply_overrides(base, ["seed=1"])) != config_hash(base)


def test_run_names_are_deterministic():
    assert default_run_name(load_config()) == "ccdn-300w-p4-g0.025_0.01_0.05-s0"
    config = load_config(overrides=["model.name=baseline", "seed=2", "data.dataset=wflw"])
    assert default_run_name(config) == "baseline-wflw-l2-s2"
    assert default_run_name(load_config(overrides=["tracking.run_name=custom"])) == "custom"


def test_flatten_and_save_round_trip(tmp_path):
    config = load_config()
    flat = flatten_config(config)
    assert flat["optim.betas"] == [0.5, 0.999]
    assert flat["model.options.stacks"] == 4
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    assert yaml.safe_load(path.read_text()) == config
    assert load_config(path) == config
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary file left


def test_settings_from_a_grid_mean_what_the_same_overrides_mean():
    from ccdn.config import apply_settings

    base = load_config()
    settings = [("optim.lr", "1e-3"), ("model.options", {"stacks": 1}), ("model.options.num_excitations", 2),
                ("tracking.tags.paper_tables", "none"), ("loss.gammas", [0.01, 0.01, 0.01])]
    texts = ["optim.lr=1e-3", "model.options={stacks: 1}", "model.options.num_excitations=2",
             "tracking.tags.paper_tables=none", "loss.gammas=[0.01, 0.01, 0.01]"]
    assert apply_settings(base, settings) == apply_overrides(base, texts)
    assert apply_settings(base, settings)["optim"]["lr"] == 0.001  # later settings merge into earlier sections
    with pytest.raises(ConfigError, match="grid.yaml: recipe: optim.learning_rate: unknown config key"):
        apply_settings(base, [("optim.learning_rate", 0.1)], source="grid.yaml: recipe")
