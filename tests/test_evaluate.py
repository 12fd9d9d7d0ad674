"""``ccdn evaluate``: NMEs reproduce hand computations from known predictions, in original pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ccdn.evaluate import EvaluationError, evaluate, per_image_errors, summarise

from constant_model import NAME as FIXED_POINT, fixed_point_run


def _constant_run(tmp_path, data_root, x, y):
    """A run directory as `ccdn train` leaves it, holding the fixed-point model (tests/constant_model.py)."""
    return fixed_point_run(tmp_path / f"run-{x}-{y}", data_root, "300w", x, y)


def _hand_nme(data_root, split, u):
    """Per-image NMEs of the constant crop position ``u``, computed directly from the cache arrays."""
    with np.load(data_root / f"{split}.npz") as cache:
        meta = json.loads(str(cache["meta"]))
        size, margin = meta["settings"]["cache_size"], meta["settings"]["cache_margin"]
        # crop coordinate u -> cache pixel (pixel centres at integers) -> original pixel
        cache_point = size / 2 + (np.asarray(u) - 0.5) * (size / margin) - 0.5
        pred = cache["to_original"][:, :, :2] @ cache_point + cache["to_original"][:, :, 2]  # (N, 2)
        gt = cache["original_landmarks"].astype(np.float64)
        names = [str(s) for s in cache["subset_names"]]
        masks = cache["subset_masks"]
    mean_error = np.linalg.norm(gt - pred[:, None, :], axis=-1).mean(axis=1)
    inter_ocular = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    inter_pupil = np.linalg.norm(gt[:, 36:42].mean(axis=1) - gt[:, 42:48].mean(axis=1), axis=-1)
    errors = {"inter_ocular": mean_error / inter_ocular, "inter_pupil": mean_error / inter_pupil}
    return errors, dict(zip(names, masks))


def test_summary_of_known_errors():
    errors = {"inter_ocular": np.array([0.05, 0.15, 0.02])}
    summary = summarise(errors, {"full": np.array([0, 1, 2]), "hard": np.array([1])})
    full = summary["full"]
    assert full["n"] == 3
    assert full["nme"]["inter_ocular"] == pytest.approx(100 * 0.22 / 3)
    assert full["fr@0.1"]["inter_ocular"] == pytest.approx(100 / 3)
    assert full["auc@0.1"]["inter_ocular"] == pytest.approx(100 * (0.5 + 0.0 + 0.8) / 3)
    assert summary["hard"]["nme"]["inter_ocular"] == pytest.approx(15.0)


def test_per_image_errors_by_hand():
    gt = np.zeros((1, 68, 2))
    gt[0, 36:42] = [10.0, 50.0]  # image-left eye (all six points)
    gt[0, 42:48] = [90.0, 50.0]
    gt[0, 36], gt[0, 45] = [0.0, 50.0], [100.0, 50.0]  # outer corners 100 px apart
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    errors = per_image_errors(pred, gt, ("inter_ocular", "inter_pupil"), scheme="68", boxes=np.zeros((1, 4)))
    pupil_distance = np.linalg.norm(gt[0, 36:42].mean(0) - gt[0, 42:48].mean(0))
    assert errors["inter_ocular"][0] == pytest.approx(0.05)
    assert errors["inter_pupil"][0] == pytest.approx(5.0 / pupil_distance)


@pytest.mark.parametrize("flip", [False, True])
def test_evaluation_reproduces_hand_computed_nmes(tiny_300w, tmp_path, flip):
    run_dir = _constant_run(tmp_path, tiny_300w, x=0.3, y=0.6)
    out = tmp_path / "eval"
    metrics = evaluate(run_dir, tiny_300w, flip=flip, out=out, activation_maps=2 if flip else 0)
    # The flip test averages (0.3, 0.6) with the mirrored crop's (1 - 0.3, 0.6): the crop centre column.
    errors, masks = _hand_nme(tiny_300w, "test", (0.5, 0.6) if flip else (0.3, 0.6))

    assert (metrics["dataset"], metrics["train_dataset"], metrics["split"]) == ("300w", "300w", "test")
    assert metrics["flip_test"] is flip and metrics["synthetic"] is True and metrics["seed"] == 0
    assert metrics["model"] == FIXED_POINT and metrics["variant"]["gammas"] == [0.025, 0.01, 0.05]
    assert list(metrics["subsets"]) == ["full", "common", "challenging"]
    for subset, mask in masks.items():
        entry = metrics["subsets"][subset]
        assert entry["n"] == int(mask.sum())
        for norm in ("inter_pupil", "inter_ocular"):
            chosen = errors[norm][mask]
            assert entry["nme"][norm] == pytest.approx(100 * chosen.mean(), rel=1e-5)
            assert entry["fr@0.1"][norm] == pytest.approx(100 * np.mean(chosen > 0.1))
            assert entry["auc@0.1"][norm] == pytest.approx(100 * np.mean(np.clip(1 - chosen / 0.1, 0, None)), rel=1e-5)

    assert json.loads((out / "metrics.json").read_text()) == metrics
    with np.load(out / "predictions.npz") as predictions:
        assert predictions["pred"].shape == predictions["gt"].shape == (24, 68, 2)
        with np.load(tiny_300w / "test.npz") as cache:
            assert np.array_equal(predictions["gt"], cache["original_landmarks"])
            assert np.array_equal(predictions["face_ids"], cache["face_ids"])
        np.testing.assert_allclose(predictions["err_inter_ocular"], errors["inter_ocular"], rtol=1e-5)
        np.testing.assert_allclose(predictions["err_inter_pupil"], errors["inter_pupil"], rtol=1e-5)
    if flip:
        with np.load(out / "activation_maps.npz") as maps:
            assert maps["maps"].shape == (2, 32, 32) and np.isfinite(maps["maps"]).all()
            assert maps["images"].shape == (2, 32, 32, 3)
        assert (out / "activation_maps.png").stat().st_size > 1000


def test_a_300w_model_is_scored_on_cofw68_with_its_normaliser(tiny_300w, tiny_cofw68, tmp_path):
    run_dir = _constant_run(tmp_path, tiny_300w, x=0.5, y=0.5)
    metrics = evaluate(run_dir, tiny_cofw68, activation_maps=0)
    assert (metrics["train_dataset"], metrics["dataset"]) == ("300w", "cofw68")
    assert metrics["normalisers"] == ["inter_pupil"]
    assert list(metrics["subsets"]) == ["full"]
    errors, _ = _hand_nme(tiny_cofw68, "test", (0.5, 0.5))
    assert metrics["subsets"]["full"]["nme"] == {"inter_pupil": pytest.approx(100 * errors["inter_pupil"].mean(),
                                                                             rel=1e-5)}
    assert (run_dir / "eval" / "cofw68" / "metrics.json").is_file()  # default output directory
    assert metrics["timing"]["device"] == "cpu" and metrics["timing"]["seconds"] > 0  # read by the compute notes


def test_unfinished_run_is_a_clear_error(tiny_300w, tmp_path):
    run_dir = _constant_run(tmp_path, tiny_300w, x=0.5, y=0.5)
    (run_dir / "model.pt").unlink()
    with pytest.raises(EvaluationError, match="model.pt does not exist.*ccdn train --run-dir"):
        evaluate(run_dir, tiny_300w)


def test_trained_model_scores_like_its_last_validation(trained_run):
    """Evaluation of a real trained run agrees with the validation NME training recorded."""
    metrics = evaluate(trained_run["run_dir"], trained_run["data"], out=trained_run["run_dir"] / "eval-check",
                       activation_maps=0, track=False)
    last = trained_run["history"][-1]
    assert metrics["subsets"]["full"]["nme"][last["val_norm"]] == pytest.approx(last["val_nme"], rel=1e-6)


def test_cli_writes_metrics_and_reports_bad_runs_plainly(tiny_300w, tmp_path, capsys):
    from ccdn.cli import main

    run_dir = _constant_run(tmp_path, tiny_300w, x=0.5, y=0.5)
    out = tmp_path / "cli-eval"
    assert main(["evaluate", "--run-dir", str(run_dir), "--data", str(tiny_300w), "--out", str(out),
                 "--activation-maps", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["subsets"]["full"]["n"] == 24
    assert main(["evaluate", "--run-dir", str(tmp_path / "nothing"), "--data", str(tiny_300w)]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


def test_a_model_is_refused_on_another_landmark_scheme(tiny_300w, tmp_path):
    from ccdn.data.prepare import prepare_dataset
    from ccdn.data.synth import synthesize

    synthesize("aflw", tmp_path / "raw", seed=0, n_train=1, n_test=2)
    prepare_dataset("aflw", tmp_path / "raw", tmp_path / "aflw", {"cache_size": 32})
    run_dir = _constant_run(tmp_path, tiny_300w, x=0.5, y=0.5)  # a 68-point model
    with pytest.raises(EvaluationError, match="does not fit a 19-point test/fixed-point model"):
        evaluate(run_dir, tmp_path / "aflw")
