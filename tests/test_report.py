"""Tests of the report step (ccdn.report): paper numbers, tables, figures, summary, README and CLI.

The runs are faked on disk (metrics.json, config.yaml, predictions.npz, activation_maps.npz) behind a
small grid object with the attributes of ``ccdn.grid`` (the shared grid contract), so nothing trains.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ccdn.report import SYNTHETIC_MARK, ReportError
from ccdn.report import cli as report_cli
from ccdn.report.figures import ced_curve, excitation_runs, write_figure
from ccdn.report.readme import find_rule, write_readme
from ccdn.report.reference import load_reference
from ccdn.report.summary import build_summary, write_headline, write_summary
from ccdn.report.analysis import analyse, load_claims
from ccdn.report.curves import write_learning_curves
from ccdn.report.render import write_table
from ccdn.report.stats import bootstrap_interval, holm, paired_comparison, t_interval, wilcoxon_p
from ccdn.report.tables import build_table, normalise_label

DEFAULT_GAMMAS = (0.025, 0.01, 0.05)
SUBSETS = {
    "300w": ("common", "challenging", "full"),
    "cofw68": ("full",),
    "aflw": ("full", "frontal"),
    "wflw": ("full", "pose", "expression", "illumination", "makeup", "occlusion", "blur"),
}
REPO = Path(__file__).resolve().parents[1]
NORMALISERS = {"300w": ("inter_pupil", "inter_ocular"), "cofw68": ("inter_pupil", "inter_ocular"),
               "aflw": ("face_size",), "wflw": ("inter_ocular", "inter_pupil")}


# ------------------------------------------------------------------------------------------- fake grid


@dataclass(frozen=True)
class FakeExperiment:
    id: str
    label: str
    model: str
    train: str
    evaluate: tuple[str, ...]
    tables: tuple[str, ...]
    num_excitations: int | None = 4
    gammas: tuple[float, ...] = DEFAULT_GAMMAS
    overrides: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class FakeRun:
    name: str
    experiment: FakeExperiment
    seed: int


class FakeGrid:
    """The ``ccdn.grid`` Grid contract, over a temporary folder."""

    def __init__(self, root: Path, experiments: list[FakeExperiment], seeds: list[int], synthetic: bool = True):
        self.root, self.experiments, self.seeds, self.synthetic = root, experiments, seeds, synthetic
        self.runs = [FakeRun(f"{e.id}-s{s}", e, s) for e in experiments for s in seeds]

    def run_dir(self, run_name: str) -> Path:
        return self.root / "runs" / run_name

    def metrics_path(self, run_name: str, dataset: str) -> Path:
        return self.run_dir(run_name) / "eval" / dataset / "metrics.json"

    def predictions_path(self, run_name: str, dataset: str) -> Path:
        return self.run_dir(run_name) / "eval" / dataset / "predictions.npz"

    def activation_maps_path(self, run_name: str, dataset: str) -> Path:
        return self.run_dir(run_name) / "eval" / dataset / "activation_maps.npz"

    def prepared_dir(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    @property
    def results_dir(self) -> Path:
        return self.root / "results"


EXPERIMENTS = [
    FakeExperiment("baseline-300w", "Baseline", "baseline", "300w", ("300w", "cofw68"), ("table2", "table3", "table7"),
                   num_excitations=None, gammas=()),
    FakeExperiment("ccdn-300w", "CCDN", "ccdn", "300w", ("300w", "cofw68"), ("table2", "table3", "table6", "table7")),
    FakeExperiment("ccdn-300w-p2", "CCDN", "ccdn", "300w", ("300w",), ("table7",), num_excitations=2),
    FakeExperiment("ccdn-300w-g1", "CCDN", "ccdn", "300w", ("300w",), ("table6",), gammas=(0.01, 0.01, 0.01)),
    FakeExperiment("ccdn-aflw", "CCDN", "ccdn", "aflw", ("aflw",), ("table4", "table7")),
    FakeExperiment("ccdn-wflw", "CCDN", "ccdn", "wflw", ("wflw",), ("table5", "table7")),
    FakeExperiment("ccdn-300w-p1", "CCDN", "ccdn", "300w", ("300w",), ("table7",), num_excitations=1),
    FakeExperiment("mynet-300w", "MyNet", "mynet", "300w", ("300w",), ("table2",), num_excitations=None),
    FakeExperiment("mean-shape-300w", "Mean shape (reference)", "mean_shape", "300w", ("300w", "cofw68"),
                   ("table2", "table3", "table6", "table7"), num_excitations=None),
]
BASE = {"baseline-300w": 7.0, "ccdn-300w": 5.0, "ccdn-300w-p2": 5.5, "ccdn-300w-g1": 6.5, "ccdn-aflw": 1.0,
        "ccdn-wflw": 4.0, "mynet-300w": 8.0, "ccdn-300w-p1": 6.0, "mean-shape-300w": 10.0}
EPOCH_SECONDS = 1.5
STEPS_PER_EPOCH = 4
EVAL_SECONDS = 0.25
OFFSET = {"common": -1.0, "challenging": 0.5, "full": 0.0, "frontal": -0.2, "pose": 3.0, "expression": 0.4,
          "illumination": 0.1, "makeup": 0.2, "occlusion": 1.0, "blur": 0.6}
# Per-image errors (fractions) of the 6 challenging faces in every fake predictions.npz.
CHALLENGING_ERRORS = np.array([0.021, 0.043, 0.061, 0.079, 0.101, 0.125])


def fake_nme(experiment_id: str, seed: int, subset: str, normaliser: str) -> float:
    """NME (%) of a fake run: e.g. ccdn-300w challenging inter-pupil = 6.0 (seed 0) and 6.2 (seed 1)."""
    return BASE[experiment_id] + OFFSET[subset] + (0.5 if normaliser == "inter_pupil" else 0.0) + 0.2 * seed


def write_fake_run(grid: FakeGrid, run: FakeRun) -> None:
    e = run.experiment
    run_dir = grid.run_dir(run.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"seed": run.seed, "model": {"name": e.model, "options": {"stacks": 1, "channels": 32, "input_size": 64}},
              "optim": {"epochs": 2}, "train": {"limit_train_images": 96, "max_steps_per_epoch": None}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    epochs = 0 if e.model == "mean_shape" else 2
    history = [{"epoch": 0, "val_nme": BASE[e.id] * 4}] + [
        {"epoch": k, "val_nme": BASE[e.id] * (3 - k), "epoch_seconds": EPOCH_SECONDS} for k in range(1, epochs + 1)]
    (run_dir / "history.json").write_text(json.dumps(history))
    (run_dir / "DONE").write_text(json.dumps({"epochs": epochs, "global_step": STEPS_PER_EPOCH * epochs}) + "\n")
    for dataset in e.evaluate:
        subsets = {}
        for subset in SUBSETS[dataset]:
            nme = {n: fake_nme(e.id, run.seed, subset, n) for n in NORMALISERS[dataset]}
            subsets[subset] = {"n": 6, "nme": nme, "fr@0.1": {n: v / 2 for n, v in nme.items()},
                               "auc@0.1": {n: 100 - 5 * v for n, v in nme.items()}}
        metrics = {"run": run.name, "model": e.model, "train_dataset": e.train, "dataset": dataset, "split": "test",
                   "seed": run.seed, "synthetic": grid.synthetic, "flip_test": False,
                   "variant": {"num_excitations": e.num_excitations, "gammas": list(e.gammas)}, "subsets": subsets,
                   "timing": {"seconds": EVAL_SECONDS, "device": "cpu"}}
        path = grid.metrics_path(run.name, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
        write_fake_predictions(grid.predictions_path(run.name, dataset), dataset, run.seed, BASE[e.id] / 5.0)
        if e.model == "ccdn" and dataset == "300w":
            rng = np.random.default_rng(run.seed)
            np.savez(grid.activation_maps_path(run.name, dataset),
                     images=rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8),
                     maps=rng.random((3, 8, 8), dtype=np.float32), num_excitations=np.int64(e.num_excitations))


def write_fake_predictions(path: Path, dataset: str, seed: int, scale: float = 1.0) -> None:
    """20 faces: 14 'common' (error 3%) then the 6 'challenging' ones of CHALLENGING_ERRORS, × ``scale``."""
    errors = np.concatenate([np.full(14, 0.03), CHALLENGING_ERRORS]) * scale
    names = np.array(SUBSETS[dataset])
    masks = np.ones((len(names), 20), dtype=bool)
    if dataset == "300w":
        masks[0, 14:] = False  # common
        masks[1, :14] = False  # challenging
    arrays = {f"err_{n}": errors + 0.001 * seed for n in NORMALISERS[dataset]}
    np.savez(path, pred=np.zeros((20, 5, 2), np.float32), gt=np.zeros((20, 5, 2), np.float32),
             face_ids=np.array([f"face{i}" for i in range(20)]), subset_names=names, subset_masks=masks, **arrays)


@pytest.fixture()
def grid(tmp_path: Path) -> FakeGrid:
    fake = FakeGrid(tmp_path, EXPERIMENTS, seeds=[0, 1])
    for run in fake.runs:
        write_fake_run(fake, run)
    for dataset, count in (("300w", 64), ("aflw", 32), ("wflw", 48)):
        root = fake.prepared_dir(dataset)
        root.mkdir(parents=True, exist_ok=True)
        np.savez(root / "train.npz", face_size=np.ones(count, np.float32))
    return fake


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def ours(frame: pd.DataFrame, method: str, subset: str, normaliser: str, metric: str = "nme") -> pd.Series:
    rows = frame[(frame.method == method) & (frame.subset == subset) & (frame.normaliser == normaliser)
                 & (frame.metric == metric) & (frame["n"] > 0)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------- reference


def test_reference_cells_match_the_paper_text():
    ref = load_reference()
    # Values read off the paper's Tables 2-7.
    assert ref.value(2, "CCDN", "challenging", "nme", "inter_pupil") == 6.02
    assert ref.value(2, "CCDN", "challenging", "nme", "inter_ocular") == 4.43
    assert ref.value(2, "Chandran et al.", "common", "nme", "inter_pupil") == 2.83
    assert ref.value(2, "AWing", "full", "nme", "inter_ocular") == 3.07
    assert ref.value(3, "CCDN", "full", "failure_rate", "inter_pupil") == 1.12
    assert ref.value(3, "ODN", "full", "failure_rate", "inter_pupil") is None  # blank in the paper
    assert ref.value(3, "DRDA", "full", "nme", "inter_pupil") == 6.46
    assert ref.value(4, "TSR", "frontal", "nme", "face_size") is None  # "-" in the paper
    assert ref.value(4, "LUVLi", "frontal", "nme", "face_size") == 1.19
    assert ref.value(5, "CCDN", "pose", "nme", "inter_ocular") == 7.22
    assert ref.value(5, "CCFS", "pose", "nme", "inter_ocular") == 21.36
    assert ref.value(5, "FCDN", "makeup", "nme", "inter_ocular") == 4.77
    assert ref.value(7, "P=2", "full", "nme", "inter_ocular", dataset="wflw") == 4.75
    assert ref.value(7, "P=3", "full", "nme", "face_size", dataset="aflw") == 1.48
    assert ref.value(7, "P=1", "challenging", "nme", "inter_pupil", dataset="300w") == 7.41
    sweep = {cell.gammas: cell.value for cell in ref.table(6)}
    assert sweep == {(0.01, 0.01, 0.01): 7.21, (0.01, 0.01, 0.025): 6.79, (0.025, 0.01, 0.025): 6.43,
                     (0.025, 0.01, 0.05): 6.02, (0.025, 0.01, 0.1): 6.22}
    assert ref.cite(2, "3DDFA") == "CVPR16 [44]"


def test_reference_row_and_cell_counts_per_table():
    ref = load_reference()
    rows = {n: len(ref.rows(n)) for n in range(2, 8)}
    assert rows == {2: 18, 3: 12, 4: 14, 5: 10, 6: 5, 7: 4}
    assert len(ref.rows(2, "inter_pupil")) == 12 and len(ref.rows(2, "inter_ocular")) == 8
    cells = {n: len(ref.table(n)) for n in range(2, 8)}
    assert cells == {2: 60, 3: 23, 4: 24, 5: 70, 6: 5, 7: 12}
    assert ref.rows(2, "inter_pupil")[-3:] == ["Baseline", "FCDN", "CCDN"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"table": 2, "row": "X", "column": "common", "dataset": "300w", "metric": "nme", "normaliser": "inter_pupil"},
     "missing keys ['value']"),
    ({"table": 2, "row": "X", "column": "common", "dataset": "300w", "metric": "mse", "normaliser": "inter_pupil",
      "value": 1.0}, "metric 'mse' is not one of"),
    ({"table": 2, "row": "X", "column": "pose", "dataset": "300w", "metric": "nme", "normaliser": "inter_pupil",
      "value": 1.0}, "column 'pose' is not one of"),
    ({"table": 6, "row": "X", "column": "challenging", "dataset": "300w", "metric": "nme",
      "normaliser": "inter_pupil", "value": 1.0}, "Table 6 entries need gammas"),
])
def test_reference_rejects_bad_entries_naming_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "paper_reference.yaml"
    path.write_text(yaml.safe_dump({"cells": [entry]}))
    with pytest.raises(ReportError, match="cells\\[0\\]") as info:
        load_reference(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_reference_rejects_duplicate_cells(tmp_path):
    cell = {"table": 4, "row": "X", "column": "full", "dataset": "aflw", "metric": "nme", "normaliser": "face_size",
            "value": 1.0}
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump({"cells": [cell, dict(cell, value=2.0)]}))
    with pytest.raises(ReportError, match=r"cells\[1\] repeats cells\[0\]"):
        load_reference(path)


# ----------------------------------------------------------------------------------------------- tables


def test_table2_mean_sd_n_delta_against_the_paper(grid, tmp_path):
    paths = write_table(grid, 2, tmp_path / "tables")
    assert [p.name for p in paths] == ["table2_300w.md", "table2_300w.csv", "table2_300w.tex"]
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in paths)  # not mkstemp's 0600
    frame = read_csv(paths[1])
    # ccdn-300w challenging inter-pupil: seeds give 6.0 and 6.2; the paper prints 6.02.
    row = ours(frame, "CCDN", "challenging", "inter_pupil")
    assert row["mean"] == pytest.approx(6.1)
    assert row["sd"] == pytest.approx(math.sqrt(0.02), abs=1e-4)
    assert row["n"] == 2
    assert row["paper"] == pytest.approx(6.02)
    assert row["delta"] == pytest.approx(0.08, abs=1e-4)
    assert row["delta_pct"] == pytest.approx(100 * 0.08 / 6.02, abs=1e-4)
    assert row["runs"] == "ccdn-300w-s0 ccdn-300w-s1"
    # inter-ocular common: 4.0 and 4.2 against 2.75.
    row = ours(frame, "CCDN", "common", "inter_ocular")
    assert (row["mean"], row["paper"]) == (pytest.approx(4.1), pytest.approx(2.75))
    assert row["delta_pct"] == pytest.approx(100 * (4.1 - 2.75) / 2.75, abs=1e-4)
    # every paper row is there, with its printed value and no numbers of ours
    paper_only = frame[(frame.method == "3DDFA") & (frame.subset == "full")].iloc[0]
    assert paper_only["paper"] == pytest.approx(6.31) and paper_only["n"] == 0 and math.isnan(paper_only["mean"])
    assert frame[frame.in_paper == 1].groupby("normaliser").method.nunique().to_dict() == {
        "inter_pupil": 12, "inter_ocular": 8}
    # a method the paper does not have is an extra row without Δ
    extra = ours(frame, "MyNet", "full", "inter_pupil")
    assert extra["in_paper"] == 0 and math.isnan(extra["paper"]) and math.isnan(extra["delta"])
    assert extra["mean"] == pytest.approx(8.6)
    assert "2 epochs" in row["recipe"] and "64 px" in row["recipe"]


def test_tables_carry_the_synthetic_mark_in_every_format(grid, tmp_path):
    for number in range(2, 8):
        for path in write_table(grid, number, tmp_path / "tables"):
            text = path.read_text(encoding="utf-8")
            first_lines = "\n".join(text.splitlines()[:6])
            assert SYNTHETIC_MARK in first_lines, path  # in the title / caption, not buried
    markdown = (tmp_path / "tables" / "table5_wflw.md").read_text()
    assert "| CCDN | ours (n=2) |" in markdown and "paper (§4.1): 128 × 128 input, 4 stacked" in markdown
    tex = (tmp_path / "tables" / "table2_300w.tex").read_text()
    assert r"\caption{" in tex and r"$\times$0.50" in tex and "inter-pupil distance" in tex


def test_real_data_tables_have_no_synthetic_mark(grid, tmp_path):
    grid.synthetic = False
    for run in grid.runs:  # the metrics files say real data too
        for dataset in run.experiment.evaluate:
            path = grid.metrics_path(run.name, dataset)
            path.write_text(path.read_text().replace('"synthetic": true', '"synthetic": false'))
    for path in write_table(grid, 3, tmp_path):
        assert SYNTHETIC_MARK not in path.read_text()


def test_a_partial_test_set_is_named_in_the_caption_and_under_the_table(grid, tmp_path):
    for run in grid.runs:  # the COFW-68 evaluations come from a partial release
        path = grid.metrics_path(run.name, "cofw68")
        if path.is_file():
            metrics = json.loads(path.read_text())
            metrics["partial"] = {"n": 40, "of": 507}
            path.write_text(json.dumps(metrics))
    label = "partial: 40 of 507 faces"
    for path in write_table(grid, 3, tmp_path):
        assert label in "\n".join(path.read_text(encoding="utf-8").splitlines()[:6]), path
    markdown = (tmp_path / "table3_cofw68.md").read_text(encoding="utf-8")
    assert markdown.count(label) >= 2  # caption and the note under the table
    assert label not in (write_table(grid, 2, tmp_path)[0]).read_text(encoding="utf-8")  # 300W is complete


def test_table6_and_table7_match_rows_by_gamma_and_excitations(grid, tmp_path):
    t6 = read_csv(write_table(grid, 6, tmp_path)[1])
    default = ours(t6, "γ = (0.025, 0.01, 0.05)", "challenging", "inter_pupil")
    assert (default["mean"], default["paper"]) == (pytest.approx(6.1), pytest.approx(6.02))
    swept = ours(t6, "γ = (0.01, 0.01, 0.01)", "challenging", "inter_pupil")
    assert (swept["mean"], swept["paper"]) == (pytest.approx(7.6), pytest.approx(7.21))
    t7 = read_csv(write_table(grid, 7, tmp_path)[1])
    p4_wflw = ours(t7, "P = 4", "full", "inter_ocular")
    assert (p4_wflw["mean"], p4_wflw["paper"], p4_wflw["dataset"]) == (pytest.approx(4.1), pytest.approx(4.29), "wflw")
    p4_aflw = ours(t7, "P = 4", "full", "face_size")
    assert (p4_aflw["mean"], p4_aflw["paper"]) == (pytest.approx(1.1), pytest.approx(1.35))
    p2 = ours(t7, "P = 2", "challenging", "inter_pupil")
    assert (p2["mean"], p2["paper"]) == (pytest.approx(6.6), pytest.approx(6.35))
    assert len(t7[(t7.method == "P = 2") & (t7.n > 0)]) == 1  # only 300W was run with P = 2
    assert set(t7[t7.in_paper == 1].method) == {"P = 1", "P = 2", "P = 3", "P = 4"}


def test_table3_reports_failure_rate_and_marks_missing_paper_cells(grid, tmp_path):
    frame = read_csv(write_table(grid, 3, tmp_path)[1])
    fr = ours(frame, "CCDN", "full", "inter_pupil", metric="failure_rate")
    assert (fr["mean"], fr["paper"]) == (pytest.approx(5.6 / 2), pytest.approx(1.12))
    odn = frame[frame.method == "ODN"]
    assert list(odn.metric) == ["nme"]  # the paper prints no failure rate for ODN
    markdown = (tmp_path / "table3_cofw68.md").read_text()
    assert "| ODN (CVPR19 [9]) | paper | 5.30 | – |" in markdown


def test_missing_metrics_names_the_file_and_the_snakemake_target(grid, tmp_path):
    missing = grid.metrics_path("ccdn-wflw-s1", "wflw")
    missing.unlink()
    with pytest.raises(ReportError) as info:
        write_table(grid, 5, tmp_path / "tables")
    assert str(missing) in str(info.value)
    assert f"snakemake --cores all {missing}" in str(info.value)
    assert not (tmp_path / "tables" / "table5_wflw.md").exists()  # nothing half-written


def test_malformed_metrics_names_the_missing_key(grid, tmp_path):
    path = grid.metrics_path("ccdn-aflw-s0", "aflw")
    metrics = json.loads(path.read_text())
    del metrics["subsets"]["frontal"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(ReportError, match="no subset 'frontal'") as info:
        build_table(grid, 4)
    assert str(path) in str(info.value)


def test_label_normalisation_matches_paper_spellings():
    assert normalise_label("DU-Net") == normalise_label("du net") == "dunet"
    assert normalise_label("Liu et al.") == "liuetal"


# ---------------------------------------------------------------------------------------------- figures


def ced_at(data: pd.DataFrame, nme: float, method: str) -> float:
    """The CED value at the grid threshold nearest to ``nme`` (the grid depends on the widest errors)."""
    return float(data.loc[(data["nme"] - nme).abs().idxmin(), method])


def test_ced_curve_counts_images_at_or_below_each_threshold():
    curve = ced_curve(np.array([1.0, 2.0, 2.0, 5.0]), np.array([0.0, 1.0, 1.5, 2.0, 4.9, 5.0, 9.0]))
    assert curve.tolist() == [0.0, 0.25, 0.25, 0.75, 0.75, 1.0, 1.0]


def test_ced_figures_and_their_data_are_written(grid, tmp_path):
    out, metrics_dir = tmp_path / "figures", tmp_path / "metrics"
    paths = write_figure(grid, "fig5", out, metrics_dir)
    assert [p.name for p in paths] == ["fig5_ced_300w_challenging.png", "fig5_ced_300w_challenging.pdf",
                                       "ced_fig5.csv"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert all(p.stat().st_size > 1000 for p in paths[:2])
    data = pd.read_csv(paths[2])
    assert list(data.columns) == ["nme", "Baseline", "CCDN", "MyNet", "Mean shape (reference)"]  # table2's
    # challenging errors 2.1, 4.3, 6.1, 7.9, 10.1, 12.5 % (+0.1 for seed 1): 2 of 6 are <= 5 %, 4 of 6 <= 10 %
    at = data.set_index("nme")
    assert ced_at(data, 5.0, "CCDN") == pytest.approx(2 / 6) and ced_at(data, 10.0, "CCDN") == pytest.approx(4 / 6)
    assert at.loc[0.0, "CCDN"] == 0 and at["CCDN"].iloc[-1] == 1.0 and at["CCDN"].is_monotonic_increasing
    paths7 = write_figure(grid, "fig7", out, metrics_dir)
    assert paths7[0].name == "fig7_ced_aflw_full.png" and paths7[0].stat().st_size > 1000
    assert list(pd.read_csv(paths7[2]).columns) == ["nme", "CCDN"]


def test_fig8_uses_the_p2_and_p4_ccdn_runs_on_300w(grid, tmp_path):
    runs = excitation_runs(grid)
    assert {p: run.name for p, run in runs.items()} == {2: "ccdn-300w-p2-s0", 4: "ccdn-300w-s0"}
    (path,) = write_figure(grid, "fig8", tmp_path, images=2)
    assert path.name == "fig8_activation_maps.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_fig8_without_a_p2_run_says_what_to_add(grid, tmp_path):
    grid.experiments = [e for e in grid.experiments if e.id != "ccdn-300w-p2"]
    grid.runs = [r for r in grid.runs if r.experiment.id != "ccdn-300w-p2"]
    with pytest.raises(ReportError, match=r"P = \[2\].*num_excitations"):
        write_figure(grid, "fig8", tmp_path)


def write_fake_prepared_test_split(root: Path, face_ids: list[str], challenging: list[str]) -> None:
    """A prepared test split (Contract 2 keys) whose only meaningful content is subset membership."""
    n = len(face_ids)
    root.mkdir(parents=True, exist_ok=True)
    names = np.array(["common", "challenging", "full"])
    is_challenging = np.array([f in challenging for f in face_ids])
    np.savez(root / "test.npz", images=np.zeros((n, 4, 4, 3), np.uint8), landmarks=np.zeros((n, 68, 2), np.float32),
             to_original=np.zeros((n, 2, 3), np.float32), original_landmarks=np.zeros((n, 68, 2), np.float32),
             boxes=np.zeros((n, 4), np.float32), face_size=np.ones(n, np.float32), occluded=np.zeros((n, 68), bool),
             attributes=np.zeros((n, 0), np.uint8), attribute_names=np.array([], dtype=str), subset_names=names,
             subset_masks=np.stack([~is_challenging, is_challenging, np.ones(n, bool)]), face_ids=np.array(face_ids),
             meta=np.array(json.dumps({"dataset": "300w", "split": "test", "scheme": "68"})))


def test_ced_subset_membership_falls_back_to_the_prepared_split(grid, tmp_path):
    """Prediction files without subset masks: the challenging faces are looked up by face id."""
    ids = [f"face{i}" for i in range(20)]
    write_fake_prepared_test_split(grid.prepared_dir("300w"), ids[::-1], challenging=ids[14:])  # other order
    for run in grid.runs:
        if "300w" in run.experiment.evaluate and "table2" in run.experiment.tables:
            path = grid.predictions_path(run.name, "300w")
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files if k not in ("subset_names", "subset_masks")}
            np.savez(path, **arrays)
    paths = write_figure(grid, "fig5", tmp_path, tmp_path)
    data = pd.read_csv(paths[2])
    assert ced_at(data, 5.0, "CCDN") == pytest.approx(2 / 6) and ced_at(data, 10.0, "CCDN") == pytest.approx(4 / 6)


def test_missing_predictions_name_the_file(grid, tmp_path):
    path = grid.predictions_path("baseline-300w-s1", "300w")
    path.unlink()
    with pytest.raises(ReportError, match="snakemake --cores all") as info:
        write_figure(grid, "fig5", tmp_path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------- summary, README, CLI


def test_summary_is_flat_and_holds_each_runs_headline_numbers(grid, tmp_path):
    path = write_summary(grid, tmp_path / "metrics" / "summary.json")
    summary = json.loads(path.read_text())
    assert summary["synthetic"] is True
    assert all(not isinstance(v, (dict, list)) for v in summary.values())
    assert summary["ccdn-300w-s1/300w/challenging/nme_inter_pupil"] == pytest.approx(6.2)
    assert summary["ccdn-aflw-s0/aflw/frontal/nme_face_size"] == pytest.approx(0.8)
    assert summary["ccdn-300w-s0/cofw68/full/failure_rate_inter_pupil"] == pytest.approx(2.75)
    assert "ccdn-wflw-s0/wflw/pose/nme_inter_pupil" not in summary  # WFLW is reported inter-ocular only
    assert build_summary(grid) == summary


def test_readme_maps_outputs_to_rules_and_commands(grid, tmp_path, monkeypatch):
    workflow = tmp_path / "workflow"
    (workflow / "rules").mkdir(parents=True)
    (workflow / "rules" / "paper.smk").write_text(
        "rule paper_table:\n    output: 'x'\n    shell: 'ccdn report table {wildcards.n} --config c --out d'\n\n"
        "rule paper_figure:\n    shell: 'ccdn report figure {wildcards.fig} --config c --out d'\n\n"
        "rule paper_summary:\n    shell: 'ccdn report summary --config c --out s'\n\n"
        "rule activation_maps_figure:\n    shell: 'ccdn report figure fig8 --config c --out d'\n")
    assert find_rule(workflow, "report table") == "paper_table"
    assert find_rule(workflow, "report figure", ("report figure fig8",)) == "activation_maps_figure"
    assert find_rule(workflow, "report figure", ("report figure fig5",)) == "paper_figure"  # the wildcard rule
    assert find_rule(workflow, "report nothing") == ""
    results = grid.results_dir
    write_figure(grid, "fig7", results / "figures", results / "metrics")
    path = write_readme(grid, results / "README.md", "config/config.yaml", workflow)
    text = path.read_text()
    assert SYNTHETIC_MARK.capitalize() in text
    assert f"`ccdn report table 2 --config config/config.yaml --out {results / 'tables'}`" in text
    assert "[table7_excitations.csv](tables/table7_excitations.csv)" in text
    assert "| Table 4 |" in text and "`paper_table`" in text and "`paper_figure`" in text
    assert "fig8_activation_maps.png) | `activation_maps_figure` |" in text
    assert "![Fig. 7:" in text and "(figures/fig7_ced_aflw_full.png)" in text  # embedded: it exists
    assert "not generated yet" in text and "fig5_ced_300w_challenging.png" in text  # fig5 was not made
    assert "| `ccdn-300w-p2-s1` | CCDN | ccdn | 300w | 300w | table7 |" in text


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ccdn")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_dispatches_each_report_command(grid, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report_cli, "_load_grid", lambda path: grid)
    args = _cli(["report", "table", "4", "--config", "grid.yaml", "--out", str(tmp_path / "t")])
    assert args.func(args) == 0
    assert (tmp_path / "t" / "table4_aflw.tex").is_file()
    args = _cli(["report", "summary", "--config", "grid.yaml", "--out", str(tmp_path / "s.json")])
    assert args.func(args) == 0 and json.loads((tmp_path / "s.json").read_text())["synthetic"] is True
    args = _cli(["report", "compute", "--config", "grid.yaml", "--out", str(tmp_path / "c.md"),
                 "--data", str(tmp_path / "c.json")])
    assert args.func(args) == 0 and json.loads((tmp_path / "c.json").read_text())["all_tables"]["runs"] == 18
    assert "ccdn report compute --config grid.yaml" in (tmp_path / "c.md").read_text()
    args = _cli(["report", "readme", "--config", "grid.yaml", "--out", str(tmp_path / "README.md"),
                 "--workflow", str(tmp_path / "none")])
    assert args.func(args) == 0 and "ccdn report figure fig8 --config grid.yaml" in (tmp_path / "README.md").read_text()
    assert str(tmp_path / "t" / "table4_aflw.md") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _cli(["report", "table", "8"])


def test_csv_is_readable_without_comment_handling_errors(grid, tmp_path):
    text = write_table(grid, 4, tmp_path)[1].read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    frame = pd.read_csv(io.StringIO("\n".join(lines)))
    assert {"method", "paper", "mean", "sd", "n", "delta", "delta_pct", "recipe"} <= set(frame.columns)


# --------------------------------------------------------------------------------- statistics (hand-computed)


def test_t_interval_over_seeds_matches_the_hand_computation_and_is_unavailable_for_one_seed():
    # values 1 and 3: mean 2, sd sqrt(2), sem 1, t(0.975, df=1) = 12.7062
    interval = t_interval([1.0, 3.0])
    assert (interval.low, interval.high) == (pytest.approx(2 - 12.7062, abs=1e-3), pytest.approx(2 + 12.7062, abs=1e-3))
    assert t_interval([5.0]) is None  # one seed: no interval, not a zero-width one
    assert t_interval([]) is None
    same = t_interval([4.0, 4.0, 4.0])  # identical seeds: the interval really is the point
    assert (same.low, same.high) == (4.0, 4.0)


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean():
    samples = np.array([1.0, 2.0, 2.0, 3.0, 7.0, 4.0, 2.5, 3.5])
    first, second = bootstrap_interval(samples), bootstrap_interval(samples)
    assert first == second  # fixed seed: byte-stable reports
    assert first.low < samples.mean() < first.high and first.low > 1.0 and first.high < 7.0
    constant = bootstrap_interval(np.full(5, 2.5))
    assert (constant.low, constant.high) == (2.5, 2.5)
    assert bootstrap_interval(np.array([])) is None


def test_wilcoxon_drops_zero_differences_and_returns_one_when_all_tie():
    # d = 1..5 all positive: exact two-sided p = 2 / 2**5 = 0.0625; zeros (ties with 0) are dropped
    assert wilcoxon_p(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(0.0625)
    assert wilcoxon_p(np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(0.0625)
    # one negative of rank 1 among six: P(W- <= 1) = 2 / 64, two-sided 0.0625
    assert wilcoxon_p(np.array([-1.0, 2.0, 3.0, 4.0, 5.0, 6.0])) == pytest.approx(0.0625)
    assert wilcoxon_p(np.zeros(4)) == 1.0
    # tied magnitudes, all positive: still the most extreme of the 2**6 sign patterns, p = 2 / 64
    assert wilcoxon_p(np.ones(6)) == pytest.approx(2 / 64)


def test_paired_comparison_is_a_minus_b_on_the_same_faces():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.5, 3.5, 5.0])
    paired = paired_comparison(a, b)
    assert paired.delta == pytest.approx(-0.75) and paired.n == 4
    assert paired.interval.high < 0  # every face is better with a
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison(a, b[:3])


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    assert holm([0.02]) == pytest.approx([0.02])


# ------------------------------------------------------------------- mean shape, Table 7, intervals, claims


def test_mean_shape_row_and_ratio_in_every_format(grid, tmp_path):
    paths = write_table(grid, 2, tmp_path)
    frame = read_csv(paths[1])
    floor = ours(frame, "Mean shape (reference)", "challenging", "inter_pupil")
    assert floor["mean"] == pytest.approx(11.1) and floor["in_paper"] == 0 and math.isnan(floor["x_mean_shape"])
    ccdn = ours(frame, "CCDN", "challenging", "inter_pupil")
    assert ccdn["x_mean_shape"] == pytest.approx(6.1 / 11.1, abs=1e-4)
    markdown = paths[0].read_text()
    assert "| Mean shape (reference) | ours, reference (n=2) |" in markdown
    assert f"| CCDN | × mean shape | ×{4.1 / 9.1:.2f} |" in markdown  # inter-ocular common: 4.1 / 9.1
    assert "the mean of the training landmarks in the crop frame, no gradient steps" in markdown


def test_table7_p1_row_comes_from_the_baseline_and_ccdn_p1_is_an_extra_row(grid, tmp_path):
    paths = write_table(grid, 7, tmp_path)
    frame = read_csv(paths[1])
    p1 = ours(frame, "P = 1", "challenging", "inter_pupil")
    assert (p1["mean"], p1["paper"]) == (pytest.approx(8.1), pytest.approx(7.41))  # baseline-300w: 7 + 0.5 + 0.5 + 0.1
    assert p1["runs"] == "baseline-300w-s0 baseline-300w-s1"
    extra = ours(frame, "CCDN, P = 1 (ours, not in the paper)", "challenging", "inter_pupil")
    assert extra["mean"] == pytest.approx(7.1) and extra["in_paper"] == 0 and math.isnan(extra["paper"])
    markdown = paths[0].read_text()
    assert "filled from the Baseline runs" in markdown
    assert "not stated in the paper, our choice (from the first author's MMDN code): Adam" in markdown


def test_intervals_in_csv_and_markdown_and_unavailable_with_one_seed(grid, tmp_path):
    frame = read_csv(write_table(grid, 2, tmp_path / "two")[1])
    row = ours(frame, "CCDN", "challenging", "inter_pupil")  # seeds 6.0, 6.2: t(0.975, 1) * 0.1 = 1.2706
    assert (row["t_low"], row["t_high"]) == (pytest.approx(6.1 - 1.27062, abs=1e-3), pytest.approx(6.1 + 1.27062, abs=1e-3))
    assert row["boot_low"] < row["boot_high"]  # per-face values differ
    grid.seeds = [0]
    grid.runs = [run for run in grid.runs if run.seed == 0]
    paths = write_table(grid, 2, tmp_path / "one")
    frame = read_csv(paths[1])
    row = ours(frame, "CCDN", "challenging", "inter_pupil")
    assert math.isnan(row["t_low"]) and math.isnan(row["sd"]) and not math.isnan(row["boot_low"])
    assert "| CCDN | ours (n=1) | 4.50 [n/a] |" in paths[0].read_text()  # 5 - 1 + 0.5: common inter-pupil


def test_paired_comparisons_are_holm_adjusted_per_table(grid, tmp_path):
    frame = read_csv(write_table(grid, 2, tmp_path)[1])
    paired = frame[frame["kind"] == "paired"]
    assert set(paired.method) == {"CCDN − Baseline", "MyNet − CCDN", "Mean shape (reference) − CCDN"}
    assert len(paired) == 3 * 6  # three pairs × six columns
    assert (paired.p_holm >= paired.p_wilcoxon - 1e-12).all() and (paired.p_holm <= 1).all()
    # Baseline's per-face errors are 1.4 × CCDN's: CCDN − Baseline = −0.4 × the challenging errors' mean
    row = paired[(paired.method == "CCDN − Baseline") & (paired.subset == "challenging")
                 & (paired.normaliser == "inter_pupil")].iloc[0]
    expected = -0.4 * 100 * CHALLENGING_ERRORS.mean()  # the per-seed offsets cancel
    assert row["mean"] == pytest.approx(expected, abs=1e-3) and row["boot_high"] < 0


def write_claims(path: Path, claims: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"claims": claims}, allow_unicode=True))
    return path


def test_claim_verdicts_reproduced_not_reproduced_inconclusive_not_tested(grid, tmp_path):
    claims = write_claims(tmp_path / "claims.yaml", [
        {"id": "good", "table": 2, "claim": "CCDN < Baseline", "kind": "order", "rows": ["CCDN", "Baseline"]},
        {"id": "bad", "table": 2, "claim": "MyNet < CCDN", "kind": "order", "rows": ["MyNet", "CCDN"]},
        {"id": "none", "table": 2, "claim": "CCDN < FCDN", "kind": "order", "rows": ["CCDN", "FCDN"]},
        {"id": "occl", "table": 5, "claim": "CCDN best on occlusion", "kind": "beats_paper", "rows": ["CCDN"],
         "columns": ["Occlusion"]},
    ])
    result = analyse(build_table(grid, 2), load_claims(claims))
    assert {v.claim.id: v.status for v in result.verdicts} == {"good": "reproduced", "bad": "not reproduced",
                                                               "none": "not tested"}
    # WFLW occlusion: ours 5.1 [t over two seeds: 5.1 ± 1.27]; the paper's best other method prints 5.2 (crosses)
    occlusion = analyse(build_table(grid, 5), load_claims(claims)).verdicts
    assert [(v.claim.id, v.status) for v in occlusion] == [("occl", "inconclusive")]
    markdown = write_table(grid, 2, tmp_path / "t", claims=claims)[0].read_text()
    assert "**not reproduced** — MyNet < CCDN (`bad`)" in markdown


def test_the_shipped_claims_file_is_valid_and_bad_entries_name_the_file(tmp_path):
    shipped = load_claims()
    assert {c.id for c in shipped} >= {"ablation-300w", "gamma-best", "p4-best", "wflw-occlusion-best"}
    bad = write_claims(tmp_path / "claims.yaml", [{"id": "x", "table": 2, "claim": "?", "kind": "maybe",
                                                   "rows": ["CCDN"]}])
    with pytest.raises(ReportError, match=r"claims\[0\]: kind 'maybe'") as info:
        load_claims(bad)
    assert str(bad) in str(info.value)


def test_recipe_notes_give_epochs_faces_images_and_steps_per_row_and_never_seconds(grid, tmp_path):
    paths = write_table(grid, 2, tmp_path)
    markdown = paths[0].read_text()
    # two epochs × 64 prepared training faces, 4 optimiser steps per epoch (DONE), two seeds
    assert "- ours — CCDN (ccdn-300w): ccdn, 64 px, 1 HG × 32 ch, ≤ 96 train images; 2 epochs × 64 training faces " \
           "= 128 images seen, 8 optimiser steps per run; 2 runs (cpu)" in markdown
    assert "0 epochs × 64 training faces = 0 images seen, 0 optimiser steps" in markdown  # the mean shape
    # 8 runs: 6 that train (128 images, 8 steps each) and 2 mean-shape runs
    assert "compute: 8 runs, 768 images seen, 48 optimiser steps on cpu" in markdown
    for path in paths:  # measured seconds are only in results/compute.md
        assert re.search(r"\d s\b|\bmin\b", path.read_text()) is None, path


def test_compute_report_sums_measured_seconds_per_table_figure_and_run(grid, tmp_path):
    from ccdn.report.timings import write_compute

    md_path, json_path = write_compute(grid, tmp_path / "compute.md", tmp_path / "metrics" / "compute.json")
    data = json.loads(json_path.read_text())
    # Table 2: 8 runs (6 train 2 epochs × 1.5 s; the mean shape does not), one 0.25 s 300W evaluation each
    assert data["tables"]["Table 2"] == {"runs": 8, "train_seconds": 18.0, "eval_seconds": 2.0, "devices": ["cpu"]}
    assert data["tables"]["Table 3"] == {"runs": 6, "train_seconds": 12.0, "eval_seconds": 1.5, "devices": ["cpu"]}
    # every run once; the 300W and COFW-68 evaluations of Baseline, CCDN and the mean shape both counted
    assert data["all_tables"] == {"runs": 18, "train_seconds": 48.0, "eval_seconds": 6.0, "devices": ["cpu"]}
    assert data["figures"]["Fig. 5"]["train_seconds"] == 18.0
    assert data["runs"]["ccdn-300w-s0"] == {"train_seconds": 3.0, "eval_seconds": {"300w": 0.25, "cofw68": 0.25},
                                            "devices": ["cpu"]}
    text = md_path.read_text()
    assert "| Table 2 | 8 | 18.0 s | 2.0 s | cpu |" in text and "| All tables | 18 | 48.0 s | 6.0 s | cpu |" in text
    assert "| `ccdn-300w-s0` | 3.0 s | 300w 0.2 s, cofw68 0.2 s | cpu |" in text
    assert SYNTHETIC_MARK.capitalize() in text and "only outputs of the pipeline that change between reruns" in text


def test_grid_and_report_agree_on_the_two_measured_files():
    from ccdn.grid import load_grid
    from ccdn.report.compute import compute_paths

    real = load_grid("config/config.yaml")  # Snakemake's outputs (ccdn.grid) = what the report names
    assert compute_paths(real.results_dir) == [real.compute_report_path, real.compute_data_path]
    assert {p.relative_to(real.results_dir).as_posix() for p in compute_paths(real.results_dir)} == MEASURED


def git_ignored(paths: list[str]) -> set[str]:
    """Which of these repository-relative paths the repository's .gitignore ignores."""
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr  # 1: none ignored
    return set(out.stdout.split())


def test_measured_seconds_are_git_ignored_and_no_dvc_output():
    """Two runs of the pipeline leave `git status` clean: the files that change are ignored, and DVC does not
    expect them (a fresh clone, which lacks them, would read them as missing)."""
    from ccdn.grid import load_grid

    real = load_grid(REPO / "config" / "config.yaml")
    measured = [f"results/{name}" for name in sorted(MEASURED)]
    assert git_ignored(measured) == set(measured)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["reproduce"]
    declared = [next(iter(item)) if isinstance(item, dict) else item
                for key in ("outs", "metrics", "plots") for item in stage.get(key, [])]
    assert not set(measured) & set(declared) and str(real.readme_path) in declared
    assert git_ignored(declared) == set()  # every DVC output is committed
    assert not set(measured) & set(subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True,
                                                  text=True, check=True).stdout.split())


def test_missing_history_names_the_training_target(grid, tmp_path):
    path = grid.run_dir("ccdn-300w-s1") / "history.json"
    path.unlink()
    with pytest.raises(ReportError, match="history.json") as info:
        build_table(grid, 2)
    assert f"snakemake --cores all {grid.run_dir('ccdn-300w-s1') / 'model.pt'}" in str(info.value)


# ---------------------------------------------------------------- learning curves, headline, byte stability


def test_learning_curves_figure_and_data(grid, tmp_path):
    paths = write_learning_curves(grid, tmp_path / "figures", tmp_path / "metrics")
    assert [p.name for p in paths] == ["learning_curves.png", "learning_curves.pdf", "learning_curves.csv"]
    data = pd.read_csv(paths[2]).set_index("epoch")
    # ccdn-300w val NME: 20, 10, 5 per epoch (both seeds); the mean shape is its epoch-0 level, 40
    assert data["ccdn-300w"].tolist() == [20.0, 10.0, 5.0]
    assert data["mean-shape-300w"].tolist() == [40.0, 40.0, 40.0]
    assert "ccdn-300w-p2" not in data.columns  # only the runs of Tables 2, 4, 5
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000


def test_headline_is_one_small_file_per_table_column(grid, tmp_path):
    paths = write_headline(grid, tmp_path / "headline")
    numbers = {p.stem: json.loads(p.read_text()) for p in paths}
    assert numbers["table2_300w_challenging_nme_inter_pupil"] == {
        "ours": pytest.approx(6.1), "paper": 6.02, "x_mean_shape": pytest.approx(6.1 / 11.1, abs=1e-4)}
    assert "table7_aflw_full_nme_face_size" not in numbers  # Table 4's CCDN cell, already there
    assert numbers["table4_aflw_full_nme_face_size"] == {"ours": pytest.approx(1.1), "paper": 1.35}
    assert "table6_300w_challenging_nme_inter_pupil" not in numbers  # = Table 2's challenging inter-pupil cell
    assert numbers["table3_cofw68_full_failure_rate_inter_pupil"]["ours"] == pytest.approx(2.8)
    assert sum(len(v) for v in numbers.values()) <= 63 and all(len(v) <= 3 for v in numbers.values())
    (tmp_path / "headline" / "stale.json").write_text("{}")
    write_headline(grid, tmp_path / "headline")
    assert not (tmp_path / "headline" / "stale.json").exists()


MEASURED = {"compute.md", "metrics/compute.json"}  # the only results files holding wall-clock seconds


def build_results(grid: FakeGrid, out: Path) -> dict[str, bytes]:
    """Every report output of the grid under ``out`` (as the pipeline makes them), by relative path."""
    from ccdn.report.occlusion import write_occlusion
    from ccdn.report.timings import write_compute

    for number in range(2, 8):
        write_table(grid, number, out / "tables")
    for name in ("fig5", "fig7", "fig8"):
        write_figure(grid, name, out / "figures", out / "metrics")
    write_learning_curves(grid, out / "figures", out / "metrics")
    write_occlusion(grid, out / "tables", out / "figures", out / "metrics")
    write_headline(grid, out / "metrics" / "headline")
    write_summary(grid, out / "metrics" / "summary.json")
    write_compute(grid, out / "compute.md", out / "metrics" / "compute.json")
    write_readme(grid, out / "README.md", "config/config.yaml", grid.root / "no-workflow")
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_report_output_is_byte_identical_when_rebuilt(grid, tmp_path):
    write_occluded_cofw(grid, visible_px=1.0, occluded_px=3.0)
    results = grid.results_dir
    first = build_results(grid, results)
    readme = (results / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert len(links) > 30 and [link for link in links if not (results / link).exists()] == []  # all there
    # the measured seconds are written but git-ignored: named as plain text, never linked
    assert MEASURED <= first.keys() and not MEASURED & set(links)
    for name in MEASURED:  # named from the repository root (here: the fake grid's root)
        assert f"`results/{name}`" in readme
    assert "`docs/performance.md`" in readme  # no repository around the results folder: not linked either
    shutil.rmtree(results)
    second = build_results(grid, results)
    assert first.keys() == second.keys() and len(first) > 25
    assert [name for name in first if first[name] != second[name]] == []  # the same runs: every file
    pdf = first["figures/fig5_ced_300w_challenging.pdf"]
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf


def test_changing_measured_seconds_changes_only_the_compute_files(grid):
    write_occluded_cofw(grid, visible_px=1.0, occluded_px=3.0)
    before = build_results(grid, grid.results_dir)
    history_path = grid.run_dir("ccdn-300w-s0") / "history.json"
    history = json.loads(history_path.read_text())
    history_path.write_text(json.dumps([{**r, "epoch_seconds": 97.0} if "epoch_seconds" in r else r
                                        for r in history]))  # a slower machine, same training
    metrics_path = grid.metrics_path("ccdn-aflw-s1", "aflw")
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "timing": {"seconds": 41.0, "device": "cpu"}}))
    after = build_results(grid, grid.results_dir)
    assert before.keys() == after.keys()
    assert {name for name in before if before[name] != after[name]} == MEASURED
    assert json.loads(after["metrics/compute.json"])["runs"]["ccdn-300w-s0"]["train_seconds"] == 194.0
    assert "| `ccdn-aflw-s1` | 3.0 s | aflw 41.0 s | cpu |" in after["compute.md"].decode()


# ---------------------------------------------------------------------------------------------- occlusion


def save_prepared_test_split(root: Path, gt: np.ndarray, occluded: np.ndarray, ids: np.ndarray, meta: dict) -> None:
    """A prepared ``test.npz`` of one ``full`` subset with per-point occlusion flags (200 px boxes, no images)."""
    n = len(gt)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "test.npz", images=np.zeros((n, 4, 4, 3), np.uint8), landmarks=gt, to_original=np.zeros((n, 2, 3),
             np.float32), original_landmarks=gt, boxes=np.tile(np.float32([0, 0, 200, 200]), (n, 1)),
             face_size=np.full(n, 200, np.float32), occluded=occluded, attributes=np.zeros((n, 0), np.uint8),
             attribute_names=np.array([], dtype=str), subset_names=np.array(["full"]),
             subset_masks=np.ones((1, n), bool), face_ids=ids, meta=np.array(json.dumps(meta)))


def write_occluded_cofw(grid: FakeGrid, visible_px: float, occluded_px: float) -> np.ndarray:
    """A prepared COFW-68 test split of 20 faces whose point k of face i is occluded when k < 2 * (i % 5),
    and predictions off by ``visible_px`` / ``occluded_px`` × (BASE / 5) pixels on visible / occluded points."""
    n, points = 20, 68
    rng = np.random.default_rng(3)
    gt = np.repeat(rng.normal(0, 30, (1, points, 2)) + 100, n, axis=0).astype(np.float32)  # one face shape
    occluded = np.arange(points)[None, :] < 2 * (np.arange(n)[:, None] % 5)
    ids = np.array([f"face{i}" for i in range(n)])
    save_prepared_test_split(grid.prepared_dir("cofw68"), gt, occluded, ids,
                             {"dataset": "cofw68", "split": "test", "scheme": "68"})
    for run in grid.runs:
        if "cofw68" in run.experiment.evaluate:
            shift = np.where(occluded, occluded_px, visible_px)[..., None] * BASE[run.experiment.id] / 5.0
            pred = gt + shift * np.array([1.0, 0.0])  # moved along x by the shift
            np.savez(grid.predictions_path(run.name, "cofw68"), pred=pred.astype(np.float32), gt=gt,
                     face_ids=ids, err_inter_pupil=np.zeros(n), subset_names=np.array(["full"]),
                     subset_masks=np.ones((1, n), bool))
    return gt


def test_occlusion_stress_separates_occluded_and_visible_points(grid, tmp_path):
    from ccdn.metrics import normalizing_distance
    from ccdn.report.occlusion import write_occlusion

    gt = write_occluded_cofw(grid, visible_px=1.0, occluded_px=3.0)
    paths = write_occlusion(grid, tmp_path / "tables", tmp_path / "figures", tmp_path / "metrics")
    assert [p.name for p in paths] == ["occlusion.md", "occlusion.csv", "occlusion.png", "occlusion.pdf",
                                       "occlusion.csv"]
    summary = pd.read_csv(paths[1], comment="#")
    cofw = summary[summary.dataset == "cofw68"].set_index("method")
    inv_d = (100.0 / normalizing_distance(gt.astype(np.float64), "inter_pupil", scheme="68"))  # percent per pixel
    occluded = np.arange(68)[None, :] < 2 * (np.arange(20)[:, None] % 5)
    expected_visible = np.broadcast_to(inv_d[:, None], occluded.shape)[~occluded].mean()  # CCDN: 1 px
    expected_occluded = 3.0 * np.broadcast_to(inv_d[:, None], occluded.shape)[occluded].mean()
    assert cofw.loc["CCDN", "nme_visible"] == pytest.approx(expected_visible, rel=1e-3)
    assert cofw.loc["CCDN", "nme_occluded"] == pytest.approx(expected_occluded, rel=1e-3)
    assert cofw.loc["CCDN", "occluded_points"] == int(occluded.sum())
    assert cofw.loc["Baseline", "nme_visible"] == pytest.approx(1.4 * expected_visible, rel=1e-3)
    curves = pd.read_csv(paths[4]).set_index("occluded_pct")
    assert list(curves.index) == [0.0, 5.0, 15.0]  # faces with 0, 2/68, 4/68, 6/68, 8/68 points hidden
    assert curves["CCDN (cofw68)"].is_monotonic_increasing  # more hidden points, larger error
    assert "Mean shape (reference) (cofw68)" in curves.columns
    assert "| CCDN |" in paths[0].read_text() and SYNTHETIC_MARK in paths[0].read_text()


def test_occlusion_without_flags_says_so_instead_of_failing(grid, tmp_path):
    from ccdn.report.occlusion import NO_FLAGS, write_occlusion

    paths = write_occlusion(grid, tmp_path / "t", tmp_path / "f", tmp_path / "m")  # no prepared splits
    assert NO_FLAGS in paths[0].read_text() and paths[2].stat().st_size > 1000


SWEEP_LEVELS = [0, 20, 50]  # percent of the 68 points hidden; four faces per level
SWEEP_EXPERIMENTS = ("baseline-300w", "ccdn-300w", "mean-shape-300w")


def write_occlusion_sweep_set(grid: FakeGrid, visible_px: float, occluded_px: float) -> float:
    """A prepared sweep set (12 copies of one face, the first round(level × 68) points hidden at each level)
    and its predictions, off by ``visible_px`` / ``occluded_px`` × (BASE / 5) px; the mean shape is off by
    its BASE / 5 px everywhere. Returns the inter-pupil distance of the face."""
    from ccdn.metrics import normalizing_distance

    n, points = 4 * len(SWEEP_LEVELS), 68
    gt = np.repeat(np.random.default_rng(5).normal(0, 30, (1, points, 2)) + 100, n, axis=0).astype(np.float32)
    hidden = np.repeat([round(level / 100 * points) for level in SWEEP_LEVELS], 4)
    occluded = np.arange(points)[None, :] < hidden[:, None]
    ids = np.array([f"test/{i + 1}" for i in range(n)])
    save_prepared_test_split(grid.prepared_dir("occlusion_sweep"), gt, occluded, ids,
                             {"dataset": "cofw68", "split": "test", "scheme": "68", "synthetic": True})
    grid.occlusion_sweep = {"levels": SWEEP_LEVELS, "faces": 4, "seed": 0, "experiments": list(SWEEP_EXPERIMENTS)}
    grid.sweep_evaluations = [(run, "occlusion_sweep") for run in grid.runs if run.experiment.id in SWEEP_EXPERIMENTS]
    for run, dataset in grid.sweep_evaluations:
        reference = run.experiment.id.startswith("mean-shape")
        px = np.where(occluded, visible_px if reference else occluded_px, visible_px)[..., None]
        pred = gt + px * BASE[run.experiment.id] / 5.0 * np.array([1.0, 0.0])
        path = grid.predictions_path(run.name, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, pred=pred.astype(np.float32), gt=gt, face_ids=ids, err_inter_pupil=np.zeros(n),
                 subset_names=np.array(["full"]), subset_masks=np.ones((1, n), bool))
    return float(normalizing_distance(gt[:1].astype(np.float64), "inter_pupil", scheme="68")[0])


def test_occlusion_sweep_curves_follow_the_hidden_share(grid, tmp_path):
    from ccdn.report.occlusion_sweep import nearest_levels, write_occlusion_sweep

    distance = write_occlusion_sweep_set(grid, visible_px=1.0, occluded_px=3.0)
    paths = write_occlusion_sweep(grid, tmp_path / "figures", tmp_path / "metrics")
    assert [p.name for p in paths] == ["occlusion_sweep.png", "occlusion_sweep.pdf", "occlusion_sweep.csv"]
    curves = pd.read_csv(paths[2]).set_index("occluded_pct")
    assert list(curves.index) == [0, 20, 50]
    assert list(curves.columns) == ["Baseline", "CCDN", "Mean shape (reference)"]  # config order
    for level in SWEEP_LEVELS:  # CCDN (BASE 5: 1 px visible, 3 px hidden): (1 × visible + 3 × hidden) / 68 points
        hidden = round(level / 100 * 68)
        expected = (1.0 * (68 - hidden) + 3.0 * hidden) / 68 * 100.0 / distance
        assert curves.loc[level, "CCDN"] == pytest.approx(expected, rel=1e-4)
        assert curves.loc[level, "Baseline"] == pytest.approx(1.4 * expected, rel=1e-4)  # BASE 7
        assert curves.loc[level, "Mean shape (reference)"] == pytest.approx(2.0 * 100.0 / distance, rel=1e-4)
    first = {p.name: p.read_bytes() for p in paths}
    assert b"CreationDate" not in first["occlusion_sweep.pdf"] and paths[0].stat().st_size > 5000
    write_occlusion_sweep(grid, tmp_path / "figures", tmp_path / "metrics")
    assert {p.name: p.read_bytes() for p in paths} == first  # byte-stable
    # a face's level is the configured one nearest to its hidden share (coincident points: one off)
    assert nearest_levels(np.array([0.0, 13 / 68, 15 / 68, 33 / 68]), SWEEP_LEVELS).tolist() == [0, 20, 20, 50]
    readme = write_readme(grid, tmp_path / "README.md", "config/config.yaml", tmp_path / "none").read_text()
    assert "| Occlusion sweep | Occlusion sweep (synthetic data)" in readme
    assert "`ccdn report figure occlusion_sweep --config config/config.yaml" in readme
    assert find_rule(REPO / "workflow", "report figure occlusion_sweep") == "occlusion_sweep"


def test_occlusion_sweep_without_a_sweep_names_the_config_key(grid, tmp_path):
    from ccdn.report.occlusion_sweep import write_occlusion_sweep

    with pytest.raises(ReportError, match="no `occlusion_sweep`"):
        write_occlusion_sweep(grid, tmp_path / "f", tmp_path / "m")


def test_claim_intervals_cover_seeds_as_well_as_faces():
    from ccdn.report.analysis import hull, seed_difference_interval
    from ccdn.report.stats import Interval
    from ccdn.report.tables import Cell

    a = Cell(values=[1.0, 3.0], runs=["a-s0", "a-s1"])
    b = Cell(values=[2.0, 2.0], runs=["b-s0", "b-s1"])
    seeds = seed_difference_interval(a, b)  # differences -1, +1: mean 0, sem 1, t(0.975, 1) = 12.706
    assert (seeds.low, seeds.high) == (pytest.approx(-12.706, abs=1e-3), pytest.approx(12.706, abs=1e-3))
    assert hull(Interval(-0.5, -0.1), seeds) == Interval(seeds.low, seeds.high)  # faces alone would say "below 0"
    assert seed_difference_interval(Cell(values=[1.0], runs=["a-s0"]), Cell(values=[2.0], runs=["b-s0"])) is None
    assert seed_difference_interval(a, Cell(values=[2.0, 2.0], runs=["b-s0", "b-s2"])) is None  # other seeds


def test_readme_lists_only_what_the_grid_makes(grid, tmp_path):
    grid.tables = ["table2", "table3"]  # as ccdn.grid reports them
    grid.figures = ["fig5"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "performance.md").write_text("# Performance\n")  # the repository holds it: linked
    text = write_readme(grid, tmp_path / "README.md", "config/config.yaml", tmp_path / "none").read_text()
    assert "wall clock (the embedded default on 2 CPU cores) is in [docs/performance.md](docs/performance.md)" in text
    assert "[table2_300w.md]" in text and "[table4_aflw.md]" not in text
    assert "fig5_ced_300w_challenging" in text and "fig7_ced_aflw_full" not in text and "fig8" not in text
    assert "learning_curves.png" in text and "occlusion.md" in text
    assert text.index("## Summary") < text.index("## Outputs")  # the summary opens the README
    # Fig. 5 is drawn from the Table 2 runs on 300W: 4 experiments × 2 seeds, 2 epochs × 64 faces and
    # 8 steps each (the mean shape does not train)
    assert "Fig. 5: 8 runs, 768 images seen, 48 optimiser steps" in text
    # the runs of Tables 2, 4 and 5; AFLW has 32 training faces, WFLW 48
    assert "Learning curves: 12 runs, 1,088 images seen, 80 optimiser steps" in text
    assert "are written to `results/compute.md` (data: `results/metrics/compute.json`) by the rule `compute`; they " \
        "are git-ignored, not committed" in text
    assert "[compute" not in text  # a fresh clone does not hold them: no link
    assert re.search(r"\d s\b|\bmin\b", text) is None  # no measured seconds in the README


def test_paper_grid_cost_per_table_counts_each_tables_runs(capsys):
    """GPU-hours per paper table of config/paper.yaml at one assumed rate for every model."""
    import argparse as ap

    import torch

    from ccdn.benchmarks.train import grid_cost
    from ccdn.config import load_config
    from ccdn.data.schemes import DATASETS
    from ccdn.grid import load_grid

    rate = 100.0  # images/s on the "GPU" (FLOP-based: TFLOP/s ÷ FLOPs per image)
    grid_cost(ap.Namespace(grid="config/paper.yaml", assumed_gpu_tflops=1.0), {"ccdn": {"images_per_s": 1.0,
              "flops": 1e12 / rate}}, torch.device("cpu"))
    text = capsys.readouterr().out
    grid, epochs = load_grid("config/paper.yaml"), int(load_config()["optim"]["epochs"])
    runs = {r.name: r for r, _ in grid.table_evaluations("table4")}
    hours = sum(DATASETS[r.experiment.train].expected_counts[("train", "full")] for r in runs.values()) \
        * epochs / rate / 3600
    assert f"| table4 | {len(runs)} | {hours:,.1f} |" in text


def test_reference_rows_are_recognised_by_name_or_registry_metadata():
    from ccdn.models.registry import register_model
    from ccdn.report.tables import is_reference_model

    @register_model("test_report_floor", needs_training=False)
    def _floor(num_landmarks: int, **options):  # pragma: no cover - never built
        raise AssertionError

    assert is_reference_model("mean_shape") and is_reference_model("test_report_floor")
    assert not is_reference_model("ccdn") and not is_reference_model("timm/resnet18")
    assert not is_reference_model("mynet")  # unregistered: an ordinary row


def test_learning_check_compares_each_run_with_the_mean_shape_on_its_own_test_set(grid):
    from ccdn.report.learning_check import learning_line, own_test_set_ratios

    ratios = {r.run: r.ratio for r in own_test_set_ratios(grid)}
    # 300W-trained runs only: the fake AFLW and WFLW have no mean-shape run to compare with
    assert set(ratios) == {f"{e}-s{s}" for e in ("baseline-300w", "ccdn-300w", "ccdn-300w-p2", "ccdn-300w-g1",
                                                  "ccdn-300w-p1", "mynet-300w") for s in (0, 1)}
    # full, inter-pupil (300W's main normaliser), against the mean shape of the same seed
    assert ratios["ccdn-300w-s1"] == pytest.approx(fake_nme("ccdn-300w", 1, "full", "inter_pupil")
                                                   / fake_nme("mean-shape-300w", 1, "full", "inter_pupil"))
    main = {r.run for r in own_test_set_ratios(grid, "common", main_only=True)}
    assert main == {"baseline-300w-s0", "baseline-300w-s1", "ccdn-300w-s0", "ccdn-300w-s1"}
    line = learning_line(grid)
    worst = fake_nme("mynet-300w", 1, "full", "inter_pupil") / fake_nme("mean-shape-300w", 1, "full", "inter_pupil")
    assert f"the worst of the 12 trained runs reaches ×{worst:.2f} the mean-shape NME (mynet-300w-s1)" in line
    common = fake_nme("baseline-300w", 1, "common", "inter_pupil") / fake_nme("mean-shape-300w", 1, "common",
                                                                              "inter_pupil")
    assert f"on 300W common: worst ×{common:.2f}" in line
