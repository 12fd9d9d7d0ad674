"""Reading a grid config: validate it, resolve each experiment's training config (so a typo fails
before the pipeline starts, and each experiment gets its P and gammas), expand it into runs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ccdn.config import ConfigError, apply_settings, excitations_of, load_config
from ccdn.config import validate_config as validate_training_config
from ccdn.grid.model import (
    DEFAULT_BASE_CONFIG,
    DEFAULT_PATHS,
    RUN_NAME_RE,
    TABLE_DATASETS,
    TEST_ONLY_DATASETS,
    Experiment,
    Grid,
    GridError,
    Run,
    recipe_for,
)
from ccdn.grid.schema import validate_config
from ccdn.models import is_model, list_models


def load_grid(
    path: str | os.PathLike[str] = "config/config.yaml", *, root: str | os.PathLike[str] | None = None
) -> Grid:
    """Read, validate and expand a grid config; errors name the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"{path}: grid config not found (expected a YAML file such as config/config.yaml)")
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML: {exc}") from exc
    return grid_from_mapping(mapping, source=str(path), root=root)


def grid_from_mapping(
    mapping: Any, *, source: str = "<config>", root: str | os.PathLike[str] | None = None
) -> Grid:
    """Validate an already-parsed config (e.g. Snakemake's merged `config`) and expand it into runs."""
    if not isinstance(mapping, Mapping):
        raise GridError(f"{source}: the grid config must be a YAML mapping, got {type(mapping).__name__}")
    config = _plain(mapping)
    validate_config(config, source=source)
    root_path = Path(root) if root is not None else None
    paths = {**DEFAULT_PATHS, **config.get("paths", {})}
    datasets = {name: {"seed": 0, **spec} for name, spec in config["datasets"].items()}
    any_synth = any(spec["source"] == "synth" for spec in datasets.values())
    synthetic = config.get("synthetic", any_synth)
    if any_synth and not synthetic:
        synth_names = [n for n, s in datasets.items() if s["source"] == "synth"]
        raise GridError(
            f"{source}: synthetic: false but datasets {synth_names} have source: synth; results from synthetic "
            "data must be marked - set synthetic: true (or fetch the real data)"
        )
    base_config = config.get("base_config", DEFAULT_BASE_CONFIG)
    recipe = config.get("recipe", {})
    resolve_training_config(base_config, list(recipe.items()), root_path, f"{source}: recipe")  # recipe errors first
    dataset_recipe, model_recipe = config.get("dataset_recipe", {}), config.get("model_recipe", {})
    experiments = [
        _build_experiment(raw, recipe_for(recipe, dataset_recipe, model_recipe, raw["model"], raw["train"]),
                          base_config, root_path, f"{source}: experiments[{i}] ({raw['id']})")
        for i, raw in enumerate(config["experiments"])
    ]
    for key, names, used in (("dataset_recipe", dataset_recipe, {e.train for e in experiments}),
                             ("model_recipe", model_recipe, {e.model for e in experiments})):
        if set(names) - used:
            raise GridError(f"{source}: {key} names {sorted(set(names) - used)}, which no experiment trains; "
                            "fix the name or remove the entry")
    _check_experiments(experiments, datasets, source)
    sweep = config.get("occlusion_sweep")
    if sweep is not None:
        sweep = {"seed": 0, **sweep}
        _check_sweep(sweep, experiments, source)
    seeds = [int(s) for s in config["seeds"]]
    runs = [Run(name=f"{e.id}-s{seed}", experiment=e, seed=seed) for e in experiments for seed in seeds]
    return Grid(
        source=source,
        synthetic=bool(synthetic),
        base_config=base_config,
        paths=paths,
        datasets=datasets,
        prepare=config.get("prepare", {}),
        recipe=recipe,
        evaluation={"flip": False, **config.get("evaluation", {})},
        seeds=seeds,
        experiments=experiments,
        runs=runs,
        root=root_path,
        occlusion_sweep=sweep,
        dataset_recipe=dataset_recipe,
        model_recipe=model_recipe,
    )


def _check_experiments(experiments: list[Experiment], datasets: Mapping[str, Any], source: str) -> None:
    """Cross-field rules the schema cannot express."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, e in enumerate(experiments):
        where = f"{source}: experiments[{i}] ({e.id})"
        if e.id in seen:
            problems.append(f"{where}: duplicate id; every experiment id must be unique")
        seen.add(e.id)
        for name in (e.train, *e.evaluate):
            if name not in datasets:
                problems.append(
                    f"{where}: dataset {name!r} is not under `datasets:`; add it there (source: synth|fetch)"
                )
        if not is_model(e.model):
            problems.append(f"{where}: model {e.model!r} is not registered; registered models: {', '.join(list_models())}")
        if e.train in TEST_ONLY_DATASETS:
            problems.append(f"{where}: train: {e.train} has no training split; train on 300w and evaluate on {e.train}")
        for table in e.tables:
            wanted = TABLE_DATASETS[table]
            if not set(wanted) & set(e.evaluate):
                problems.append(
                    f"{where}: listed in {table} but evaluates none of {list(wanted)}; add one to `evaluate`"
                )
    if problems:
        raise GridError("invalid grid config:\n  " + "\n  ".join(problems))


def _check_sweep(sweep: Mapping[str, Any], experiments: list[Experiment], source: str) -> None:
    """The sweep's experiments exist and predict the 68 points its faces are annotated with."""
    from ccdn.data.schemes import DATASETS as DATASET_TABLE

    known = {e.id: e for e in experiments}
    problems = []
    for i, experiment_id in enumerate(sweep["experiments"]):
        where = f"{source}: occlusion_sweep.experiments[{i}] ({experiment_id})"
        if experiment_id not in known:
            problems.append(f"{where}: no such experiment; use ids listed under `experiments:`")
        elif DATASET_TABLE[known[experiment_id].train].scheme != "68":
            problems.append(f"{where}: trained on {known[experiment_id].train}, not on 68 points; the sweep's faces "
                            "carry the 68 points of 300W: list experiments trained on 300w")
    if problems:
        raise GridError("invalid grid config:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------
# deriving P and gammas from the resolved training config
# ----------------------------------------------------------------------------------------------


def _build_experiment(
    raw: Mapping[str, Any], recipe: Mapping[str, Any], base_config: str, root: Path | None, where: str
) -> Experiment:
    overrides = dict(raw.get("overrides", {}))
    resolved = resolve_training_config(base_config, [*recipe.items(), *overrides.items()], root, where)
    num_excitations = excitations_of(raw["model"], resolved["model"]["options"])
    return Experiment(
        id=raw["id"],
        label=raw["label"],
        model=raw["model"],
        train=raw["train"],
        evaluate=tuple(raw["evaluate"]),
        overrides=overrides,
        tables=tuple(raw.get("tables", [])),
        num_excitations=num_excitations,
        gammas=tuple(float(g) for g in resolved["loss"]["gammas"]),
    )


def run_config(grid: Grid, run_name: str) -> dict[str, Any]:
    """One run's fully resolved training config: what `ccdn grid run-config` writes to
    `grid.run_config_path(run)` and `ccdn train --config` reads (the one hand-off from grid to run)."""
    return resolve_training_config(grid.base_config, grid.run_settings(run_name), grid.root,
                                   f"{grid.source}: run {run_name}")


def resolve_training_config(
    base_config: str, settings: Sequence[tuple[str, Any]], root: Path | None = None, where: str = "<config>"
) -> dict[str, Any]:
    """`base_config` with the dotted `settings` applied in order (values as parsed from the grid file).

    Doing it here (not at training time) turns a typo in `recipe`/`overrides` into an error before
    the pipeline starts, and gives each experiment its P and gammas for the tables.
    """
    path = Path(base_config)
    if root is not None and not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise GridError(f"{where}: base_config {base_config} not found (relative to the working directory)")
    try:
        config = apply_settings(load_config(path), settings, source=where)
        validate_training_config(config)
        return config
    except ConfigError as exc:
        raise GridError(f"{where}: {exc}") from exc


def _plain(value: Any) -> Any:
    """Snakemake hands config as its own mapping/list types; JSON Schema wants plain dicts/lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_run_name(run_name: str) -> tuple[str, int]:
    """'ccdn-300w-p2-s0' -> ('ccdn-300w-p2', 0)."""
    match = RUN_NAME_RE.match(run_name)
    if not match:
        raise GridError(f"run name {run_name!r} is not of the form '{{experiment id}}-s{{seed}}'")
    return match["id"], int(match["seed"])


