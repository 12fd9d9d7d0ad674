"""The experiment grid behind the paper's tables and figures, written once in a YAML file.

`config/config.yaml` (embedded synthetic default) and `config/paper.yaml` (real data, the paper's
recipe) follow `workflow/schemas/config.schema.yaml`. Snakemake (`workflow/rules/common.smk`) and
`ccdn report` both read the grid through `load_grid`, so the set of runs, their names and where their
files live are decided in one place.

    grid = load_grid("config/config.yaml")
    for run in grid.runs:                      # every experiment x every seed
        print(run.name, grid.metrics_path(run.name, "300w"))

Command line (used by the pipeline to record the grid it ran, and handy for checking a config):

    ccdn grid check config/config.yaml
    ccdn grid resolve config/config.yaml --out results/config.yaml

Parts: :mod:`.model` (datasets, tables, figures, experiments, runs, paths), :mod:`.schema` (JSON-Schema
check), :mod:`.load` (reading, resolving, expanding), :mod:`.cli` (``ccdn grid``).
"""

from __future__ import annotations

from ccdn.grid.cli import main
from ccdn.grid.load import (
    grid_from_mapping,
    load_grid,
    parse_run_name,
    resolve_training_config,
    run_config,
)
from ccdn.grid.model import (
    DATASETS,
    FIGURES,
    OCCLUSION_SWEEP,
    SWEEP_STEM,
    TABLE_DATASETS,
    TABLE_EXTENSIONS,
    TABLES,
    TEST_ONLY_DATASETS,
    Experiment,
    FigureSpec,
    Grid,
    GridError,
    Run,
    format_override_value,
)
from ccdn.grid.schema import load_schema, schema_path, validate_config

__all__ = [
    "DATASETS",
    "FIGURES",
    "OCCLUSION_SWEEP",
    "SWEEP_STEM",
    "TABLE_DATASETS",
    "TABLE_EXTENSIONS",
    "TABLES",
    "TEST_ONLY_DATASETS",
    "Experiment",
    "FigureSpec",
    "Grid",
    "GridError",
    "Run",
    "format_override_value",
    "grid_from_mapping",
    "load_grid",
    "load_schema",
    "main",
    "parse_run_name",
    "resolve_training_config",
    "run_config",
    "schema_path",
    "validate_config",
]
