"""The reproduction pipeline end to end, in a fresh copy of the repository (slow; CI runs it).

One module-scoped copy is built once: lint, dry runs of both configs, the whole embedded default
with `snakemake --cores all`, then `dvc repro`, a no-op rerun, and a targeted rerun after removing
one run's model and checkpoints (every results file but the two of measured seconds comes back
byte-identical). Wall times are printed (docs/performance.md, "Pipeline").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from ccdn.grid import FIGURES, TABLES, load_grid

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYNTHETIC_MARK = "synthetic data — not a reproduction"
FULL_RUN_TIMEOUT_S = 25 * 60


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def repo_files(root: Path) -> list[str]:
    """What a fresh clone holds: tracked files plus new files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    return [f for f in listed.split("\0") if f and (root / f).is_file()]


def copy_repo(root: Path, dest: Path) -> Path:
    for name in repo_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)  # a clone is a git repository (DVC wants one)
    return dest


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # snakemake, dvc, ccdn of this venv
    env["PYTHONPATH"] = str(copy)  # the copy's code, not the checkout the venv was installed from
    env.pop("SNAKEMAKE_PROFILE", None)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{copy / 'mlflow.db'}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], copy: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    print(f"[pipeline] {' '.join(cmd)}: {elapsed:.1f} s (exit {proc.returncode})")
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    proc.elapsed = elapsed  # type: ignore[attr-defined]
    return proc


def snakemake(copy: Path, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], copy, timeout=timeout, check=check)


def dry_run_jobs(copy: Path, *args: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run would execute."""
    proc = snakemake(copy, "--dry-run", "--printshellcmds", *args)
    text = proc.stdout + proc.stderr
    jobs: list[tuple[str, list[str]]] = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        match = re.match(r"(?:local)?rule (\w+):\n", block)
        if not match:
            continue
        outputs = re.search(r"^\s+output: (.*)$", block, flags=re.MULTILINE)
        jobs.append((match.group(1), outputs.group(1).split(", ") if outputs else []))
    return jobs


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


# The only results files holding measured seconds (ccdn.report.compute.compute_paths): git-ignored; all others
# are byte-stable and committed.
MEASURED = {"compute.md", "metrics/compute.json"}


def ignored(copy: Path, paths: list[str]) -> set[str]:
    """Which of these paths (relative to the copy) its .gitignore ignores: what `git status` never shows."""
    proc = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=copy, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return set(proc.stdout.split())


def results_bytes(results: Path) -> dict[str, bytes]:
    """Every file under results/ that git would hold (Snakemake's directory timestamps are ignored)."""
    return {p.relative_to(results).as_posix(): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


# ---------------------------------------------------------------------------------------------
# the copy and the full run (built once per module)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def copy():
    # Not under pytest's basetemp: a concurrent pytest session may prune it during the long run.
    with tempfile.TemporaryDirectory(prefix="ccdn-pipeline-") as tmp:
        yield copy_repo(ROOT, Path(tmp))


@pytest.fixture(scope="module")
def full_run(copy: Path) -> Path:
    proc = snakemake(copy, "--cores", "all", timeout=FULL_RUN_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        logs = sorted((copy / "logs").rglob("*.log")) if (copy / "logs").is_dir() else []
        failed = [p for p in logs if re.search(r"Traceback|error", p.read_text(errors="replace"))]
        details = "\n".join(f"--- {p.relative_to(copy)}\n{p.read_text(errors='replace')[-3000:]}" for p in failed[:3])
        raise AssertionError(f"snakemake --cores all failed:\n{proc.stderr[-6000:]}\n{details}")
    print(f"[pipeline] embedded default end to end: {proc.elapsed:.0f} s")  # type: ignore[attr-defined]
    return copy


# ---------------------------------------------------------------------------------------------
# lint and dry runs
# ---------------------------------------------------------------------------------------------


def test_lint_is_clean(copy: Path) -> None:
    proc = snakemake(copy, "--lint")
    assert "Lints for" not in proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize("config", ["config/config.yaml", "config/paper.yaml"])
def test_dry_run_builds_the_full_dag(copy: Path, config: str) -> None:
    grid = load_grid(copy / config)
    args = [] if config == "config/config.yaml" else ["--configfile", config]
    jobs = dry_run_jobs(copy, *args)
    rules = [rule for rule, _ in jobs]
    outputs = {out for _, outs in jobs for out in outs}
    assert rules.count("train") == len(grid.runs)
    assert rules.count("evaluate") == len(grid.evaluations)
    assert rules.count("synth" if grid.synthetic else "fetch") == 4
    for table in TABLES:
        for path in grid.table_outputs(table):
            assert str(path) in outputs, f"{path} missing from the DAG of {config}"
    for figure in FIGURES:
        for path in grid.figure_outputs(figure):
            assert str(path) in outputs, f"{path} missing from the DAG of {config}"
    for path in (grid.readme_path, grid.summary_path, grid.ced_data_path("fig5"), grid.ced_data_path("fig7"),
                 grid.metrics_dir / "headline", grid.metrics_dir / "learning_curves.csv",
                 grid.figures_dir / "learning_curves.png", grid.tables_dir / "occlusion.md",
                 grid.metrics_dir / "occlusion.csv", grid.compute_report_path, grid.compute_data_path,
                 *grid.sweep_outputs):  # the synthetic occlusion sweep: config.yaml only
        assert str(path) in outputs
    assert rules.count("evaluate_occlusion_sweep") == len(grid.sweep_evaluations)
    if config == "config/paper.yaml":  # three seeds of the paper's recipe
        assert {f"ccdn-300w-s{seed}" for seed in (0, 1, 2)} <= {Path(o).parent.name for o in outputs}


def test_slurm_profile_selects_paper_grid_and_gpu_requests(copy: Path) -> None:
    """`--profile slurm` (site profile) + profiles/default (per-rule requests) as a cluster would see them."""
    proc = snakemake(copy, "--dry-run", "--profile", "slurm")
    text = proc.stdout + proc.stderr
    assert "Using profiles slurm and workflow specific profile profiles/default" in text
    assert "config/paper.yaml" in text
    paper = load_grid(copy / "config/paper.yaml")
    blocks = re.split(r"\n(?=(?:local)?rule \w+:\n)", text)
    train = [b for b in blocks if b.startswith("rule train:")]
    assert len(train) == len(paper.runs)
    for block in train[:3]:
        resources = re.search(r"resources: (.*)", block).group(1)
        for item in ("gpu=1", "cpus_per_task=8", "mem_mb=32000", "runtime=1440"):
            assert item in resources.split(", "), resources
    synth_or_prepare = [b for b in blocks if b.startswith("rule prepare:")]
    assert synth_or_prepare and "gpu=" not in synth_or_prepare[0]
    fetch = [b for b in blocks if b.startswith("rule fetch:")]
    assert len(fetch) == 4 and all("ccdn fetch" in b and "--root data/raw " in b for b in fetch)


# ---------------------------------------------------------------------------------------------
# the embedded default end to end
# ---------------------------------------------------------------------------------------------


def test_full_run_writes_every_result(full_run: Path) -> None:
    grid = load_grid(full_run / "config/config.yaml", root=full_run)
    for table in TABLES:
        for path in grid.table_outputs(table):
            assert path.is_file() and path.stat().st_size > 0, path
        assert SYNTHETIC_MARK in grid.table_outputs(table)[0].read_text(encoding="utf-8"), table
    for figure in FIGURES:
        for path in grid.figure_outputs(figure):
            assert path.is_file() and path.stat().st_size > 1000, path
    readme = grid.readme_path.read_text(encoding="utf-8")
    assert SYNTHETIC_MARK in readme
    assert "**Does every run learn?** On its own test set" in readme
    for table in TABLES.values():
        assert table in readme
    summary = json.loads(grid.summary_path.read_text())
    assert summary["synthetic"] is True
    assert any(key.startswith("ccdn-300w-s0/300w/challenging/") for key in summary)
    for run in grid.runs:
        assert (grid.run_dir(run.name) / "model.pt").is_file(), run.name
        trained = run.experiment.overrides.get("optim.epochs", 1) != 0  # mean_shape: fitted, no steps, no checkpoint
        assert (grid.run_dir(run.name) / "checkpoints" / "last.pt").is_file() == trained, run.name
    for run, dataset in grid.evaluations:
        metrics = json.loads(grid.metrics_path(run.name, dataset).read_text())
        assert metrics["run"] == run.name and metrics["dataset"] == dataset and metrics["synthetic"] is True
    sweep = pd.read_csv(grid.metrics_dir / "occlusion_sweep.csv").set_index("occluded_pct")
    assert list(sweep.index) == grid.occlusion_sweep["levels"] and sweep.notna().all().all()
    assert all(path.is_file() and path.stat().st_size > 1000 for path in grid.sweep_outputs if path.suffix != ".csv")
    resolved = load_grid(grid.results_dir / "config.yaml")  # the grid the reports were made from
    assert [r.name for r in resolved.runs] == [r.name for r in grid.runs]
    # tracking.defer: no job opened MLflow; `ccdn track` (rule track) logged every run afterwards
    tracked = json.loads(grid.track_summary_path.read_text())
    assert sorted(tracked) == sorted(str(grid.run_dir(r.name).relative_to(full_run)) for r in grid.runs)
    assert all(outcome.startswith("imported (") for outcome in tracked.values()), tracked
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{full_run / 'mlflow.db'}")
    record = json.loads((grid.run_dir("ccdn-300w-s0") / "tracking.json").read_text())
    logged = client.get_run(record["run_id"]).data.metrics
    metrics = json.loads(grid.metrics_path("ccdn-300w-s0", "cofw68").read_text())
    assert logged["eval/cofw68/full/nme_inter_pupil"] == pytest.approx(metrics["subsets"]["full"]["nme"]["inter_pupil"])


def test_second_run_has_nothing_to_do(full_run: Path) -> None:
    proc = snakemake(full_run, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    print(f"[pipeline] no-op snakemake -n: {proc.elapsed:.1f} s")  # type: ignore[attr-defined]


def test_dvc_repro_metrics_and_plots(full_run: Path) -> None:
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], full_run, timeout=900)
    status = run([dvc, "status"], full_run)
    assert "up to date" in status.stdout, status.stdout
    print(f"[pipeline] dvc status: {status.elapsed:.1f} s")  # type: ignore[attr-defined]
    metrics = run([dvc, "metrics", "show", "--json"], full_run)
    assert "table2_300w_challenging_nme_inter_pupil.json" in metrics.stdout and "x_mean_shape" in metrics.stdout
    table = run([dvc, "metrics", "show"], full_run)  # one line per table column: readable in a terminal
    assert max(len(line) for line in table.stdout.splitlines()) <= 200, table.stdout
    plots = run([dvc, "plots", "show", "--json"], full_run)
    assert "ced_fig5.csv" in plots.stdout and "ced_fig7.csv" in plots.stdout and "learning_curves.csv" in plots.stdout
    assert "occlusion_sweep.csv" in plots.stdout
    assert (full_run / "dvc.lock").is_file()
    # DVC kept Snakemake's view intact: still nothing to do
    assert "Nothing to be done" in (p := snakemake(full_run, "--dry-run")).stdout + p.stderr


def test_removing_one_model_reruns_only_its_dependents(full_run: Path) -> None:
    grid = load_grid(full_run / "config/config.yaml")  # paths relative to the copy, as Snakemake prints them
    victim = "ccdn-300w-p2-s0"  # feeds Table 7 and Fig. 8 only
    run_dir = full_run / grid.run_dir(victim)
    untouched = [full_run / grid.run_dir(r.name) / "model.pt" for r in grid.runs if r.name != victim]
    untouched += [full_run / p for t in TABLES if t != "table7" for p in grid.table_outputs(t)]
    untouched += [full_run / p for f in ("fig5", "fig7") for p in grid.figure_outputs(f)]
    before = mtimes(untouched)
    results = full_run / grid.results_dir
    before_bytes = results_bytes(results)
    assert MEASURED <= before_bytes.keys()
    (run_dir / "model.pt").unlink()
    shutil.rmtree(run_dir / "checkpoints")

    jobs = dry_run_jobs(full_run)
    assert sorted(rule for rule, _ in jobs) == ["all", "compute", "evaluate", "figure_fig8", "headline", "readme",
                                                "summary", "table", "track", "train"]
    outputs = dict(jobs)
    assert outputs["train"] == [str(grid.run_dir(victim) / "model.pt")]
    assert str(grid.metrics_path(victim, "300w")) in outputs["evaluate"]
    assert outputs["table"] == [str(p) for p in grid.table_outputs("table7")]

    snakemake(full_run, "--cores", "all", timeout=600)
    assert (run_dir / "model.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert mtimes(untouched) == before, "files that do not depend on the removed run were rewritten"
    # retraining from scratch reproduces Table 7, Fig. 8 and the rest byte for byte; only the seconds move,
    # and git ignores them: every file git would track is identical (`git status` stays clean)
    after_bytes = results_bytes(results)
    assert after_bytes.keys() == before_bytes.keys()
    tracked = set(before_bytes) - {Path(p).relative_to(grid.results_dir).as_posix() for p in
                                   ignored(full_run, [str(grid.results_dir / name) for name in before_bytes])}
    assert tracked and not tracked & MEASURED  # (results/config.yaml, the resolved grid, is ignored too)
    assert {name for name in tracked if after_bytes[name] != before_bytes[name]} == set()
    assert "Nothing to be done" in (p := snakemake(full_run, "--dry-run")).stdout + p.stderr
