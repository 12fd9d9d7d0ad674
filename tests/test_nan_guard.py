"""The NaN guard: non-finite weights or validation NME stop a run before anything is written, and the
documented recovery (``ccdn train --run-dir R --restart-from CKPT optim.lr=...``) is allowed and recorded."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ccdn import checkpoint as ckpt
from ccdn.cli import main
from ccdn.config import load_config, save_config
from ccdn.errors import NonFiniteLossError
from ccdn.train import Trainer, TrainingInterrupted, train
from ccdn.training import guard

from conftest import tiny_config

STEPS = 4


def _strict_json(path):
    """json.loads that refuses the bare NaN / Infinity Python's json writes by default."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def _poison_step(monkeypatch, at_step: int) -> None:
    """The optimiser's ``at_step``-th step turns one weight to Inf while the loss stays finite."""
    original = Trainer._build_optimizer

    def build(self):
        optimizer, calls = original(self), []

        def poison(optimizer, args, kwargs):  # noqa: ARG001
            calls.append(1)
            if len(calls) == at_step:
                with torch.no_grad():
                    weight = next(self.model.parameters())  # channels_last: index, no flat view
                    weight[(0,) * weight.dim()] = float("inf")

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(Trainer, "_build_optimizer", build)


def _config(data, *extra):
    return tiny_config(data, "model.name=test/tiny", f"train.max_steps_per_epoch={STEPS}", "optim.epochs=3", *extra)


def test_non_finite_weights_after_the_last_step_of_an_epoch_are_never_saved(tiny_300w, tmp_path, single_thread,
                                                                              monkeypatch, capsys):
    run_dir = tmp_path / "run"
    config = _config(tiny_300w)
    save_config(config, tmp_path / "tiny.yaml")
    _poison_step(monkeypatch, at_step=2 * STEPS)  # the last step of epoch 2: epoch_002.pt would be poison
    with pytest.raises(NonFiniteLossError) as err:
        train(config, run_dir, progress=False)
    message = str(err.value)
    last = run_dir / "checkpoints" / "last.pt"
    assert "weights became non-finite in the step at epoch 2, step 4 of 4 (global step 8)" in message
    assert f"last good checkpoint is {last} (epoch 1, step 0)" in message
    assert f"ccdn train --run-dir {run_dir} --restart-from {last} optim.lr=0.0001" in message
    assert not (run_dir / "checkpoints" / "epoch_002.pt").exists()
    for path in (run_dir / "checkpoints").glob("*.pt"):
        assert guard.nonfinite_in_state(ckpt.load_checkpoint(path)) == [], path
    assert [r["epoch"] for r in _strict_json(run_dir / "history.json")] == [0, 1]

    # The recovery the message names: allowed although the config changes, and recorded.
    monkeypatch.undo()
    assert main(["train", "--run-dir", str(run_dir), "--restart-from", str(last), "optim.lr=5e-4",
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert load_config(run_dir / "config.yaml")["optim"]["lr"] == pytest.approx(5e-4)
    history = _strict_json(run_dir / "history.json")
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    (record,) = history[1]["restarts"]
    assert record["changes"] == {"optim.lr": {"old": 1e-3, "new": 5e-4}}
    assert (record["from"], record["epoch"], record["global_step"]) == (str(last), 1, STEPS)
    assert history[2]["lr"] == pytest.approx(2.5e-4)  # the new rate, halved at milestone 1 as the schedule says
    assert ckpt.load_checkpoint(last)["restarts"] == [record]
    assert (run_dir / "DONE").is_file()


def test_a_restart_may_not_change_the_model_or_data(tiny_300w, tmp_path, single_thread, capsys):
    run_dir = tmp_path / "run"
    config = _config(tiny_300w, "optim.epochs=1")
    with pytest.raises(TrainingInterrupted):
        train(config, run_dir, progress=False, stop_after_steps=2)
    stored = (run_dir / "config.yaml").read_text()
    last = run_dir / "checkpoints" / "last.pt"
    code = main(["train", "--run-dir", str(run_dir), "--restart-from", str(last), "model.options.width=4",
                 "optim.batch_size=4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "model.options.width, optim.batch_size cannot change on a restart" in err
    assert (run_dir / "config.yaml").read_text() == stored  # refused before anything was replaced
    assert main(["train", "--run-dir", str(run_dir), "--restart-from", str(tmp_path / "missing.pt"),
                 "optim.lr=1e-4"]) == 2
    assert f"checkpoint {tmp_path / 'missing.pt'} does not exist" in capsys.readouterr().err


def test_a_non_finite_validation_nme_writes_no_checkpoint_and_no_bare_nan(tiny_300w, tmp_path, single_thread,
                                                                         monkeypatch):
    original, calls = Trainer.validate, []

    def nan_after_epoch_1(self):
        calls.append(1)
        return float("nan") if len(calls) == 2 else original(self)

    monkeypatch.setattr(Trainer, "validate", nan_after_epoch_1)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"validation NME after epoch 1 is nan .*No checkpoint was written"):
        train(_config(tiny_300w), run_dir, progress=False)
    assert not list(run_dir.glob("checkpoints/*.pt"))
    assert [r["epoch"] for r in _strict_json(run_dir / "history.json")] == [0]


def test_a_checkpoint_is_refused_when_a_non_finite_state_slips_past_the_step_check(tiny_300w, tmp_path,
                                                                                   single_thread, monkeypatch):
    monkeypatch.setattr(guard, "weights_are_finite", lambda model: True)  # the step check misses it
    monkeypatch.setattr(Trainer, "_checked_validation", lambda self, when: 50.0)
    _poison_step(monkeypatch, at_step=STEPS)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"refusing to write a checkpoint at epoch 1, step 0: non-finite "
                                                 r"model\.body\.0\.weight"):
        train(_config(tiny_300w), run_dir, progress=False)
    assert not (run_dir / "checkpoints" / "epoch_001.pt").exists()


def test_the_weight_check_sees_nan_and_inf_but_not_large_finite_weights():
    model = torch.nn.Linear(3, 2)
    assert guard.weights_are_finite(model)
    with torch.no_grad():
        model.weight.fill_(1e30)  # its 2-norm overflows float32; its values are finite
    assert guard.weights_are_finite(model)
    for bad in (float("nan"), float("-inf")):
        with torch.no_grad():
            model.bias[1] = bad
        assert not guard.weights_are_finite(model)
        assert guard.nonfinite_tensors(model.state_dict()) == ["bias"]
    state = {"model": model.state_dict(), "optimizer": {"state": {0: {"exp_avg": torch.tensor([math.inf])}}}}
    assert guard.nonfinite_in_state(state) == ["model.bias", "optimizer.state.0.exp_avg"]


def test_history_json_is_strict_json():
    text = guard.history_json([{"epoch": 1, "val_nme": float("nan"), "loss": [1.0, float("inf")]}])
    assert json.loads(text, parse_constant=lambda token: pytest.fail(token)) == [
        {"epoch": 1, "val_nme": None, "loss": [1.0, None]}]


def test_a_restart_continues_the_same_mlflow_run_and_tags_the_change(tiny_300w, tmp_path, single_thread,
                                                                      monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_dir = tmp_path / "run"
    config = _config(tiny_300w, "optim.epochs=1", "tracking.enabled=true")
    with pytest.raises(TrainingInterrupted):
        train(config, run_dir, progress=False, stop_after_steps=2)
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    restarted = load_config(run_dir / "config.yaml", ["optim.lr=2e-4"])
    train(restarted, run_dir, progress=False, restart_from=run_dir / "checkpoints" / "last.pt")
    assert json.loads((run_dir / "tracking.json").read_text())["run_id"] == run_id
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["restart_count"] == "1"
    (record,) = json.loads(run.data.tags["restarts"])
    assert record["changes"] == {"optim.lr": {"old": 1e-3, "new": 2e-4}} and record["global_step"] == 2
