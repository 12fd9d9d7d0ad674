"""A run survives hard deaths: ``kill -9`` in the middle of checkpoint and ``model.pt`` writes, an MLflow
run left RUNNING by a job that died, and files others must read (permissions from the umask)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccdn import checkpoint as ckpt
from ccdn.train import Trainer, train

from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ("model.name=test/tiny", "train.max_steps_per_epoch=3", "train.checkpoint_minutes=0")

# The child trains and SIGKILLs itself when it is about to rename its NTH temporary file onto TARGET:
# the temporary file is complete, the destination not yet replaced - the worst moment for a kill.
CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from conftest import tiny_config
from ccdn.train import train
data, run_dir, target, nth = sys.argv[1:5]
real_replace, calls = os.replace, []
def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == target:
        calls.append(1)
        if len(calls) == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
train(tiny_config(data, *{overrides!r}), run_dir, progress=False)
"""


def _kill_during_write(data: Path, run_dir: Path, target: str, nth: int) -> None:
    script = CHILD.format(tests=str(REPO / "tests"), overrides=OVERRIDES)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(data), str(run_dir), target, str(nth)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def _temporaries(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*.tmp"))


# (file being renamed into place, which rename of it): with 3 steps per epoch and a checkpoint after
# every step, last.pt is replaced after steps 1 and 2 and then published (hard link) at the epoch end.
KILLS = [("last.pt", 2), ("epoch_001.pt", 1), ("last.pt", 3), ("model.pt", 1)]


def test_kill_9_during_checkpoint_and_model_writes_resumes_exactly_and_leaves_no_temporary_files(
        tiny_300w, tmp_path, single_thread):
    reference = tmp_path / "uninterrupted"
    train(tiny_config(tiny_300w, *OVERRIDES), reference, progress=False)
    expected = torch.load(reference / "model.pt", weights_only=True)
    for target, nth in KILLS:
        run_dir = tmp_path / f"killed-{target}-{nth}"
        _kill_during_write(tiny_300w, run_dir, target, nth)
        assert _temporaries(run_dir), f"the kill at {target} #{nth} left no temporary file: it came too late"
        assert not (run_dir / "DONE").exists()
        train(tiny_config(tiny_300w, *OVERRIDES), run_dir, progress=False)  # the requeued job
        assert _temporaries(run_dir) == [], target
        resumed = torch.load(run_dir / "model.pt", weights_only=True)
        assert resumed.keys() == expected.keys()
        for key in expected:
            assert torch.equal(resumed[key], expected[key]), (target, nth, key)


def test_a_run_that_died_before_its_first_checkpoint_continues_its_mlflow_run(tiny_300w, tmp_path,
                                                                               single_thread, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    run_dir = tmp_path / "run"

    def die_hard(config):
        """As kill -9 before the first checkpoint: the MLflow run is never ended."""
        with monkeypatch.context() as patch:
            patch.setattr(Trainer, "end_tracking", lambda self, status: None)
            patch.setattr(Trainer, "_train_step", lambda self, batch: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                train(config, run_dir, progress=False)
        assert ckpt.latest_checkpoint(run_dir) is None
        return _run_id(run_dir)

    config = tiny_config(tiny_300w, *OVERRIDES, "optim.epochs=1", "tracking.enabled=true")
    first = die_hard(config)
    assert client.get_run(first).info.status == "RUNNING"
    train(config, run_dir, progress=False)
    assert _run_id(run_dir) == first and client.get_run(first).info.status == "FINISHED"

    # Another recipe takes over a directory whose job died: the dead run is closed, a new one opened.
    shutil.rmtree(run_dir)
    dead = die_hard(config)
    changed = tiny_config(tiny_300w, *OVERRIDES, "optim.epochs=1", "tracking.enabled=true", "optim.lr=5e-4")
    train(changed, run_dir, progress=False)
    assert client.get_run(dead).info.status == "KILLED"
    assert _run_id(run_dir) != dead and client.get_run(_run_id(run_dir)).info.status == "FINISHED"


def _run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "tracking.json").read_text())["run_id"]


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_run_files_follow_the_umask(tiny_300w, tmp_path, single_thread, mask, file_mode, dir_mode):
    previous = os.umask(mask)
    try:
        train(tiny_config(tiny_300w, *OVERRIDES, "optim.epochs=1"), tmp_path / "run", progress=False)
    finally:
        os.umask(previous)
    paths = [tmp_path / "run", *sorted((tmp_path / "run").rglob("*"))]
    names = {p.name for p in paths}
    assert {"config.yaml", "history.json", "model.pt", "DONE", "last.pt", "epoch_001.pt"} <= names
    for path in paths:
        expected = dir_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))


def test_a_second_process_in_the_same_run_directory_waits_then_stops(tiny_300w, tmp_path, single_thread,
                                                                     monkeypatch):
    from ccdn.errors import ConfigError
    from ccdn.training import run_lock

    run_dir = tmp_path / "run"
    config = tiny_config(tiny_300w, *OVERRIDES, "optim.epochs=1")
    monkeypatch.setattr(run_lock, "WAIT_S", 0.5)
    with run_lock.hold_run_dir(run_dir):  # another job is training here (its own open file, so flock conflicts)
        with pytest.raises(ConfigError, match=rf"{run_dir} is in use by another `ccdn train` \(pid {os.getpid()} on "):
            train(config, run_dir, progress=False)
        assert not (run_dir / "config.yaml").exists()  # it touched nothing
    assert train(config, run_dir, progress=False).completed  # once the holder is gone
