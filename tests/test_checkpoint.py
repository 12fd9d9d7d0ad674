"""Checkpoints: atomic writes, weights-only loading, RNG states, pruning."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from ccdn import checkpoint as ckpt


def _training_state() -> dict:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": ckpt.capture_rng_state(), "epoch": 1, "history": [{"epoch": 1, "val_nme": 3.5}]}


def test_round_trip_with_weights_only(tmp_path):
    state = _training_state()
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt.save_checkpoint(state, path)
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert loaded["optimizer"]["state"][0]["exp_avg"].equal(state["optimizer"]["state"][0]["exp_avg"])
    assert loaded["scheduler"]["last_epoch"] == 1 and loaded["history"] == state["history"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left


def test_rng_states_restore_exactly():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.normal(), torch.randn(2)  # move all generators off their seeds
    saved = ckpt.capture_rng_state()
    first = (random.random(), np.random.normal(size=3), torch.randn(3))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    ckpt.restore_rng_state(saved)
    second = (random.random(), np.random.normal(size=3), torch.randn(3))
    assert first[0] == second[0]
    assert np.array_equal(first[1], second[1])
    assert torch.equal(first[2], second[2])


def test_rng_state_survives_a_weights_only_file(tmp_path):
    torch.manual_seed(5)
    ckpt.save_checkpoint({"rng": ckpt.capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert expected == (random.random(), np.random.rand(), torch.rand(1))


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated crash while writing")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"epoch": 1}, path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ckpt.save_checkpoint({"epoch": 2, "bad": _Unpicklable()}, path)
    assert ckpt.load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class Custom:
    pass


def test_unsafe_or_corrupt_files_are_refused_with_the_file_name(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as handle:
        torch.save({"object": Custom()}, handle, pickle_module=pickle)
    with pytest.raises(ckpt.CheckpointError, match="unsafe.pt"):
        ckpt.load_checkpoint(unsafe)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="corrupt.pt.*Delete it"):
        ckpt.load_checkpoint(corrupt)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_epoch_files_publish_and_prune(tmp_path):
    run_dir = tmp_path / "run"
    assert ckpt.latest_checkpoint(run_dir) is None
    for epoch in range(1, 6):
        path = ckpt.epoch_checkpoint_path(run_dir, epoch)
        ckpt.save_checkpoint({"epoch": epoch}, path)
        ckpt.publish_as_last(path, run_dir)
        ckpt.prune_epoch_checkpoints(run_dir, keep=2)
    names = sorted(p.name for p in ckpt.checkpoint_dir(run_dir).iterdir())
    assert names == ["epoch_004.pt", "epoch_005.pt", "last.pt"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir)) == {"epoch": 5}
    ckpt.prune_epoch_checkpoints(run_dir, keep=None)  # None keeps everything
    assert len(list(ckpt.checkpoint_dir(run_dir).glob("epoch_*.pt"))) == 2
