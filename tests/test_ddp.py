"""Multi-process training (``torchrun``, gloo on CPU) and the CPU/worker/device choices of a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ccdn.config import save_config
from ccdn.distributed import available_cpus, dataloader_workers, init_distributed, select_device
from ccdn.train import train

from conftest import tiny_config

TESTS_DIR = Path(__file__).resolve().parent

# Stated tolerance: 2 processes each average the loss over half of the same global batch and DDP
# averages their gradients, so the run equals the single-process one up to float32 summation order.
WEIGHT_ATOL = 1e-5
NME_RTOL = 1e-4

WORKER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(TESTS_DIR)!r})
    import conftest  # registers the BatchNorm-free "test/tiny" model
    from ccdn.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_two_process_gloo_run_matches_a_single_process_run(tiny_300w, tmp_path):
    config = tiny_config(tiny_300w, "model.name=test/tiny", "optim.epochs=2", "train.max_steps_per_epoch=4")
    config_file = tmp_path / "config.yaml"
    save_config(config, config_file)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker),
          "train", "--config", str(config_file), "--no-progress", "--run-dir", str(tmp_path / "ddp")], tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, tmp_path / "single", progress=False)  # the same config, one process (this one)
    finally:
        torch.set_num_threads(threads)

    done = json.loads((tmp_path / "ddp" / "DONE").read_text())
    assert done["world_size"] == 2 and done["global_step"] == 8
    single = torch.load(tmp_path / "single" / "model.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)
    assert single.keys() == ddp.keys()
    difference = max((single[k] - ddp[k]).abs().max().item() for k in single)
    print(f"max |single - ddp| weight difference after 8 steps: {difference:.2e}")
    assert difference <= WEIGHT_ATOL, f"max weight difference {difference:.2e} > {WEIGHT_ATOL}"
    nme = [json.loads((tmp_path / run / "history.json").read_text())[-1]["val_nme"] for run in ("single", "ddp")]
    assert nme[1] == pytest.approx(nme[0], rel=NME_RTOL)
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()


def test_cpus_come_from_the_job_not_the_node(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert available_cpus() == 6
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert available_cpus() == 4
    assert dataloader_workers("auto") == 3  # one CPU stays with the training loop
    assert dataloader_workers("auto", local_world_size=2) == 1  # two processes share the 4 CPUs
    assert dataloader_workers("auto", cpus=64) == 8  # capped
    assert dataloader_workers("auto", cpus=1) == 0
    assert dataloader_workers(5) == 5


def test_device_choice_and_single_process_default(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.is_main, info.distributed) == (0, 1, None, True, False)
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")
