"""Training configs: the packaged recipe, a user file deep-merged on top, then ``key=value`` overrides.

Why one strict loader: a typo in a key (``optim.learning_rate``) must not silently train the
default recipe, so every key is checked against ``ccdn/configs/default.yaml`` (Contract 8) and an
unknown one is an error naming it and the keys that do exist. A stable hash of the resolved config
tags every tracked run and guards a run directory against being resumed with another recipe.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ccdn.errors import ConfigError, yaml_problem
from ccdn.io import write_yaml

DEFAULT_CONFIG_PATH = Path(__file__).parent / "configs" / "default.yaml"

# Mappings whose keys are free (model options differ per model; loss options per loss; tags are free).
OPEN_SECTIONS = frozenset({"model.options", "loss.options", "tracking.tags"})

# Keys that change how a run is executed or recorded, never what it learns; they are left out of the
# config hash so that a requeued job may e.g. get a different number of CPUs and still resume.
RUNTIME_KEYS = frozenset(
    {
        "train.num_workers",
        "train.checkpoint_minutes",
        "train.keep_epoch_checkpoints",
        "train.val_batch_size",
        "tracking.enabled",
        "tracking.defer",
        "tracking.experiment",
        "tracking.tags",
    }
)

CHOICES: dict[str, tuple[str, ...]] = {
    "optim.name": ("adam", "adamw", "rmsprop"),
    "loss.coord": ("l2", "l1", "wing"),
    "train.amp": ("bf16", "none"),
    "model.head_init": ("mean_shape", "centre"),
}


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built with it: 10x faster
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; people write learning rates that way."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))




def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The packaged default, deep-merged with ``path`` (if given), then ``key=value`` ``overrides``."""
    config = copy.deepcopy(_packaged_default())
    if path is not None:
        config = merge_config(config, read_yaml(Path(path)), source=str(path))
    config = apply_overrides(config, overrides)
    validate_config(config)
    return config


@functools.lru_cache(maxsize=1)
def _packaged_default() -> dict[str, Any]:
    """The packaged recipe, read once per process (the grid resolves every run from it)."""
    return read_yaml(DEFAULT_CONFIG_PATH)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a missing file or a non-mapping is a ``ConfigError``."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({yaml_problem(exc)}); fix it there") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def merge_config(base: Mapping[str, Any], update: Mapping[str, Any], *, source: str = "config",
                 _prefix: str = "") -> dict[str, Any]:
    """``base`` with ``update`` merged in recursively; keys absent from ``base`` are rejected."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        dotted = f"{_prefix}{key}"
        if _prefix.rstrip(".") in OPEN_SECTIONS:
            merged[key] = copy.deepcopy(value)
            continue
        if key not in merged:
            _unknown_key(dotted, merged.keys(), _prefix, source)
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted} must be a mapping (known keys: {_known(merged[key])}), "
                                  f"got {value!r}")
            merged[key] = merge_config(merged[key], value, source=source, _prefix=f"{dotted}.")
        elif isinstance(value, dict):
            raise ConfigError(f"{source}: {dotted} is a single value ({merged[key]!r}), not a section; "
                              f"set it directly, e.g. {dotted}=VALUE")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``[1,2]``, ``null``, ``2.5e-4``)."""
    result = copy.deepcopy(dict(config))
    for text in overrides:
        keys, value = parse_override(text)
        result = _set_dotted(result, keys, value, source=f"override {text!r}")
    return result


def apply_settings(config: Mapping[str, Any], settings: Iterable[tuple[str, Any]], *, source: str = "settings"
                   ) -> dict[str, Any]:
    """Apply ``(dotted key, value)`` pairs in order (later wins), values already parsed.

    How the grid hands a run its config without a text round trip. A string that YAML 1.1 left as
    text but that a config file would read as a number (``1e-3``) becomes that number, so a grid
    file and ``--config`` files mean the same thing.
    """
    result = copy.deepcopy(dict(config))
    for dotted, value in settings:
        keys = str(dotted).split(".")
        if not all(keys):
            raise ConfigError(f"{source}: key {dotted!r} has an empty part; use dotted keys like model.options.stacks")
        result = _set_dotted(result, keys, _as_config_value(value), source=f"{source}: {dotted}")
    return result


def _set_dotted(config: Mapping[str, Any], keys: list[str], value: Any, *, source: str) -> dict[str, Any]:
    update: dict[str, Any] = value
    for key in reversed(keys):
        update = {key: update}
    return merge_config(config, update, source=source)


def _as_config_value(value: Any) -> Any:
    """A value read by another YAML loader, as the config files' loader would have read it."""
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _as_config_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_config_value(v) for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` → ``(["optim", "lr"], 0.001)``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.lr=1e-3)")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key part; use dotted keys like model.options.stacks=2")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_problem(exc)})") from exc
    return keys, value


def parse_key_values(items: Iterable[str]) -> dict[str, Any]:
    """``["enlarge=1.25", "box=landmarks"]`` → ``{"enlarge": 1.25, "box": "landmarks"}`` (YAML values, keys kept as written)."""
    result: dict[str, Any] = {}
    for item in items:
        keys, value = parse_override(item)
        result[".".join(keys)] = value
    return result


def validate_config(config: Mapping[str, Any]) -> None:
    """Check the values whose mistakes would otherwise surface deep inside training."""
    for dotted, allowed in CHOICES.items():
        value = get_dotted(config, dotted)
        if value not in allowed:
            raise ConfigError(f"{dotted}={value!r} is not supported; choose one of {', '.join(allowed)}")
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool) or config["seed"] < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {config['seed']!r}")
    optim = config["optim"]
    for key in ("lr", "weight_decay", "lr_gamma"):
        if not isinstance(optim[key], (int, float)) or isinstance(optim[key], bool):
            raise ConfigError(f"optim.{key} must be a number, got {optim[key]!r}")
    if isinstance(optim["batch_size"], bool) or not isinstance(optim["batch_size"], int) or optim["batch_size"] < 1:
        raise ConfigError(f"optim.batch_size must be a positive integer, got {optim['batch_size']!r}")
    if isinstance(optim["epochs"], bool) or not isinstance(optim["epochs"], int) or optim["epochs"] < 0:
        raise ConfigError(f"optim.epochs must be an integer >= 0 (0: no gradient steps, e.g. mean_shape), "
                          f"got {optim['epochs']!r}")
    if not (isinstance(optim["betas"], list) and len(optim["betas"]) == 2):
        raise ConfigError(f"optim.betas must be a list of two numbers, got {optim['betas']!r}")
    if not isinstance(optim["milestones"], list) or any(not isinstance(m, int) for m in optim["milestones"]):
        raise ConfigError(f"optim.milestones must be a list of epoch numbers, got {optim['milestones']!r}")
    warmup = optim["warmup_epochs"]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"optim.warmup_epochs must be an integer >= 0 (0: no warm-up), got {warmup!r}")
    if optim["milestones"] and warmup > min(optim["milestones"]):
        raise ConfigError(f"optim.warmup_epochs={warmup} must end by the first milestone "
                          f"({min(optim['milestones'])}): lower it or move optim.milestones")
    gammas = config["loss"]["gammas"]
    if not (isinstance(gammas, list) and len(gammas) == 3):
        raise ConfigError(f"loss.gammas must be a list of three numbers (gamma_1..3 of Eq. 9), got {gammas!r}")
    workers = config["train"]["num_workers"]
    if workers != "auto" and not (isinstance(workers, int) and workers >= 0):
        raise ConfigError(f"train.num_workers must be 'auto' or an integer >= 0, got {workers!r}")
    device = config["train"]["device"]
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    minutes = config["train"]["checkpoint_minutes"]
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
        raise ConfigError(f"train.checkpoint_minutes must be a number >= 0 (0: after every step), got {minutes!r}")
    for key in ("enabled", "defer"):
        if not isinstance(config["tracking"][key], bool):
            raise ConfigError(f"tracking.{key} must be true or false, got {config['tracking'][key]!r}")
    for key in ("channels_last", "deterministic", "sync_batchnorm"):
        if not isinstance(config["train"][key], bool):
            raise ConfigError(f"train.{key} must be true or false, got {config['train'][key]!r}")
    for key in ("max_steps_per_epoch", "limit_train_images", "keep_epoch_checkpoints"):
        value = config["train"][key]
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"train.{key} must be null or a positive integer, got {value!r}")
    if not isinstance(config["model"]["options"], dict):
        raise ConfigError("model.options must be a mapping of model constructor options")


def get_dotted(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    value: Any = config
    for key in dotted.split("."):
        value = value[key]
    return value


def flatten_config(config: Mapping[str, Any], _prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 2.5e-4, ...}``: one entry per leaf (lists stay whole), for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{_prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Stable short hash of what a run learns: key order and ``RUNTIME_KEYS`` do not change it."""
    recipe = {k: v for k, v in flatten_config(config).items() if not _is_runtime_key(k)}
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def excitations_of(model_name: str, options: Mapping[str, Any]) -> int | None:
    """P of a model with these options: ``num_excitations`` or the model's registered default;
    ``None`` for models without excitation blocks (registry metadata ``has_excitations``)."""
    from ccdn.models import is_model, model_info

    if not is_model(model_name) or not model_info(model_name).has_excitations:
        return None
    return int(options.get("num_excitations", model_info(model_name).default_options["num_excitations"]))


def variant_name(config: Mapping[str, Any]) -> str:
    """What distinguishes runs of one model on one dataset: P and the gammas for CTM/COCS models."""
    gammas = "_".join(_short_number(g) for g in config["loss"]["gammas"])
    p = excitations_of(str(config["model"]["name"]), config["model"]["options"])
    if p is not None:
        return f"p{p}-g{gammas}"
    return str(config["loss"]["coord"])


def default_run_name(config: Mapping[str, Any]) -> str:
    """``tracking.run_name`` or ``{model}-{dataset}-{variant}-s{seed}`` (e.g. ``ccdn-300w-p4-g0.025_0.01_0.05-s0``)."""
    explicit = config["tracking"].get("run_name")
    if explicit:
        return str(explicit)
    model = str(config["model"]["name"]).replace("/", "_")
    return f"{model}-{config['data']['dataset']}-{variant_name(config)}-s{config['seed']}"


def save_config(config: Mapping[str, Any], path: Path) -> None:
    """Write the resolved config as YAML atomically (temporary name, then ``os.replace``)."""
    write_yaml(path, config)


def _is_runtime_key(dotted: str) -> bool:
    return any(dotted == key or dotted.startswith(f"{key}.") for key in RUNTIME_KEYS)


def _short_number(value: float) -> str:
    return f"{float(value):g}"


def _known(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(mapping)) or "(none)"


def _unknown_key(dotted: str, known: Iterable[str], prefix: str, source: str) -> None:
    known_list = ", ".join(f"{prefix}{k}" for k in sorted(known))
    raise ConfigError(f"{source}: unknown config key {dotted!r}; known keys here: {known_list}")
