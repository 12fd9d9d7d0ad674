# Imports, the validated experiment grid and every input/params function of the pipeline.
# The grid (runs, names, paths) comes from ccdn.grid, the same code `ccdn report` uses.

import json
import os
import re
import shlex

from ccdn.grid import FIGURES, OCCLUSION_SWEEP, TABLES, grid_from_mapping, run_config


def config_source():
    """The config file this run uses, for error messages."""
    files = [str(f) for f in workflow.overwrite_configfiles]
    return ", ".join(files) if files else "config/config.yaml"


GRID = grid_from_mapping(config, source=config_source())
GRID_FILE = str(GRID.results_dir / "config.yaml")  # the resolved grid `ccdn report` reads
STEM_TO_TABLE = {stem: table for table, stem in TABLES.items()}
CLAIMS_FILE = "config/claims.yaml"  # the paper's claims checked under each table (ccdn/report/analysis.py)
HEADLINE_DIR = str(GRID.metrics_dir / "headline")  # what `dvc metrics show` reads


def _alternatives(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(str(n)) for n in names) or "(?!x)x"


wildcard_constraints:
    dataset=_alternatives(GRID.datasets),
    run=_alternatives(run.name for run in GRID.runs),
    stem=_alternatives(TABLES.values()),


# ---- targets -------------------------------------------------------------------------------


def raw_marker(dataset):
    """The file that proves a dataset's raw folder is complete (what `prepare` depends on)."""
    name = "SYNTHETIC.json" if GRID.datasets[dataset]["source"] == "synth" else ".fetched"
    return str(GRID.raw_dir(dataset) / name)


def raw_data_targets():
    return [raw_marker(d) for d in GRID.used_datasets]


def prepared_data_targets():
    return [str(GRID.prepared_dir(d)) for d in GRID.used_datasets]


def model_targets():
    return [str(GRID.run_dir(run.name) / "model.pt") for run in GRID.runs]


def evaluation_targets():
    return [str(GRID.metrics_path(run.name, d)) for run, d in GRID.evaluations]


def table_targets():
    return [str(p) for table in GRID.tables for p in GRID.table_outputs(table)]


def figure_targets():
    """Figure files plus, for CED figures, their curves as CSV (DVC plots)."""
    files = []
    for fig in GRID.figures:
        files += [str(p) for p in GRID.figure_outputs(fig)]
        files += [str(GRID.ced_data_path(fig))] if FIGURES[fig].ced else []
    return files


LEARNING_TABLES = ("table2", "table4", "table5")  # = ccdn.report.curves.METHOD_TABLES (not imported: matplotlib)


def learning_inputs(wildcards):
    """The models (their history.json) of the runs drawn in the learning curves."""
    return [str(GRID.run_dir(r.name) / "model.pt") for r in GRID.runs if set(r.experiment.tables) & set(LEARNING_TABLES)]


def learning_files():
    """Learning curves (png, pdf) and their data as CSV (DVC plots)."""
    return [str(GRID.figures_dir / f"learning_curves{ext}") for ext in (".png", ".pdf")] + [
        str(GRID.metrics_dir / "learning_curves.csv")
    ]


OCCLUSION_TABLES = ("table2", "table3", "table4", "table5")  # = ccdn.report.occlusion.SOURCES' tables


def occlusion_files():
    """Occlusion stress: table (md, csv), figure (png, pdf), curve data (csv, DVC plots)."""
    return [str(GRID.tables_dir / "occlusion.md"), str(GRID.tables_dir / "occlusion.csv"),
            str(GRID.figures_dir / "occlusion.png"), str(GRID.figures_dir / "occlusion.pdf"),
            str(GRID.metrics_dir / "occlusion.csv")]


def occlusion_inputs(wildcards):
    """The evaluations of the method tables and the prepared test sets holding the occlusion flags."""
    chosen = [(run, d) for table in OCCLUSION_TABLES for run, d in GRID.table_evaluations(table)]
    return sorted({str(GRID.metrics_path(run.name, d)) for run, d in chosen}) + sorted(
        {str(GRID.prepared_dir(d)) for _, d in chosen})


def sweep_files():
    """The synthetic occlusion sweep's figure (png, pdf) and curve data (csv); none without `occlusion_sweep`."""
    return [str(p) for p in GRID.sweep_outputs]


def sweep_inputs(wildcards):
    """The sweep's evaluations and its prepared set (the per-point occlusion flags)."""
    return [str(GRID.metrics_path(run.name, d)) for run, d in GRID.sweep_evaluations] + [
        str(GRID.prepared_dir(OCCLUSION_SWEEP))]


def sweep_synth_arguments(wildcards):
    return shlex.join(GRID.sweep_synth_arguments())


def final_outputs():
    """Every model, evaluation, table and figure of the grid, the metrics summary and results/README.md.

    Models and evaluations are targets themselves (not only intermediates), so that deleting one
    run's model.pt retrains that run and then refreshes exactly what depends on it.
    """
    reports = table_targets() + figure_targets() + learning_files() + occlusion_files() + sweep_files()
    reports += [str(GRID.summary_path), HEADLINE_DIR] + compute_files()
    reports += [str(GRID.readme_path)]
    return model_targets() + evaluation_targets() + reports + [str(GRID.track_summary_path)]


# ---- data -----------------------------------------------------------------------------------


def synth_datasets():
    return [d for d, spec in GRID.datasets.items() if spec["source"] == "synth"]


def fetch_datasets():
    return [d for d, spec in GRID.datasets.items() if spec["source"] == "fetch"]


def raw_input(wildcards):
    return raw_marker(wildcards.dataset)


def raw_dir(wildcards):
    return str(GRID.raw_dir(wildcards.dataset))


def raw_root(wildcards):
    """`ccdn fetch --root` takes the folder holding every dataset's raw folder."""
    return str(GRID.raw_dir(wildcards.dataset).parent)


def synth_arguments(wildcards):
    return shlex.join(GRID.synth_arguments(wildcards.dataset))


def prepare_settings(wildcards):
    return shlex.join(GRID.prepare_overrides())


# ---- training and evaluation ----------------------------------------------------------------


def train_data(wildcards):
    return str(GRID.prepared_dir(GRID.run(wildcards.run).experiment.train))


def run_dir(wildcards):
    return str(GRID.run_dir(wildcards.run))


def run_config_json(wildcards):
    """The run's fully resolved training config as JSON: a params value, so that a change to it
    rewrites run_config.yaml and retrains this run (and only this run)."""
    return json.dumps(run_config(GRID, wildcards.run), sort_keys=True)


def all_run_configs_json(wildcards):
    """Every run's resolved config: a change to any rewrites the run configs (the train rule's own
    params.resolved then retrains only the runs whose config changed)."""
    return json.dumps({run.name: run_config(GRID, run.name) for run in GRID.runs}, sort_keys=True)


def test_data(wildcards):
    return str(GRID.prepared_dir(wildcards.dataset))


def eval_dir(wildcards):
    return str(GRID.eval_dir(wildcards.run, wildcards.dataset))


def evaluate_flags(wildcards):
    return "--flip" if GRID.evaluation.get("flip") else ""


# ---- reports --------------------------------------------------------------------------------


def grid_json(wildcards):
    """The merged config as JSON (a params value, so editing the config re-resolves the grid)."""
    return json.dumps(GRID.to_dict(), sort_keys=True)


def table_inputs(wildcards):
    table = STEM_TO_TABLE[wildcards.stem]
    return [str(GRID.metrics_path(run.name, d)) for run, d in GRID.table_evaluations(table)]


def table_number(wildcards):
    return STEM_TO_TABLE[wildcards.stem].removeprefix("table")


def output_folder(wildcards, output):
    """The folder of a rule's first output (report commands take a folder, not file names)."""
    return os.path.dirname(output[0])


def figure_metrics(figure):
    """The evaluations a figure is drawn from (their metrics.json; predictions/maps sit next to them)."""
    return [str(GRID.metrics_path(run.name, d)) for run, d in GRID.figure_evaluations(figure)]


def figure_files(figure):
    return [str(p) for p in GRID.figure_outputs(figure)]


def ced_data(figure):
    return str(GRID.ced_data_path(figure))


def all_metrics(wildcards):
    return evaluation_targets()


def compute_files():
    """Measured seconds (compute.md, compute.json): the only results files that change between reruns (git-ignored)."""
    return [str(GRID.compute_report_path), str(GRID.compute_data_path)]


def compute_inputs(wildcards):
    """Every run's history (its model.pt) and evaluation (metrics.json with its timing)."""
    return model_targets() + evaluation_targets()


def readme_inputs(wildcards):
    return table_targets() + figure_targets() + learning_files() + occlusion_files() + sweep_files() + [
        str(GRID.summary_path), HEADLINE_DIR] + compute_files()
