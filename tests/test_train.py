"""``ccdn train``: learning, determinism, exact resume, NaN handling, run directories, the CLI."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from ccdn import checkpoint as ckpt
from ccdn.config import ConfigError, save_config
from ccdn.train import (
    EpochShardSampler,
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    configure_determinism,
    train,
)

from conftest import tiny_config

# Bit-exact comparison: on CPU a resumed run must end with the very same weights.
TIMING_KEYS = {"images_per_s", "epoch_seconds"}


def _weights(run_dir, name="model.pt"):
    return torch.load(run_dir / name, map_location="cpu", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in history]


# Untrained, the tiny ccdn predicts near the crop corner (~98% inter-pupil NME on the synthetic set);
# 8 epochs on 64 faces bring it to ~27-30%. A factor of 3 is what a working training loop must reach.
LEARNING_FACTOR = 3.0


def test_training_lowers_validation_nme_by_a_large_factor(tiny_300w, tmp_path, single_thread):
    # The head starts at the crop centre (not the mean shape) so the untrained error is far from the trained one.
    config = tiny_config(tiny_300w, "optim.epochs=8", "optim.milestones=[6]", "optim.lr=2e-3", "optim.batch_size=4",
                         "model.head_init=centre")
    result = train(config, tmp_path / "run", progress=False)
    history = result.history
    assert [record["epoch"] for record in history] == list(range(9))
    first, last = history[0]["val_nme"], history[-1]["val_nme"]
    print(f"validation NME (inter-pupil, %): untrained {first:.1f} -> after 8 epochs {last:.1f}")
    assert last < first / LEARNING_FACTOR, (first, last)
    assert history[-1]["lr"] == pytest.approx(1e-3)  # halved at epoch 6 (the staircase schedule)
    run_dir = tmp_path / "run"
    for name in ("config.yaml", "history.json", "model.pt", "DONE", "checkpoints/last.pt", "checkpoints/epoch_008.pt"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "checkpoints").glob("epoch_*.pt"))) == config["train"]["keep_epoch_checkpoints"]
    assert json.loads((run_dir / "history.json").read_text())[-1]["val_nme"] == last
    _assert_same_weights(_weights(run_dir), ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])


def test_interrupted_runs_resume_to_identical_weights(tiny_300w, tmp_path, single_thread, monkeypatch):
    config = tiny_config(tiny_300w, "model.name=ccdn", "train.max_steps_per_epoch=5")
    reference = train(config, tmp_path / "uninterrupted", progress=False)

    # Preempted after epoch 1, then requeued: `train` on the same directory resumes by itself.
    with pytest.raises(TrainingInterrupted):
        train(config, tmp_path / "resumed", progress=False, stop_after_epoch=1)
    assert not (tmp_path / "resumed" / "model.pt").exists()
    # Two independent fresh starts with one seed agree after epoch 1 ...
    _assert_same_weights(ckpt.load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_001.pt")["model"],
                         ckpt.load_checkpoint(tmp_path / "uninterrupted" / "checkpoints" / "epoch_001.pt")["model"])
    resumed = train(config, tmp_path / "resumed", progress=False)
    # ... and the resumed run ends exactly where the uninterrupted one does.
    _assert_same_weights(_weights(tmp_path / "resumed"), _weights(tmp_path / "uninterrupted"))
    assert _without_timing(resumed.history) == _without_timing(reference.history)

    # SIGUSR1 in the middle of epoch 2 (SLURM's warning before preemption): checkpoint, exit, resume.
    original_step, calls = Trainer._train_step, []

    def step_then_signal(self, batch):
        values = original_step(self, batch)
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGUSR1)
        return values

    monkeypatch.setattr(Trainer, "_train_step", step_then_signal)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, tmp_path / "signalled", progress=False)
    assert stopped.value.signum == signal.SIGUSR1
    state = ckpt.load_checkpoint(tmp_path / "signalled" / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 3)  # mid-epoch position
    monkeypatch.setattr(Trainer, "_train_step", original_step)
    train(config, tmp_path / "signalled", progress=False)
    _assert_same_weights(_weights(tmp_path / "signalled"), _weights(tmp_path / "uninterrupted"))

    # Another seed really gives other weights (the equalities above are not vacuous).
    other = train(tiny_config(tiny_300w, "model.name=ccdn", "train.max_steps_per_epoch=5", "seed=1",
                              "optim.epochs=1"), tmp_path / "seed1", progress=False)
    assert other.completed
    seed0_epoch1 = ckpt.load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_001.pt")["model"]
    assert not torch.equal(_weights(tmp_path / "seed1")["head.weight"], seed0_epoch1["head.weight"])


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_300w, tmp_path, single_thread):
    steps = 4
    config = tiny_config(tiny_300w, "model.name=test/tiny", f"train.max_steps_per_epoch={steps}",
                         f"model.options.nan_at_forward={steps + 2}")
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as err:
        train(config, run_dir, progress=False)
    message = str(err.value)
    assert "epoch 2, step 2 of 4 (global step 6)" in message
    assert "coord=nan" in message
    assert f"last good checkpoint is {run_dir / 'checkpoints' / 'last.pt'} (epoch 1, step 0)" in message
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, steps)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run_dir / "model.pt").exists() and not (run_dir / "DONE").exists()
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [0, 1]


def test_run_directory_guards_and_completion(tiny_300w, tmp_path, single_thread):
    config = tiny_config(tiny_300w, "model.name=test/tiny", "optim.epochs=1", "train.max_steps_per_epoch=2")
    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    done = json.loads((run_dir / "DONE").read_text())
    assert done["epochs"] == 1 and done["world_size"] == 1
    before = (run_dir / "model.pt").stat().st_mtime_ns
    again = train(config, run_dir, progress=False)  # a finished run is left alone
    assert again.completed and (run_dir / "model.pt").stat().st_mtime_ns == before
    other = tiny_config(tiny_300w, "model.name=test/tiny", "optim.epochs=1", "train.max_steps_per_epoch=2",
                        "optim.lr=0.5")
    with pytest.raises(ConfigError, match=r"different config \(optim\.lr: stored 0\.001, now 0\.5\)"):
        train(other, run_dir, progress=False)
    with pytest.raises(ConfigError, match="fewer than optim.batch_size"):
        train(tiny_config(tiny_300w, "model.name=test/tiny", "optim.batch_size=100000"), tmp_path / "big",
              progress=False)


def test_checkpoints_every_n_minutes_within_an_epoch(tiny_300w, tmp_path, single_thread, monkeypatch):
    saves, original = [], Trainer.save_checkpoint

    def recording(self, *, epoch_end):
        saves.append((self.epoch, self.step_in_epoch, epoch_end))
        return original(self, epoch_end=epoch_end)

    monkeypatch.setattr(Trainer, "save_checkpoint", recording)
    config = tiny_config(tiny_300w, "model.name=test/tiny", "optim.epochs=1", "train.max_steps_per_epoch=3",
                         "train.checkpoint_minutes=0")  # 0 minutes: after every step
    train(config, tmp_path / "run", progress=False)
    assert saves == [(0, 1, False), (0, 2, False), (1, 0, True)]


def test_cli_trains_and_resumes_from_the_stored_config(tiny_300w, tmp_path, single_thread, capsys):
    from ccdn.cli import main

    config_file = tmp_path / "tiny.yaml"
    save_config(tiny_config(tiny_300w, "model.name=test/tiny", "train.max_steps_per_epoch=2"), config_file)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "--no-progress",
                 "optim.epochs=1"]) == 0
    assert (run_dir / "DONE").is_file()
    assert main(["train", "--run-dir", str(run_dir), "--no-progress"]) == 0  # stored config, already done
    assert main(["train", "--config", str(config_file), "--run-dir", str(run_dir), "optim.nope=1"]) == 2
    assert "unknown config key 'optim.nope'" in capsys.readouterr().err


def test_determinism_flags_are_set_and_asserted():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        configure_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        configure_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = False


def test_shards_of_a_global_batch_match_the_single_process_batch():
    single = EpochShardSampler(20, global_batch=6, rank=0, world_size=1, seed=3)
    shards = [EpochShardSampler(20, global_batch=6, rank=r, world_size=2, seed=3) for r in range(2)]
    for sampler in (single, *shards):
        sampler.set_epoch(4)
    order = list(single)
    assert len(order) == 18 and len(set(order)) == 18  # 3 whole global batches, no repeats
    parts = [list(s) for s in shards]
    for batch in range(3):
        expected = set(order[6 * batch: 6 * batch + 6])
        assert set(parts[0][3 * batch: 3 * batch + 3]) | set(parts[1][3 * batch: 3 * batch + 3]) == expected
    single.set_epoch(5)
    assert list(single) != order  # a new order every epoch
    single.set_epoch(4, skip_batches=2)
    assert list(single) == order[12:]  # mid-epoch resume


def test_warmup_ramps_the_rate_per_step_then_leaves_the_staircase_alone(tiny_300w, tmp_path, single_thread,
                                                                        monkeypatch):
    from ccdn.training.warmup import warmup_factor

    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    config = tiny_config(tiny_300w, "model.name=baseline", "train.max_steps_per_epoch=4", "optim.epochs=4",
                         "optim.lr=1e-3", "optim.warmup_epochs=2", "optim.milestones=[3]", "optim.lr_gamma=0.1")
    seen, original_step = [], torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    result = train(config, tmp_path / "warm", progress=False)
    expected = [1e-3 * (s + 1) / 8 for s in range(8)] + [1e-3] * 4 + [1e-4] * 4
    assert seen == pytest.approx(expected)
    # history records the rate each epoch ended with: half-way through the warm-up after epoch 1
    assert [r["lr"] for r in result.history if r["epoch"] > 0] == pytest.approx([0.5e-3, 1e-3, 1e-3, 1e-4])


@pytest.mark.parametrize(("override", "needle"), [("optim.warmup_epochs=-1", "integer >= 0"),
                                                  ("optim.warmup_epochs=5", r"must end by the first milestone \(3\)")])
def test_bad_warmup_is_refused(tiny_300w, override, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_config(tiny_300w, "optim.milestones=[3]", override)
