"""The experiment grid (ccdn/grid/): schema validation, clear errors, run expansion, both configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ccdn.config import load_config
from ccdn.grid import (
    FIGURES,
    OCCLUSION_SWEEP,
    TABLES,
    GridError,
    grid_from_mapping,
    load_grid,
    main,
    parse_run_name,
    run_config,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["config/config.yaml", "config/paper.yaml", "config/ci_slurm.yaml"]


@pytest.fixture(scope="module")
def default_mapping() -> dict:
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def _grid(mapping: dict):
    return grid_from_mapping(mapping, source="test.yaml", root=ROOT)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load(name: str) -> None:
    grid = load_grid(ROOT / name, root=ROOT)
    assert grid.runs and grid.evaluations
    assert len({run.name for run in grid.runs}) == len(grid.runs)
    for run in grid.runs:  # every run's training config resolves (what `ccdn grid run-config` writes)
        resolved = run_config(grid, run.name)
        assert resolved["model"]["name"] == run.experiment.model
        assert resolved["seed"] == run.seed
        assert resolved["tracking"]["run_name"] == run.name


def test_embedded_default_covers_the_whole_paper() -> None:
    grid = load_grid(ROOT / "config/config.yaml", root=ROOT)
    assert grid.synthetic is True
    assert grid.tables == list(TABLES) and grid.figures == list(FIGURES)
    by_table = {t: {e.id for e in grid.experiments if t in e.tables and e.model != "mean_shape"} for t in TABLES}
    # Every table has the mean-shape reference row of its training set(s), from a run without gradient steps.
    references = {e.train: e for e in grid.experiments if e.model == "mean_shape"}
    assert sorted(references) == ["300w", "aflw", "wflw"]
    assert all(e.overrides.get("optim.epochs") == 0 for e in references.values())
    for table in TABLES:
        assert any(table in e.tables for e in references.values()), table
    # Tables 2-5: Baseline, FCDN, CCDN on each dataset; COFW-68 uses the 300W models.
    for table, dataset in [("table2", "300w"), ("table3", "300w"), ("table4", "aflw"), ("table5", "wflw")]:
        models = {grid.experiment(i).model for i in by_table[table] if grid.experiment(i).train == dataset}
        assert {"baseline", "fcdn", "ccdn"} <= models, table
    assert all("cofw68" in grid.experiment(i).evaluate for i in by_table["table3"])
    # Table 6: the five gamma rows of the paper, the chosen one being the main CCDN run (trained once).
    gammas = sorted(grid.experiment(i).gammas for i in by_table["table6"])
    assert gammas == sorted([(0.01, 0.01, 0.01), (0.01, 0.01, 0.025), (0.025, 0.01, 0.025),
                             (0.025, 0.01, 0.05), (0.025, 0.01, 0.1)])
    assert "ccdn-300w" in by_table["table6"] and "ccdn-300w" in by_table["table2"]
    # Table 7: P = 1..4 on 300W, AFLW and WFLW, P = 4 being each dataset's main CCDN run; the Baseline runs
    # feed the P = 1 row (the paper's P = 1 cells are its Baseline cells), ccdn P = 1 is an extra row that the
    # embedded default trains on 300W only (its 2-core budget).
    for dataset in ("300w", "aflw", "wflw"):
        ps = {grid.experiment(i).num_excitations: i for i in by_table["table7"] if grid.experiment(i).train == dataset
              and grid.experiment(i).model == "ccdn"}
        assert sorted(ps) == ([1, 2, 3, 4] if dataset == "300w" else [2, 3, 4])
        assert ps[4] == f"ccdn-{dataset}"
        assert f"baseline-{dataset}" in by_table["table7"]
    # Registered baselines on 300W.
    assert {"timm/resnet18", "hg_heatmap"} <= {e.model for e in grid.experiments if e.train == "300w"}
    # No experiment is trained twice: (model, dataset, P, gammas, overrides) are unique.
    keys = [(e.model, e.train, e.num_excitations, e.gammas) for e in grid.experiments]
    assert len(keys) == len(set(keys))


def test_paper_config_is_the_same_grid_on_real_data() -> None:
    default = load_grid(ROOT / "config/config.yaml", root=ROOT)
    paper = load_grid(ROOT / "config/paper.yaml", root=ROOT)
    assert paper.experiments == default.experiments, "config/paper.yaml's experiments drifted from config.yaml's"
    assert paper.synthetic is False
    assert {spec["source"] for spec in paper.datasets.values()} == {"fetch"}
    assert len(paper.seeds) == 3 and paper.recipe == {}
    assert len(paper.runs) == 3 * len(default.runs)
    # the paper's recipe: ccdn/configs/default.yaml untouched
    resolved = run_config(paper, "ccdn-300w-s2")
    assert resolved["model"]["options"] == {"stacks": 4, "channels": 256, "input_size": 128, "num_excitations": 4}
    assert resolved["optim"]["epochs"] == 120 and resolved["loss"]["gammas"] == [0.025, 0.01, 0.05]


def test_run_expansion_names_and_paths(default_mapping: dict) -> None:
    mapping = copy.deepcopy(default_mapping)
    mapping["seeds"] = [0, 7]
    mapping["paths"] = {"runs": "elsewhere/runs", "results": "out"}
    grid = _grid(mapping)
    assert len(grid.runs) == 2 * len(grid.experiments)
    run = grid.run("ccdn-300w-p2-s7")
    assert (run.experiment.id, run.seed, run.experiment.num_excitations) == ("ccdn-300w-p2", 7, 2)
    assert parse_run_name(run.name) == ("ccdn-300w-p2", 7)
    assert grid.run_dir(run.name) == ROOT / "elsewhere/runs/ccdn-300w-p2-s7"
    assert grid.metrics_path(run.name, "300w") == ROOT / "elsewhere/runs/ccdn-300w-p2-s7/eval/300w/metrics.json"
    assert grid.predictions_path(run.name, "cofw68").name == "predictions.npz"
    assert grid.activation_maps_path(run.name, "300w").name == "activation_maps.npz"
    assert grid.results_dir == ROOT / "out"
    assert grid.prepared_dir("aflw") == ROOT / "data/prepared/aflw"  # unspecified paths keep their defaults
    assert grid.table_outputs("table6") == [ROOT / f"out/tables/table6_gamma{ext}" for ext in (".md", ".csv", ".tex")]
    # baselines have no excitation blocks
    assert grid.experiment("baseline-300w").num_excitations is None
    assert grid.experiment("timm-resnet18-300w").num_excitations is None
    # evaluations: 300W models also on COFW-68
    evaluated = {(r.name, d) for r, d in grid.evaluations}
    assert ("ccdn-300w-s0", "cofw68") in evaluated and ("ccdn-aflw-s0", "cofw68") not in evaluated
    # Fig. 8 compares P = 2 and P = 4 on 300W
    assert sorted(r.experiment.num_excitations for r, _ in grid.figure_evaluations("fig8") if r.seed == 0) == [2, 4]


def test_run_config_is_the_one_hand_off_to_train(default_mapping: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    grid = _grid(default_mapping)
    settings = grid.run_settings("ccdn-300w-g0.01-0.01-0.01-s0")
    assert settings[:5] == [("seed", 0), ("model.name", "ccdn"), ("data.dataset", "300w"),
                            ("data.root", str(ROOT / "data/prepared/300w")),
                            ("tracking.run_name", "ccdn-300w-g0.01-0.01-0.01-s0")]
    # recipe first, experiment overrides last (they win)
    keys = [key for key, _ in settings]
    assert keys.index("optim.epochs") < keys.index("loss.gammas")
    resolved = run_config(grid, "ccdn-300w-g0.01-0.01-0.01-s0")
    assert resolved["loss"]["gammas"] == [0.01, 0.01, 0.01]
    assert resolved["tracking"]["tags"]["grid_experiment"] == "ccdn-300w-g0.01-0.01-0.01"
    assert isinstance(resolved["optim"]["lr"], float)  # `2.0e-3` in the grid file is a number, as in --config files
    # `ccdn grid run-config` writes it; `ccdn train --config FILE` reads exactly this config back
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run_config.yaml"
    assert main(["run-config", "config/config.yaml", "--run", "ccdn-300w-p2-s0", "--out", str(out)]) == 0
    assert load_config(out) == run_config(load_grid("config/config.yaml"), "ccdn-300w-p2-s0")
    assert load_config(out)["model"]["options"]["num_excitations"] == 2
    assert main(["run-config", "config/config.yaml", "--run", "ccdn-300w-p9-s0", "--out", str(out)]) == 2
    assert grid.run_config_path("ccdn-300w-p2-s0") == grid.run_dir("ccdn-300w-p2-s0") / "run_config.yaml"


def test_run_config_all_writes_every_run_in_one_process(default_mapping: dict, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mapping = copy.deepcopy(default_mapping)
    mapping["paths"] = {"runs": str(tmp_path / "runs")}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(mapping))
    monkeypatch.chdir(ROOT)  # base_config is relative to the project
    assert main(["run-config", str(tmp_path / "grid.yaml"), "--all"]) == 0
    grid = load_grid(tmp_path / "grid.yaml")
    for run in grid.runs:
        assert load_config(grid.run_config_path(run.name)) == run_config(grid, run.name)
    assert main(["run-config", str(tmp_path / "grid.yaml"), "--all", "--out", str(tmp_path / "x.yaml")]) == 2


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda m: m.update(sede=[0]), "unknown key(s) ['sede']"),
        (lambda m: m["experiments"][2].update(tabels=["table2"]), "experiments[2]: unknown key(s) ['tabels']"),
        (lambda m: m["experiments"][0].update(train="300W"), "experiments[0].train"),
        (lambda m: m["experiments"][0].update(tables=["table9"]), "experiments[0].tables[0]"),
        (lambda m: m["datasets"].update(menpo={"source": "synth"}), "datasets"),
        (lambda m: m["datasets"]["300w"].update(source="download"), "datasets.300w.source"),
        (lambda m: m.pop("seeds"), "'seeds' is a required property"),
        (lambda m: m.update(seeds=[]), "seeds"),
        (lambda m: m["experiments"][1].update(id=m["experiments"][0]["id"]), "duplicate id"),
        (lambda m: m["experiments"][0].update(train="cofw68"), "has no training split"),
        (lambda m: m["experiments"][0].update(evaluate=["cofw68"], tables=["table2"]), "listed in table2"),
        (lambda m: m["datasets"].pop("wflw"), "dataset 'wflw' is not under `datasets:`"),
        (lambda m: m.update(synthetic=False), "synthetic: false but datasets"),
        (lambda m: m["recipe"].update({"optim.learning_rate": 0.1}), "recipe: optim.learning_rate: unknown config key"),
        (lambda m: m["experiments"][6].update(overrides={"model.options.num_excitations": 2, "loss.gamas": [1]}),
         "experiments[6] (baseline-aflw)"),
        (lambda m: m.update(base_config="nowhere/default.yaml"), "base_config nowhere/default.yaml not found"),
        (lambda m: m["experiments"][0].update(model="cdnn"), "model 'cdnn' is not registered; registered models:"),
        (lambda m: m.update(model_recipe={"timm/resnet81": {"model.options.input_size": 48}}),
         "model_recipe names ['timm/resnet81'], which no experiment trains"),
        (lambda m: m.update(dataset_recipe={"cofw68": {"optim.epochs": 3}}),
         "dataset_recipe names ['cofw68'], which no experiment trains"),
        (lambda m: m.update(model_recipe={"timm/resnet18": {"optim.lerning_rate": 1}}),
         "experiments[23] (timm-resnet18-300w)"),
        # the allowed names come from the dataset table (ccdn.data.schemes.DATASETS), not the schema file
        (lambda m: m["experiments"][0].update(evaluate=["300W"]), "'300W' is not one of ['300w', 'cofw68', 'aflw', 'wflw']"),
    ],
)
def test_bad_config_names_the_key(default_mapping: dict, mutate, needle: str) -> None:
    mapping = copy.deepcopy(default_mapping)
    mutate(mapping)
    with pytest.raises(GridError) as info:
        _grid(mapping)
    assert needle in str(info.value)
    assert "test.yaml" in str(info.value)  # the file is named


def test_load_grid_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="not found"):
        load_grid(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments: [\n")
    with pytest.raises(GridError, match=r"bad\.yaml: not valid YAML"):
        load_grid(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(GridError, match="must be a YAML mapping"):
        load_grid(listed)


def test_defaults_are_filled(default_mapping: dict) -> None:
    mapping = {k: v for k, v in copy.deepcopy(default_mapping).items() if k in ("datasets", "seeds", "experiments")}
    grid = _grid(mapping)
    assert grid.synthetic is True  # derived: some dataset is synthetic
    assert dict(grid.paths) == {"raw": "data/raw", "prepared": "data/prepared", "runs": "runs", "results": "results"}
    assert grid.recipe == {} and grid.prepare == {} and grid.evaluation == {"flip": False}
    assert grid.base_config == "ccdn/configs/default.yaml"
    assert grid.experiment("ccdn-300w").overrides == {}


def test_resolve_writes_a_loadable_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "resolved.yaml"
    assert main(["resolve", "config/ci_slurm.yaml", "--out", str(out)]) == 0
    resolved = load_grid(out)
    original = load_grid("config/ci_slurm.yaml")
    assert resolved.to_dict() == original.to_dict()
    assert [r.name for r in resolved.runs] == [r.name for r in original.runs]
    assert not list(tmp_path.glob(".resolved.yaml.*"))  # no temporary file left behind
    assert main(["resolve", "--json", '{"seeds": [0]}', "--out", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()


def test_occlusion_sweep_is_data_of_the_embedded_grid_only(default_mapping: dict) -> None:
    """The synthetic sweep is declared in config/config.yaml; real data has no controlled occluder, so the
    paper's grid omits it (its experiments stay identical: test_paper_config_is_the_same_grid_on_real_data)."""
    default = load_grid(ROOT / "config/config.yaml", root=ROOT)
    paper = load_grid(ROOT / "config/paper.yaml", root=ROOT)
    assert paper.occlusion_sweep is None and paper.sweep_evaluations == [] and paper.sweep_outputs == []
    sweep = default.occlusion_sweep
    assert sweep["levels"][0] == 0 and sweep["faces"] >= 1
    runs = [run for run, dataset in default.sweep_evaluations if dataset == OCCLUSION_SWEEP]
    assert {run.experiment.label for run in runs} == {"Baseline", "FCDN", "CCDN", "Mean shape (reference)"}
    assert all(run.experiment.train == "300w" for run in runs)
    assert default.sweep_synth_arguments() == ["--seed", str(sweep["seed"]), "--n-train", "0", "--n-test",
                                               str(sweep["faces"]), "--occlusion-levels",
                                               ",".join(format(float(v), "g") for v in sweep["levels"])]
    assert [p.name for p in default.sweep_outputs] == ["occlusion_sweep.png", "occlusion_sweep.pdf",
                                                       "occlusion_sweep.csv"]
    assert _grid(default.to_dict()).occlusion_sweep == sweep  # the resolved grid keeps it (ccdn report reads that)
    assert "occlusion_sweep" not in paper.to_dict()


@pytest.mark.parametrize("experiments, message", [
    (["no-such-run"], r"occlusion_sweep\.experiments\[0\] \(no-such-run\): no such experiment"),
    (["ccdn-aflw"], r"trained on aflw, not on 68 points"),
])
def test_occlusion_sweep_experiments_must_exist_and_predict_68_points(default_mapping: dict, experiments: list,
                                                                       message: str) -> None:
    mapping = copy.deepcopy(default_mapping)
    mapping["occlusion_sweep"] = {**mapping["occlusion_sweep"], "experiments": experiments}
    with pytest.raises(GridError, match=message):
        _grid(mapping)
    mapping["occlusion_sweep"] = {"levels": [0], "faces": 4, "experiments": ["ccdn-300w"]}  # one level: no sweep
    with pytest.raises(GridError, match=r"occlusion_sweep\.levels"):
        _grid(mapping)


def test_model_recipe_applies_to_that_model_only_and_before_overrides(default_mapping: dict) -> None:
    mapping = copy.deepcopy(default_mapping)
    mapping["model_recipe"] = {"ccdn": {"model.options.input_size": 48, "model.options.num_excitations": 3}}
    grid = _grid(mapping)
    assert run_config(grid, "ccdn-300w-s0")["model"]["options"]["input_size"] == 48
    assert run_config(grid, "baseline-300w-s0")["model"]["options"]["input_size"] == 32
    # an experiment's own overrides still win, and the tables see the resolved P
    assert run_config(grid, "ccdn-300w-p2-s0")["model"]["options"]["num_excitations"] == 2
    assert grid.experiment("ccdn-300w").num_excitations == 3
    assert grid.to_dict()["model_recipe"] == mapping["model_recipe"]
    paper = load_grid(ROOT / "config/paper.yaml", root=ROOT)
    assert paper.model_recipe == {} and paper.dataset_recipe == {}


def test_dataset_recipe_applies_to_runs_trained_on_that_set_before_the_model_recipe(default_mapping: dict) -> None:
    mapping = copy.deepcopy(default_mapping)
    mapping["dataset_recipe"] = {"wflw": {"optim.epochs": 3, "model.options.input_size": 40}}
    mapping["model_recipe"] = {"baseline": {"model.options.input_size": 48}}
    grid = _grid(mapping)
    assert run_config(grid, "ccdn-wflw-s0")["optim"]["epochs"] == 3
    assert run_config(grid, "ccdn-wflw-s0")["model"]["options"]["input_size"] == 40
    assert run_config(grid, "baseline-wflw-s0")["model"]["options"]["input_size"] == 48  # the model's wins
    assert run_config(grid, "ccdn-300w-s0")["optim"]["epochs"] == mapping["recipe"]["optim.epochs"]
    assert grid.to_dict()["dataset_recipe"] == mapping["dataset_recipe"]
