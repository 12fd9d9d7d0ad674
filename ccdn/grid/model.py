"""The grid's data model: datasets, tables and figures it knows, experiments, runs, and the path
conventions of docs/architecture.md (where every run's files live)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ccdn.config import ConfigError
from ccdn.data.schemes import DATASETS as DATASET_TABLE

DATASETS: tuple[str, ...] = tuple(DATASET_TABLE)  # from the one dataset table (ccdn.data.schemes)
# Datasets without a training split (COFW-68 is evaluated with the 300W model).
TEST_ONLY_DATASETS: frozenset[str] = frozenset(n for n, info in DATASET_TABLE.items() if "train" not in info.subsets)

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

DEFAULT_PATHS: dict[str, str] = {"raw": "data/raw", "prepared": "data/prepared", "runs": "runs", "results": "results"}
DEFAULT_BASE_CONFIG = "ccdn/configs/default.yaml"


OCCLUSION_SWEEP = "occlusion_sweep"  # the synthetic sweep set's folder name under raw/, prepared/ and eval/
SWEEP_STEM = "occlusion_sweep"  # its figure (png, pdf) and curve data (csv)
RUN_CONFIG_NAME = "run_config.yaml"  # in each run directory, beside the config.yaml `ccdn train` records
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


def recipe_for(recipe: Mapping[str, Any], dataset_recipe: Mapping[str, Mapping[str, Any]],
               model_recipe: Mapping[str, Mapping[str, Any]], model: str, dataset: str) -> dict[str, Any]:
    """The dotted settings of one (model, training set) over the base config, later ones winning: `recipe`,
    the training set's `dataset_recipe` (e.g. more epochs for WFLW's 98 points), the model's `model_recipe`
    (e.g. a larger input for a stride-32 backbone)."""
    return {**recipe, **dataset_recipe.get(dataset, {}), **model_recipe.get(model, {})}


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
    occlusion_sweep: Mapping[str, Any] | None = None  # levels, faces, seed, experiments; None: no sweep
    dataset_recipe: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # training set -> dotted settings
    model_recipe: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # model name -> dotted settings

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
    def compute_report_path(self) -> Path:
        """Measured seconds for people (``ccdn.report.compute.compute_paths``); git-ignored: they change."""
        return self.results_dir / "compute.md"

    @property
    def compute_data_path(self) -> Path:
        """Measured seconds as data (``ccdn.report.compute.compute_paths``); git-ignored: they change."""
        return self.metrics_dir / "compute.json"

    @property
    def readme_path(self) -> Path:
        return self.results_dir / "README.md"

    @property
    def track_summary_path(self) -> Path:
        """What `ccdn track` did with each run (imported into MLflow, unchanged, tracked live)."""
        return self._path("runs", "mlflow_track.json")

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
    def run_config_path(self, run_name: str) -> Path:
        """The run's fully resolved training config, written by `ccdn grid run-config` for `ccdn train --config`."""
        return self.run_dir(run_name) / RUN_CONFIG_NAME

    def run_settings(self, run_name: str) -> list[tuple[str, Any]]:
        """The dotted settings one run applies over `base_config`, in order (later wins): the run's own
        facts, then `recipe`, `dataset_recipe` and `model_recipe`, then the experiment's `overrides`
        (`ccdn.grid.run_config` resolves them)."""
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
        return [*fixed.items(), *tags.items(), *self.recipe_for(exp.model, exp.train).items(), *exp.overrides.items()]

    def recipe_for(self, model: str, dataset: str) -> dict[str, Any]:
        """`recipe`, then the training set's `dataset_recipe`, then the model's `model_recipe` settings."""
        return recipe_for(self.recipe, self.dataset_recipe, self.model_recipe, model, dataset)

    def synth_arguments(self, dataset: str) -> list[str]:
        """The options of `ccdn synth` for a synthetic dataset."""
        spec = self.datasets[dataset]
        args = ["--seed", str(spec.get("seed", 0))]
        if "n_train" in spec and dataset not in TEST_ONLY_DATASETS:
            args += ["--n-train", str(spec["n_train"])]
        if "n_test" in spec:
            args += ["--n-test", str(spec["n_test"])]
        return args

    # -- the synthetic occlusion sweep -----------------------------------------------------------
    @property
    def sweep_evaluations(self) -> list[tuple[Run, str]]:
        """(run, ``OCCLUSION_SWEEP``) for every run of the sweep's experiments; empty without a sweep."""
        wanted = set(self.occlusion_sweep["experiments"]) if self.occlusion_sweep else set()
        return [(run, OCCLUSION_SWEEP) for run in self.runs if run.experiment.id in wanted]

    def sweep_synth_arguments(self) -> list[str]:
        """The options of `ccdn synth cofw68` that write the sweep set."""
        spec = self.occlusion_sweep or {}
        levels = ",".join(format(float(v), "g") for v in spec.get("levels", []))
        return ["--seed", str(spec.get("seed", 0)), "--n-train", "0", "--n-test", str(spec.get("faces", 0)),
                "--occlusion-levels", levels]

    @property
    def sweep_outputs(self) -> list[Path]:
        """The sweep's figure (png, pdf) and curve data (csv); empty without a sweep."""
        if not self.occlusion_sweep:
            return []
        return [self.figures_dir / f"{SWEEP_STEM}.png", self.figures_dir / f"{SWEEP_STEM}.pdf",
                self.metrics_dir / f"{SWEEP_STEM}.csv"]

    def prepare_overrides(self) -> list[str]:
        return as_overrides(self.prepare)

    def to_dict(self) -> dict[str, Any]:
        """The grid as a config mapping with every default filled in (what `resolve` writes)."""
        return {
            "synthetic": self.synthetic,
            "base_config": self.base_config,
            "paths": dict(self.paths),
            "datasets": {name: dict(spec) for name, spec in self.datasets.items()},
            "prepare": dict(self.prepare),
            "recipe": dict(self.recipe),
            "dataset_recipe": {name: dict(settings) for name, settings in self.dataset_recipe.items()},
            "model_recipe": {name: dict(settings) for name, settings in self.model_recipe.items()},
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
            **({"occlusion_sweep": _plain_sweep(self.occlusion_sweep)} if self.occlusion_sweep else {}),
        }


def _plain_sweep(sweep: Mapping[str, Any]) -> dict[str, Any]:
    return {"levels": list(sweep["levels"]), "faces": int(sweep["faces"]), "seed": int(sweep.get("seed", 0)),
            "experiments": list(sweep["experiments"])}


def as_overrides(mapping: Mapping[str, Any]) -> list[str]:
    return [f"{key}={format_override_value(value)}" for key, value in mapping.items()]


def format_override_value(value: Any) -> str:
    """A value as YAML flow text, the form `key=value` overrides are parsed from."""
    if isinstance(value, str):
        # keep plain strings plain unless YAML would read them as something else
        return value if yaml.safe_load(value) == value and "\n" not in value else json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
