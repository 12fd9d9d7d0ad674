"""A real SLURM run of the reduced grid (config/ci_slurm.yaml) through `snakemake --profile slurm`.

`.ci/slurm_cluster.sh start` installs (apt) and starts a one-node cluster with one fake GPU; the
test submits the workflow with the repository's slurm profile, checks the jobs went through sbatch
(Snakemake's log and SLURM's job-completion log) and stops the daemons it started. Needs root and
apt-get (CI runs as root); elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ccdn.grid import load_grid

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLUSTER = ROOT / ".ci" / "slurm_cluster.sh"
# Small requests that fit a 2-CPU CI node. On the command line, --set-resources replaces the
# workflow profile's per-rule table as a whole, so every rule that goes to SLURM is restated.
CI_RESOURCES = [
    "--default-resources", "slurm_partition=cpu", "runtime=20", "mem_mb=1000", "cpus_per_task=1",
    "--set-resources",
    "train:gpu=1", "train:cpus_per_task=1", "train:mem_mb=1500", "train:runtime=20",
    "evaluate:gpu=1", "evaluate:cpus_per_task=1", "evaluate:mem_mb=1500", "evaluate:runtime=20",
    "prepare:cpus_per_task=1", "prepare:mem_mb=1000", "prepare:runtime=20",
    "synth:cpus_per_task=1", "synth:mem_mb=1000", "synth:runtime=20",
]


def _skip_reason() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting a SLURM cluster needs root (CI runs as root)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "apt-get is not available to install SLURM"
    return None


def _copy_repo(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def cluster():
    reason = _skip_reason()
    if reason:
        print(f"[slurm] skipped: {reason}")
        pytest.skip(reason)
    # Not under pytest's basetemp: a concurrent pytest session may prune it while daemons use it.
    base = Path(tempfile.mkdtemp(prefix="ccdn-slurm-"))
    env = {**os.environ, "BASE": str(base), "FAKE_GPUS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=900)
    print(f"[slurm] cluster start: {time.perf_counter() - start:.0f} s\n{proc.stderr[-2000:]}")
    try:
        assert proc.returncode == 0, f"{CLUSTER} start failed:\n{proc.stdout}\n{proc.stderr}"
        yield base
    finally:
        stop = subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, text=True, timeout=120)
        print(f"[slurm] {stop.stderr.strip()}")
        for pidfile in ("slurmctld.pid", "slurmd.pid"):
            path = base / "run" / pidfile
            if path.is_file() and path.read_text().strip():
                pid = int(path.read_text().strip())
                assert not _alive(pid), f"{pidfile} ({pid}) still running after stop"
        conf = Path("/etc/slurm/slurm.conf")
        assert not conf.is_file() or "ccdn-repro" not in conf.read_text(), "stop left our slurm.conf behind"
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def repo_copy():
    with tempfile.TemporaryDirectory(prefix="ccdn-slurm-repo-") as tmp:
        yield _copy_repo(Path(tmp))


def test_reduced_grid_runs_through_sbatch(cluster: Path, repo_copy: Path) -> None:
    copy = repo_copy
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(copy)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{copy / 'mlflow.db'}"
    cmd = [
        str(BIN / "snakemake"), "--profile", "slurm", "--configfile", "config/ci_slurm.yaml",
        "--jobs", "4", "--latency-wait", "10",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs", "--slurm-logdir", "logs/slurm",
        *CI_RESOURCES,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    print(f"[slurm] snakemake --profile slurm (reduced grid): {elapsed:.0f} s")
    assert proc.returncode == 0, f"snakemake via SLURM failed:\n{log[-8000:]}"

    grid = load_grid(copy / "config/ci_slurm.yaml")
    assert "Using profiles slurm" in log
    # every non-local job was submitted with sbatch and got a SLURM job id
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    # train, evaluate, synth and prepare go to SLURM; the report rules are local
    remote_jobs = len(grid.runs) + len(grid.evaluations) + 2 * len(grid.used_datasets)
    assert len(submitted) == remote_jobs, log[-4000:]
    slurm_ids = {sid for _, sid in submitted}
    # ... and SLURM ran them to completion (job-completion log of the cluster)
    jobcomp = (cluster / "log" / "jobcomp.txt").read_text()
    records = {m["id"]: m["line"] for m in re.finditer(r"^(?P<line>JobId=(?P<id>\d+) .*)$", jobcomp, re.MULTILINE)}
    completed = {i for i, line in records.items() if "JobState=COMPLETED" in line}
    assert slurm_ids <= completed, f"not completed in SLURM: {slurm_ids - completed}\n{jobcomp[-3000:]}"
    # which rule each SLURM job ran (the plugin logs to logs/slurm/rule_<rule>/<wildcards>/<jobid>.log)
    rule_of = {m[1]: m[2] for m in re.finditer(r"SLURM jobid (\d+) \(log: \S*rule_(\w+)/", log)}
    assert sorted(rule_of.values()) == sorted(
        ["synth"] * 2 + ["prepare"] * 2 + ["train"] * len(grid.runs) + ["evaluate"] * len(grid.evaluations))
    # GPU rules asked SLURM for a GPU (resource gpu: 1 -> sbatch --gpus=1); CPU rules did not
    for slurm_id, rule in rule_of.items():
        job = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True).stdout
        assert f"JobId={slurm_id} " in job, f"SLURM forgot job {slurm_id} ({rule})"
        assert ("TresPerJob=gres:gpu:1" in job) == (rule in ("train", "evaluate")), f"{rule}: {job}"
    # the reduced grid's results came back
    for table in grid.tables:
        assert all(p.is_file() for p in (copy / t for t in grid.table_outputs(table)))
    assert (copy / grid.readme_path).is_file()
    for run in grid.runs:
        assert (copy / grid.run_dir(run.name) / "model.pt").is_file()


# A training job SLURM requeues mid-run: 3 epochs of 4 slowed-down steps (~6 s), requeued after epoch 1.
REQUEUE_OVERRIDES = ("model.name=test/tiny", "model.options.step_seconds=0.5", "optim.epochs=3",
                     "train.max_steps_per_epoch=4")


def _job(job_id: str) -> str:
    return subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout


def _ended_badly(state: str) -> bool:
    return "JobState=FAILED" in state or "JobState=CANCELLED" in state


def _wait(condition, what: str, job_id: str, log: Path, timeout_s: float = 300, fatal=_ended_badly) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        state = _job(job_id)
        shown = f"{state}\n{log.read_text()[-4000:] if log.is_file() else ''}"
        assert not fatal(state), f"{what}: {shown}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {shown}"
        time.sleep(0.2)


def test_a_requeued_training_job_resumes_to_the_uninterrupted_weights(cluster: Path, tiny_300w: Path) -> None:
    import torch

    from ccdn.config import save_config
    from ccdn.train import train
    from conftest import tiny_config

    work = Path(tempfile.mkdtemp(prefix="ccdn-requeue-"))  # outside pytest's basetemp, as the cluster's
    try:
        config = tiny_config(tiny_300w, *REQUEUE_OVERRIDES)
        save_config(config, work / "config.yaml")
        run_dir = work / "run"
        runner = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import conftest; "
                  "from ccdn.cli import main; sys.exit(main(sys.argv[1:]))")
        script = work / "train.sbatch"
        script.write_text(
            "#!/bin/bash\n"
            f"#SBATCH --job-name=ccdn-requeue --partition=cpu --cpus-per-task=1 --mem=1500 --time=15\n"
            f"#SBATCH --requeue --open-mode=append --output={work}/job.log\n"
            f"export PYTHONPATH={ROOT} OMP_NUM_THREADS=1\n"
            'echo "job start, SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"\n'
            f'{sys.executable} -c "{runner}" train --config {work}/config.yaml --run-dir {run_dir} --no-progress\n')
        job_id = subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True,
                                text=True).stdout.strip().split(";")[0]

        _wait(lambda: (run_dir / "checkpoints" / "epoch_001.pt").is_file(), "epoch 1 of the first start", job_id, work / "job.log")
        assert not (run_dir / "DONE").exists()
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True)
        requeued = time.monotonic()

        def finished() -> bool:
            state = _job(job_id)
            # SLURM holds a requeued job back (BeginTime) before its next start; we shorten the wait, but not
            # below a few seconds: slurmd refuses a start within the second its credential was revoked.
            if "JobState=PENDING" in state and "Reason=BeginTime" in state and time.monotonic() - requeued > 3:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            return "JobState=COMPLETED" in state and (run_dir / "DONE").is_file()

        def second_start_failed(state: str) -> bool:  # the first start's exit 143 shows as FAILED for a moment
            return _ended_badly(state) and "SLURM_RESTART_COUNT=1" in (work / "job.log").read_text()

        _wait(finished, "the requeued job to complete", job_id, work / "job.log", fatal=second_start_failed)
        log = (work / "job.log").read_text()
        assert "Restarts=1" in _job(job_id), _job(job_id)
        assert "SLURM_RESTART_COUNT=1" in log and f"resuming {run_dir}" in log, log[-3000:]
        # the first start stopped on SLURM's SIGTERM after a whole step, with a checkpoint (ccdn.training.signals)
        assert "stopped by signal 15" in log and "checkpoint written" in log, log[-3000:]

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the job (OMP_NUM_THREADS=1): other thread counts sum in another order
        try:
            reference = train(config, work / "uninterrupted", progress=False)
        finally:
            torch.set_num_threads(threads)
        assert reference.completed
        resumed = torch.load(run_dir / "model.pt", weights_only=True)
        expected = torch.load(work / "uninterrupted" / "model.pt", weights_only=True)
        assert resumed.keys() == expected.keys()
        for key in expected:
            assert torch.equal(resumed[key], expected[key]), key
        print(f"[slurm] requeued job {job_id}, its log:\n{log}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
