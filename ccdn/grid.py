"""The experiment grid behind the paper's tables and figures, written once in a YAML file.

`config/config.yaml` (embedded synthetic default) and `config/paper.yaml` (real data, the paper's
recipe) follow `workflow/schemas/config.schema.yaml`. Snakemake (`workflow/rules/common.smk`) and
`ccdn report` both read the grid through `load_grid`, so the set of runs, their names and where their
files live are decided in one place.

    grid = load_grid("config/config.yaml")
    for run in grid.runs:                      # every experiment x every seed
        print(run.name, grid.metrics_path(run.name, "300w"))

Command line (used by the pipeline to record the grid it ran, and handy for checking a config):

    python -m ccdn.grid check config/config.yaml
    python -m ccdn.grid resolve config/config.yaml --out results/config.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccdn.config import ConfigError, load_config

DATASETS: tuple[str, ...] = ("300w", "cofw68", "aflw", "wflw")
TEST_ONLY_DATASETS: frozenset[str] = frozenset({"cofw68"})  # COFW-68 is evaluated with the 300W model

# Output file stems of `ccdn report table N` (each written as .md, .csv and .tex) and the test
# dataset(s) each table reads; an experiment listing a table must evaluate one of them.
TABLES: dict[str, str] = {
    "table2": "table2_300w",
    "table3": "table3_cofw68",
    "table4": "table4_aflw",
    "table5": "table5_wflw",
    "table6": "table6_gamma",
    "table7": "table7_excitations",
}
TABLE_DATASETS: dict[str, tuple[str, ...]] = {
    "table2": ("300w",),
    "table3": ("cofw68",),
    "table4": ("aflw",),
    "table5": ("wflw",),
    "table6": ("300w",),
    "table7": ("300w", "aflw", "wflw"),
}
TABLE_EXTENSIONS: tuple[str, ...] = (".md", ".csv", ".tex")


@dataclass(frozen=True)
class FigureSpec:
    """A paper figure: its output stem, formats, and which evaluations it is drawn from."""

    stem: str
    extensions: tuple[str, ...]
    table: str  # the experiments of this table ...
    dataset: str  # ... evaluated on this dataset
    num_excitations: tuple[int, ...] = ()  # if set, only runs with these P (Fig. 8: two vs four blocks)
    ced: bool = True  # a CED figure also writes its curves as results/metrics/ced_<name>.csv


FIGURES: dict[str, FigureSpec] = {
    "fig5": FigureSpec("fig5_ced_300w_challenging", (".png", ".pdf"), "table2", "300w"),
    "fig7": FigureSpec("fig7_ced_aflw_full", (".png", ".pdf"), "table4", "aflw"),
    "fig8": FigureSpec("fig8_activation_maps", (".png",), "table7", "300w", num_excitations=(2, 4), ced=False),
}

# Models built from excitation blocks (P is meaningful); every other model's num_excitations is None.
MODELS_WITH_EXCITATIONS: frozenset[str] = frozenset({"ccdn", "fcdn"})
PAPER_NUM_EXCITATIONS = 4
DEFAULT_PATHS: dict[str, str] = {"raw": "data/raw", "prepared": "data/prepared", "runs": "runs", "results": "results"}
DEFAULT_BASE_CONFIG = "ccdn/configs/default.yaml"
SCHEMA_RELATIVE = Path("workflow/schemas/config.schema.yaml")
RUN_NAME_RE = re.compile(r"^(?P<id>.+)-s(?P<seed>\d+)$")


class GridError(ConfigError):
    """A grid config that cannot be used; the message names the file, the key and the fix.

    A ConfigError, so `ccdn report --config BAD` prints it as one plain line (ccdn/cli.py).
    """


@dataclass(frozen=True)
class Experiment:
    """One row of the grid: a model trained on one dataset, evaluated on some, feeding some tables."""

    id: str
    label: str
    model: str
    train: str
    evaluate: tuple[str, ...]
    overrides: Mapping[str, Any]
    tables: tuple[str, ...]
    num_excitations: int | None  # P of the resolved training config; None for models without excitation blocks
    gammas: tuple[float, ...]  # (gamma_1, gamma_2, gamma_3) of the resolved training config


@dataclass(frozen=True)
class Run:
    """One training run: an experiment with one seed."""

    name: str
    experiment: Experiment
    seed: int


@dataclass(frozen=True)
class Grid:
    """The validated grid plus the path conventions of docs/architecture.md."""

    source: str
    synthetic: bool
    base_config: str
    paths: Mapping[str, str]
    datasets: Mapping[str, Mapping[str, Any]]
    prepare: Mapping[str, Any]
    recipe: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    seeds: list[int]
    experiments: list[Experiment]
    runs: list[Run] = field(default_factory=list)
    root: Path | None = None

    # -- paths ---------------------------------------------------------------------------------
    def _path(self, key: str, *parts: str) -> Path:
        base = Path(self.paths[key])
        if self.root is not None and not base.is_absolute():
            base = self.root / base
        return base.joinpath(*parts)

    def raw_dir(self, dataset: str) -> Path:
        return self._path("raw", dataset)

    def prepared_dir(self, dataset: str) -> Path:
        return self._path("prepared", dataset)

    def run_dir(self, run_name: str) -> Path:
        return self._path("runs", run_name)

    def eval_dir(self, run_name: str, dataset: str) -> Path:
        return self.run_dir(run_name) / "eval" / dataset

    def metrics_path(self, run_name: str, dataset: str) -> Path:
        return self.eval_dir(run_name, dataset) / "metrics.json"

    def predictions_path(self, run_name: str, dataset: str) -> Path:
        return self.eval_dir(run_name, dataset) / "predictions.npz"

    def activation_maps_path(self, run_name: str, dataset: str) -> Path:
        return self.eval_dir(run_name, dataset) / "activation_maps.npz"

    @property
    def results_dir(self) -> Path:
        return self._path("results")

    @property
    def tables_dir(self) -> Path:
        return self.results_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"

    @property
    def metrics_dir(self) -> Path:
        return self.results_dir / "metrics"

    @property
    def summary_path(self) -> Path:
        return self.metrics_dir / "summary.json"

    @property
    def readme_path(self) -> Path:
        return self.results_dir / "README.md"

    def ced_data_path(self, figure: str) -> Path:
        """The CED curves of a CED figure as CSV (what `dvc plots show` draws)."""
        return self.metrics_dir / f"ced_{figure}.csv"

    def table_outputs(self, table: str) -> list[Path]:
        return [self.tables_dir / f"{TABLES[table]}{ext}" for ext in TABLE_EXTENSIONS]

    def figure_outputs(self, figure: str) -> list[Path]:
        spec = FIGURES[figure]
        return [self.figures_dir / f"{spec.stem}{ext}" for ext in spec.extensions]

    # -- lookups -------------------------------------------------------------------------------
    def experiment(self, experiment_id: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.id == experiment_id:
                return experiment
        raise KeyError(f"no experiment {experiment_id!r} in {self.source}; known: {[e.id for e in self.experiments]}")

    def run(self, run_name: str) -> Run:
        for run in self.runs:
            if run.name == run_name:
                return run
        raise KeyError(f"no run {run_name!r} in {self.source} (run names are '{{id}}-s{{seed}}')")

    def runs_of(self, experiment_id: str) -> list[Run]:
        return [run for run in self.runs if run.experiment.id == experiment_id]

    @property
    def evaluations(self) -> list[tuple[Run, str]]:
        """Every (run, test dataset) pair the grid evaluates."""
        return [(run, dataset) for run in self.runs for dataset in run.experiment.evaluate]

    @property
    def used_datasets(self) -> list[str]:
        """Datasets some experiment trains or evaluates on, in canonical order."""
        used = {e.train for e in self.experiments} | {d for e in self.experiments for d in e.evaluate}
        return [d for d in DATASETS if d in used]

    @property
    def tables(self) -> list[str]:
        """The tables at least one experiment feeds, in paper order."""
        used = {t for e in self.experiments for t in e.tables}
        return [t for t in TABLES if t in used]

    def table_evaluations(self, table: str) -> list[tuple[Run, str]]:
        """The (run, dataset) evaluations a table is built from."""
        wanted = TABLE_DATASETS[table]
        return [(run, d) for run, d in self.evaluations if table in run.experiment.tables and d in wanted]

    def figure_evaluations(self, figure: str) -> list[tuple[Run, str]]:
        """The (run, dataset) evaluations a figure is drawn from (empty: the grid cannot make it)."""
        spec = FIGURES[figure]
        chosen = [
            (run, d)
            for run, d in self.table_evaluations(spec.table)
            if d == spec.dataset
            and (not spec.num_excitations or run.experiment.num_excitations in spec.num_excitations)
        ]
        if spec.num_excitations:  # a comparison figure needs every compared variant
            have = {run.experiment.num_excitations for run, _ in chosen}
            if not set(spec.num_excitations) <= have:
                return []
        return chosen

    @property
    def figures(self) -> list[str]:
        """The figures the grid has the evaluations for."""
        return [f for f in FIGURES if self.figure_evaluations(f)]

    # -- commands ------------------------------------------------------------------------------
    def train_overrides(self, run_name: str) -> list[str]:
        """The `key=value` arguments of `ccdn train` for one run (recipe first, then the experiment's)."""
        run = self.run(run_name)
        exp = run.experiment
        fixed = {
            "seed": run.seed,
            "model.name": exp.model,
            "data.dataset": exp.train,
            "data.root": str(self.prepared_dir(exp.train)),
            "tracking.run_name": run.name,
        }
        tags = {"tracking.tags.grid_experiment": exp.id, "tracking.tags.paper_tables": ",".join(exp.tables) or "none"}
        items = [*fixed.items(), *tags.items(), *self.recipe.items(), *exp.overrides.items()]
        return [f"{key}={format_override_value(value)}" for key, value in items]

    def synth_arguments(self, dataset: str) -> list[str]:
        """The options of `ccdn synth` for a synthetic dataset."""
        spec = self.datasets[dataset]
        args = ["--seed", str(spec.get("seed", 0))]
        if "n_train" in spec and dataset not in TEST_ONLY_DATASETS:
            args += ["--n-train", str(spec["n_train"])]
        if "n_test" in spec:
            args += ["--n-test", str(spec["n_test"])]
        return args

    def prepare_overrides(self) -> list[str]:
        return _as_overrides(self.prepare)

    def to_dict(self) -> dict[str, Any]:
        """The grid as a config mapping with every default filled in (what `resolve` writes)."""
        return {
            "synthetic": self.synthetic,
            "base_config": self.base_config,
            "paths": dict(self.paths),
            "datasets": {name: dict(spec) for name, spec in self.datasets.items()},
            "prepare": dict(self.prepare),
            "recipe": dict(self.recipe),
            "evaluation": dict(self.evaluation),
            "seeds": list(self.seeds),
            "experiments": [
                {
                    "id": e.id,
                    "label": e.label,
                    "model": e.model,
                    "train": e.train,
                    "evaluate": list(e.evaluate),
                    "overrides": dict(e.overrides),
                    "tables": list(e.tables),
                }
                for e in self.experiments
            ],
        }


# ----------------------------------------------------------------------------------------------
# loading and validation
# ----------------------------------------------------------------------------------------------


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
    resolve_training_config(base_config, _as_overrides(recipe), root_path, f"{source}: recipe")  # recipe errors first
    experiments = [
        _build_experiment(raw, recipe, base_config, root_path, f"{source}: experiments[{i}] ({raw['id']})")
        for i, raw in enumerate(config["experiments"])
    ]
    _check_experiments(experiments, datasets, source)
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
    )


def schema_path() -> Path:
    """The JSON Schema: in the checkout next to this package, else in the working directory."""
    candidates = [Path(__file__).resolve().parent.parent / SCHEMA_RELATIVE, Path.cwd() / SCHEMA_RELATIVE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GridError(
        f"schema {SCHEMA_RELATIVE} not found (looked in {', '.join(str(c.parent) for c in candidates)}); "
        "run from a checkout of ccdn-repro or install it editable (pip install -e .)"
    )


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(schema_path().read_text(encoding="utf-8"))


def validate_config(config: Mapping[str, Any], *, source: str = "<config>") -> None:
    """JSON-Schema validation with one readable line per problem (key path, what is wrong, what is allowed)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{source}: {_key_path(e.absolute_path)}: {_explain(e)}" for e in errors]
        raise GridError("invalid grid config:\n  " + "\n  ".join(lines))


def _key_path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _explain(error: Any) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown key(s) {unknown}; allowed keys: {allowed}"
    if error.validator == "propertyNames":
        return f"{error.message} (allowed: {error.schema.get('propertyNames', {})})"
    if error.validator == "required":
        return f"{error.message} - add it (see workflow/schemas/config.schema.yaml)"
    return error.message


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


# ----------------------------------------------------------------------------------------------
# deriving P and gammas from the resolved training config
# ----------------------------------------------------------------------------------------------


def _build_experiment(
    raw: Mapping[str, Any], recipe: Mapping[str, Any], base_config: str, root: Path | None, where: str
) -> Experiment:
    overrides = dict(raw.get("overrides", {}))
    resolved = resolve_training_config(base_config, [*_as_overrides(recipe), *_as_overrides(overrides)], root, where)
    num_excitations = None
    if raw["model"] in MODELS_WITH_EXCITATIONS:
        num_excitations = int(resolved["model"]["options"].get("num_excitations", PAPER_NUM_EXCITATIONS))
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


def resolve_training_config(
    base_config: str, overrides: Sequence[str], root: Path | None = None, where: str = "<config>"
) -> dict[str, Any]:
    """The training config a run will get: exactly what `ccdn train --config base key=value...` resolves.

    Doing it here (not at training time) turns a typo in `recipe`/`overrides` into an error before
    the pipeline starts, and gives each experiment its P and gammas for the tables.
    """
    path = Path(base_config)
    if root is not None and not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise GridError(f"{where}: base_config {base_config} not found (relative to the working directory)")
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise GridError(f"{where}: {exc}") from exc


def _as_overrides(mapping: Mapping[str, Any]) -> list[str]:
    return [f"{key}={format_override_value(value)}" for key, value in mapping.items()]


def format_override_value(value: Any) -> str:
    """A value as YAML flow text, the form `key=value` overrides are parsed from."""
    if isinstance(value, str):
        # keep plain strings plain unless YAML would read them as something else
        return value if yaml.safe_load(value) == value and "\n" not in value else json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


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


def write_yaml_atomic(data: Mapping[str, Any], out: Path) -> None:
    """Write YAML via a temporary file + rename, so readers never see half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(dict(data), handle, sort_keys=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------
# python -m ccdn.grid
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccdn.grid", description="Check or resolve a grid config.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config and list its runs")
    check.add_argument("config", type=Path)
    resolve = sub.add_parser("resolve", help="write the config with every default filled in")
    resolve.add_argument("config", type=Path, nargs="?", help="a grid YAML file (or use --json)")
    resolve.add_argument("--json", help="the config as a JSON string (how Snakemake passes its merged config)")
    resolve.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            grid = load_grid(args.config)
            for run in grid.runs:
                print(run.name, run.experiment.model, run.experiment.train, ",".join(run.experiment.evaluate))
            print(f"{len(grid.runs)} runs, {len(grid.evaluations)} evaluations, tables {grid.tables}, "
                  f"figures {grid.figures}", file=sys.stderr)
            return 0
        if args.json is not None:
            grid = grid_from_mapping(json.loads(args.json), source="--json")
        elif args.config is not None:
            grid = load_grid(args.config)
        else:
            parser.error("resolve needs a config file or --json")
        write_yaml_atomic(grid.to_dict(), args.out)
        return 0
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
