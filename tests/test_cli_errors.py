"""Every user-facing failure of the ``ccdn`` command: one line naming the file or key, exit 2, no traceback.

Table-driven: each case builds its bad input in a temporary folder and gives the command line and the
words the message must hold. Bugs (any other exception) keep their traceback: the last test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from ccdn.cli import main
from ccdn.config import save_config

from conftest import tiny_config


def _config_file(tmp: Path, data: Path, *overrides: str) -> Path:
    path = tmp / "tiny.yaml"
    save_config(tiny_config(data, "model.name=test/tiny", "optim.epochs=1", *overrides), path)
    return path


def _truncated_torch_file(path: Path, obj: object) -> Path:
    """A real ``torch.save`` file cut in half, as a kill during a non-atomic copy would leave it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _run_dir(tmp: Path, data: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    save_config(tiny_config(data, "model.name=test/tiny", "optim.epochs=1"), run / "config.yaml")
    return run


def unknown_model(tmp, data):
    return ["train", "--config", str(_config_file(tmp, data)), "--run-dir", str(tmp / "r"), "model.name=nope"], \
        ["unknown model 'nope'", "test/tiny"]


def unknown_key(tmp, data):
    return ["train", "--config", str(_config_file(tmp, data)), "optim.learning_rate=1"], \
        ["unknown config key 'optim.learning_rate'"]


def missing_config_file(tmp, data):
    return ["train", "--config", str(tmp / "missing.yaml")], [f"{tmp / 'missing.yaml'} does not exist"]


def missing_prepared_data(tmp, data):
    return ["train", "--config", str(_config_file(tmp, tmp / "nodata")), "--run-dir", str(tmp / "r")], \
        [str(tmp / "nodata")]


def truncated_last_checkpoint_on_resume(tmp, data):
    run = _run_dir(tmp, data)
    _truncated_torch_file(run / "checkpoints" / "last.pt", {"model": {"w": torch.zeros(1000)}})
    return ["train", "--run-dir", str(run), "--no-progress"], \
        [f"checkpoint {run / 'checkpoints' / 'last.pt'} cannot be read", "epoch_XXX.pt"]


def truncated_model_in_evaluate(tmp, data):
    run = _run_dir(tmp, data)
    _truncated_torch_file(run / "model.pt", {"w": torch.zeros(1000)})
    return ["evaluate", "--run-dir", str(run), "--data", str(data), "--no-tracking", "--out", str(tmp / "e")], \
        [f"checkpoint {run / 'model.pt'} cannot be read", f"rerun `ccdn train --run-dir {run}`"]


def evaluate_a_model_with_non_finite_weights(tmp, data):
    from conftest import TinyRegressor

    run = _run_dir(tmp, data)
    state = TinyRegressor(68).state_dict()
    state["head.bias"][3] = float("nan")
    torch.save(state, run / "model.pt")
    return ["evaluate", "--run-dir", str(run), "--data", str(data), "--no-tracking", "--out", str(tmp / "e")], \
        [f"{run / 'model.pt'} holds non-finite weights (1 tensors, e.g. head.bias)"]


def evaluate_before_training_ends(tmp, data):
    run = _run_dir(tmp, data)
    return ["evaluate", "--run-dir", str(run), "--data", str(data), "--no-tracking"], \
        [f"{run / 'model.pt'} does not exist"]


def evaluate_on_missing_data(tmp, data):
    run = _run_dir(tmp, data)
    torch.save({}, run / "model.pt")
    return ["evaluate", "--run-dir", str(run), "--data", str(tmp / "nodata"), "--no-tracking"], \
        [str(tmp / "nodata")]


def restart_from_a_missing_checkpoint(tmp, data):
    run = _run_dir(tmp, data)
    return ["train", "--run-dir", str(run), "--restart-from", str(tmp / "gone.pt"), "optim.lr=1e-4"], \
        [f"checkpoint {tmp / 'gone.pt'} does not exist"]


def restart_without_a_run(tmp, data):
    return ["train", "--run-dir", str(tmp / "none"), "--restart-from", str(tmp / "x.pt"), "optim.lr=1e-4"], \
        ["--restart-from needs --run-dir of an existing run", str(tmp / "none" / "config.yaml")]


def prepare_missing_raw_folder(tmp, data):
    return ["prepare", "300w", "--raw", str(tmp / "raw"), "--out", str(tmp / "out")], [str(tmp / "raw")]


def report_metrics_of_a_broken_file(tmp, data):
    bad = tmp / "metrics.json"
    bad.write_text('{"run": ')
    return ["report", "metrics", str(bad), "--out", str(tmp / "rows.md")], [str(bad)]


def predict_on_a_file_that_is_not_an_image(tmp, data):
    run = _run_dir(tmp, data)
    torch.save({}, run / "model.pt")
    text = tmp / "face.jpg"
    text.write_text("not an image")
    return ["predict", "--run-dir", str(run), str(text), "--box", "0,0,10,10", "--out", str(tmp / "p")], [str(text)]


def _cache_copy(tmp: Path, data: Path, split: str, **meta_changes) -> Path:
    """A copy of the prepared cache whose ``split`` meta has ``meta_changes``."""
    import json
    import shutil

    import numpy as np

    from ccdn.io import write_npz

    root = tmp / "prepared"
    shutil.copytree(data, root)
    with np.load(root / f"{split}.npz") as arrays:
        content = {key: arrays[key] for key in arrays.files}
    content["meta"] = np.array(json.dumps({**json.loads(str(content["meta"])), **meta_changes}))
    write_npz(root / f"{split}.npz", content)
    return root


def cache_of_300w_trained_as_wflw(tmp, data):
    return ["train", "--config", str(_config_file(tmp, data, "data.dataset=wflw")), "--run-dir", str(tmp / "r")], \
        [f"data.dataset is 'wflw' but {data / 'train.npz'} holds '300w' (68-point, synthetic)", "data.dataset=300w"]


def unknown_dataset_name(tmp, data):
    return ["train", "--config", str(_config_file(tmp, data, "data.dataset=foo")), "--run-dir", str(tmp / "r")], \
        ["data.dataset is 'foo'"]


def validation_split_of_another_kind(tmp, data):
    root = _cache_copy(tmp, data, "test", synthetic=False)
    return ["train", "--config", str(_config_file(tmp, root)), "--run-dir", str(tmp / "r")], \
        [f"{root / 'test.npz'} holds '300w' (68-point) but {root / 'train.npz'} holds '300w' (68-point, synthetic)"]


def benchmark_cache_with_a_foreign_scheme(tmp, data):
    root = _cache_copy(tmp, data, "train", scheme="98")
    return ["train", "--config", str(_config_file(tmp, root)), "--run-dir", str(tmp / "r")], \
        [f"{root / 'train.npz'} says it is 300w but holds 98-point meta and 68-point landmarks"]


def resume_a_checkpoint_of_another_landmark_count(tmp, data):
    from ccdn import checkpoint as ckpt
    from ccdn.train import TrainingInterrupted, train

    config_file = _config_file(tmp, data)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(data, "model.name=test/tiny", "optim.epochs=1"), tmp / "r", progress=False,
              stop_after_steps=1)
    last = tmp / "r" / "checkpoints" / "last.pt"
    state = ckpt.load_checkpoint(last)
    state["model"]["head.weight"] = state["model"]["head.weight"][:10]
    torch.save(state, last)
    return ["train", "--config", str(config_file), "--run-dir", str(tmp / "r"), "--no-progress"], \
        [f"{last} does not fit this run's test/tiny model for 68 landmarks", "use a new --run-dir"]


def config_file_that_is_not_yaml(tmp, data):
    bad = tmp / "bad.yaml"
    bad.write_text("optim: {lr: [\n")
    return ["train", "--config", str(bad)], [f"config file {bad} is not valid YAML (line 2, column 1: "]


def grid_config_that_is_not_yaml(tmp, data):
    bad = tmp / "grid.yaml"
    bad.write_text("runs: [\n  {a: 1\n")
    return ["report", "summary", "--config", str(bad), "--out", str(tmp / "s.json")], [str(bad), "not valid YAML"]


def fetch_with_a_broken_lock_file(tmp, data):
    lock = tmp / "lock.yaml"
    lock.write_text("files: {a: [\n")
    return ["fetch", "cofw68", "--root", str(tmp / "raw"), "--lock", str(lock), "--no-progress"], \
        [f"lock file {lock} cannot be read (line 2, column 1: "]


CASES: list[Callable] = [
    config_file_that_is_not_yaml, grid_config_that_is_not_yaml, fetch_with_a_broken_lock_file,
    cache_of_300w_trained_as_wflw, unknown_dataset_name, validation_split_of_another_kind,
    benchmark_cache_with_a_foreign_scheme, resume_a_checkpoint_of_another_landmark_count,
    unknown_model, unknown_key, missing_config_file, missing_prepared_data, truncated_last_checkpoint_on_resume,
    truncated_model_in_evaluate, evaluate_a_model_with_non_finite_weights, evaluate_before_training_ends, evaluate_on_missing_data,
    restart_from_a_missing_checkpoint, restart_without_a_run, prepare_missing_raw_folder,
    report_metrics_of_a_broken_file, predict_on_a_file_that_is_not_an_image,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_a_user_error_is_one_line_and_exit_2(case, tiny_300w, tmp_path, capsys, single_thread):
    argv, expected = case(tmp_path, tiny_300w)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    line = err.rstrip("\n").splitlines()[-1]
    assert line.startswith(f"ccdn {argv[0]}: error: "), err  # the whole message on this one line
    for words in expected:
        assert words in line, (words, line)


def test_a_bug_keeps_its_traceback(monkeypatch):
    import ccdn.grid.cli as grid_cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(grid_cli, "run", broken)
    monkeypatch.setattr(grid_cli, "add_parser", lambda sub: sub.add_parser("grid").set_defaults(func=broken))
    with pytest.raises(ZeroDivisionError):
        main(["grid"])
