"""``ccdn evaluate``: a trained run on a prepared test split, scored as the paper scores it.

Why these steps: NMEs are only comparable with the paper's when computed in original image pixels
with the paper's normaliser for that dataset (300W inter-pupil and inter-ocular, COFW-68
inter-pupil, AFLW face size, WFLW inter-ocular; ``ccdn.data.schemes.DATASETS``). So predictions,
made on the model crop, go back to original pixels through each item's ``crop_to_original`` map; every
test subset gets NME, FR@0.1 and AUC@0.1 per normaliser (percent, Contract 6); the per-image
errors are kept for CED curves. The normalisers follow the *test* dataset, so a 300W model scored
on COFW-68 (same 68-point scheme) is reported as Table 3 reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from ccdn.checkpoint import final_weights_hint, load_checkpoint
from ccdn.config import ConfigError, default_run_name, load_config
from ccdn.io import write_text

THRESHOLD = 0.1
NUM_ACTIVATION_MAPS = 4


class EvaluationError(ConfigError):
    """The run directory or the test data cannot be evaluated (message says why and what to do)."""


# ------------------------------------------------------------------------------------ metrics
def dataset_norms(dataset: str, scheme: str) -> tuple[str, ...]:
    """The normalisers the paper reports for ``dataset``; other sets (custom) get their scheme's (SCHEME_NORMS)."""
    from ccdn.data.schemes import DATASETS, SCHEME_NORMS

    if dataset in DATASETS:
        return tuple(DATASETS[dataset].norms)
    return SCHEME_NORMS.get(str(scheme), ("inter_ocular",))


def per_image_errors(pred: np.ndarray, gt: np.ndarray, norms: tuple[str, ...], *, scheme: str,
                     boxes: np.ndarray) -> dict[str, np.ndarray]:
    """``{norm: (N,) NME fractions}`` for predictions and ground truth in original pixels."""
    from ccdn.metrics import nme

    return {norm: nme(pred, gt, norm, scheme=scheme, boxes=boxes) for norm in norms}


def summarise(errors: Mapping[str, np.ndarray], subsets: Mapping[str, np.ndarray],
              threshold: float = THRESHOLD) -> dict[str, Any]:
    """Contract 6 ``subsets`` block: per subset ``n`` and NME / FR / AUC per normaliser, in percent."""
    from ccdn.metrics import auc, failure_rate

    key = f"{threshold:g}"
    result: dict[str, Any] = {}
    for name, indices in subsets.items():
        indices = np.asarray(indices, dtype=np.int64)
        entry: dict[str, Any] = {"n": int(indices.size), "nme": {}, f"fr@{key}": {}, f"auc@{key}": {}}
        if indices.size:
            for norm, values in errors.items():
                chosen = values[indices]
                entry["nme"][norm] = float(100.0 * chosen.mean())
                entry[f"fr@{key}"][norm] = float(100.0 * failure_rate(chosen, threshold))
                entry[f"auc@{key}"][norm] = float(100.0 * auc(chosen, threshold))
        result[name] = entry
    return result


# -------------------------------------------------------------------------------- prediction
def load_trained_model(run_dir: Path, num_landmarks: int, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The run's config and final weights (``model.pt``, ``weights_only``) as an eval-mode model."""
    from ccdn.models import create_model

    config_path, weights = run_dir / "config.yaml", run_dir / "model.pt"
    if not config_path.is_file():
        raise EvaluationError(f"{run_dir} has no config.yaml: it is not a `ccdn train` run directory")
    if not weights.is_file():
        raise EvaluationError(f"{weights} does not exist: training has not finished; run "
                              f"`ccdn train --run-dir {run_dir}` to resume it first")
    config = load_config(config_path)
    model = create_model(config["model"]["name"], num_landmarks, **config["model"]["options"])
    state = load_checkpoint(weights, map_location="cpu", hint=final_weights_hint(run_dir))  # truncated: one line
    poisoned = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if poisoned:  # never written by this version's training (its NaN guard); an old or edited file
        raise EvaluationError(f"{weights} holds non-finite weights ({len(poisoned)} tensors, e.g. "
                              f"{', '.join(poisoned[:3])}); it cannot be scored. Retrain, or restart the run from a "
                              "finite checkpoint: ccdn train --run-dir ... --restart-from CKPT optim.lr=...")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise EvaluationError(f"{weights} does not fit a {num_landmarks}-point {config['model']['name']} model: it "
                              f"was trained on another landmark scheme ({str(exc).splitlines()[0]})") from exc
    return model.to(device).eval(), config


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, *, device: torch.device, mirror: np.ndarray | None = None,
            batch_size: int = 32, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop-normalised predictions ``(N, L, 2)``, original-pixel predictions and the dataset indices.

    With ``mirror`` (flip test) the prediction on the mirrored crop is mapped back (``x → 1 − x``, points
    permuted with the scheme's involutive mirror) and averaged with the plain one.
    """
    from tqdm import tqdm

    from ccdn.data.crop import to_original

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    crops, originals, indices = [], [], []
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=None, leave=False):
        images = batch["image"].to(device)
        pred = model(images)["landmarks"].float()
        if mirror is not None:
            flipped = model(images.flip(-1))["landmarks"].float()[:, torch.as_tensor(mirror, device=device)]
            flipped[..., 0] = 1.0 - flipped[..., 0]
            pred = 0.5 * (pred + flipped)
        pred = pred.cpu().double()
        crops.append(pred.numpy())
        originals.append(to_original(pred, batch["crop_to_original"].double()).numpy())
        indices.append(batch["index"].numpy())
    return np.concatenate(crops), np.concatenate(originals), np.concatenate(indices)


# ---------------------------------------------------------------------------- activation maps
def activation_map_indices(n: int, count: int = NUM_ACTIVATION_MAPS) -> np.ndarray:
    """Evenly spaced test faces: the same faces for every run on one test set (Fig. 8 compares runs)."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


def save_activation_maps(model: torch.nn.Module, dataset: Any, positions: np.ndarray, out: Path, *,
                         device: torch.device, title: str) -> None:
    """``activation_maps.npz`` (raw maps, crops, predictions) and ``activation_maps.png`` (overlays)."""
    from ccdn.models.cam import face_activation_map

    items = [dataset[int(p)] for p in positions]
    images = torch.stack([item["image"] for item in items]).to(device)
    size = images.shape[-1]
    maps = face_activation_map(model, images, size=size).float().cpu().numpy()
    with torch.no_grad():
        pred = model(images)["landmarks"].float().cpu().numpy()
    crops = (images.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    _save_npz(out / "activation_maps.npz", maps=maps.astype(np.float32), images=crops,
              indices=np.array([item["index"] for item in items]), pred=pred.astype(np.float32),
              landmarks=np.stack([item["landmarks"].numpy() for item in items]))
    _render_maps(crops, maps, pred, out / "activation_maps.png", title)


def _render_maps(crops: np.ndarray, maps: np.ndarray, pred: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(crops)
    fig, axes = plt.subplots(1, count, figsize=(2.6 * count, 3.0), squeeze=False)
    size = crops.shape[1]
    for ax, crop, face_map, points in zip(axes[0], crops, maps, pred):
        ax.imshow(crop)
        ax.imshow(face_map, cmap="jet", alpha=0.45, extent=(0, size, size, 0))
        ax.scatter(points[:, 0] * size - 0.5, points[:, 1] * size - 0.5, s=3, c="white")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------- driver
def evaluate(run_dir: Path | str, data: Path | str, *, split: str = "test", flip: bool = False,
             out: Path | str | None = None, device: str = "auto", batch_size: int = 32,
             activation_maps: int = NUM_ACTIVATION_MAPS, track: bool = True) -> dict[str, Any]:
    """Score ``run_dir``'s ``model.pt`` on ``data/<split>.npz``; write and return ``metrics.json``."""
    from ccdn.data import LandmarkDataset, load_split
    from ccdn.data.schemes import get_scheme
    from ccdn.distributed import dataloader_workers, select_device

    started = time.perf_counter()
    run_dir, data = Path(run_dir), Path(data)
    test = load_split(data, split)
    dataset_name = str(test.meta.get("dataset", data.name))
    scheme = get_scheme(test.scheme)
    torch_device = select_device(device)
    model, config = load_trained_model(run_dir, scheme.num_points, torch_device)
    out = Path(out) if out is not None else run_dir / "eval" / (dataset_name + ("-flip" if flip else ""))
    out.mkdir(parents=True, exist_ok=True)

    input_size = int(config["model"]["options"].get("input_size", 128))
    dataset = LandmarkDataset(test, input_size, None)
    workers = min(4, dataloader_workers("auto"))
    crops, pred, indices = predict(model, dataset, device=torch_device, batch_size=batch_size, num_workers=workers,
                                   mirror=np.asarray(scheme.mirror) if flip else None)
    gt = test.original_landmarks[indices].astype(np.float64)
    norms = dataset_norms(dataset_name, test.scheme)
    errors = per_image_errors(pred, gt, norms, scheme=test.scheme, boxes=test.boxes[indices])
    subsets = {name: test.subset(name) for name in _subset_order(test, dataset_name, split)}
    position = {int(index): pos for pos, index in enumerate(indices)}
    subsets = {name: np.array([position[int(i)] for i in idx], dtype=np.int64) for name, idx in subsets.items()}

    metrics = {
        "run": default_run_name(config),
        "model": config["model"]["name"],
        "train_dataset": config["data"]["dataset"],
        "dataset": dataset_name,
        "split": split,
        "seed": config["seed"],
        "synthetic": bool(test.synthetic),
        "partial": test.meta.get("partial"),
        "custom": bool(test.meta.get("custom", False)),
        "source": test.meta.get("source"),
        "flip_test": bool(flip),
        "variant": {"num_excitations": config["model"]["options"].get("num_excitations"),
                    "gammas": list(config["loss"]["gammas"])},
        "normalisers": list(norms),
        "threshold": THRESHOLD,
        "n_images": int(len(indices)),
        "subsets": summarise(errors, subsets),
        # wall-clock of loading, prediction and scoring (not the activation maps); read by the compute notes
        "timing": {"seconds": round(time.perf_counter() - started, 3), "device": torch_device.type},
    }
    _save_npz(out / "predictions.npz", pred=pred.astype(np.float32), gt=gt.astype(np.float32),
              pred_crop=crops.astype(np.float32), face_ids=test.face_ids[indices].astype(str),
              subset_names=np.array(list(subsets), dtype=str),
              subset_masks=_masks(subsets, len(indices)),
              **{f"err_{norm}": values for norm, values in errors.items()})
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if activation_maps > 0 and hasattr(model, "head"):
        marks = " — synthetic data, not a reproduction" if test.synthetic else ""
        title = f"{metrics['run']} on {dataset_name}/{split}: face activation maps{marks}"
        save_activation_maps(model, dataset, activation_map_indices(len(dataset), activation_maps), out,
                             device=torch_device, title=title)
    if track and config["tracking"]["enabled"] and not config["tracking"]["defer"]:  # deferred: `ccdn track`
        _attach_to_training_run(run_dir, config, metrics, out)
    return metrics


def _subset_order(test: Any, dataset_name: str, split: str) -> list[str]:
    """The dataset table's subset order (``full`` first), then any other subset the cache holds."""
    from ccdn.data.schemes import DATASETS

    present = [str(s) for s in test.subset_names]
    known = list(DATASETS[dataset_name].subsets.get(split, ())) if dataset_name in DATASETS else []
    return [s for s in known if s in present] + [s for s in present if s not in known]


def _masks(subsets: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    masks = np.zeros((len(subsets), n), dtype=bool)
    for row, idx in enumerate(subsets.values()):
        masks[row, idx] = True
    return masks


def _save_npz(path: Path, **arrays: Any) -> None:
    """Uncompressed ``.npz`` written under a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _attach_to_training_run(run_dir: Path, config: Mapping[str, Any], metrics: Mapping[str, Any], out: Path) -> None:
    """Evaluation metrics and files go into the MLflow run that trained the model (never fatal)."""
    from ccdn import tracking

    with warnings.catch_warnings():
        warnings.simplefilter("default", tracking.TrackingWarning)
        tracker = tracking.tracker_for_run_dir(
            run_dir, experiment=config["tracking"]["experiment"] or tracking.experiment_name(config["data"]["dataset"]),
            run_name=default_run_name(config))
        if not tracker.active:
            return
        prefix = tracking.eval_prefix(metrics)
        tracker.log_metrics(tracking.eval_metrics(metrics, THRESHOLD, prefix), step=0)
        for name in tracking.EVAL_ARTIFACTS:
            tracker.log_artifact(out / name, prefix)


# ---------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score a trained run on a prepared test split (metrics.json)")
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished `ccdn train` run directory")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory (data/prepared/<dataset>)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--flip", action="store_true", help="flip test: average with the mirrored crop's prediction")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: RUN_DIR/eval/<dataset>)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--activation-maps", type=int, default=NUM_ACTIVATION_MAPS,
                        help="face activation maps to render (0: none)")
    parser.add_argument("--no-tracking", action="store_true", help="do not attach results to the MLflow run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = evaluate(args.run_dir, args.data, split=args.split, flip=args.flip, out=args.out, device=args.device,
                       batch_size=args.batch_size, activation_maps=args.activation_maps, track=not args.no_tracking)
    for subset, entry in metrics["subsets"].items():
        nmes = ", ".join(f"{norm} {value:.3f}%" for norm, value in entry["nme"].items())
        print(f"{metrics['dataset']}/{subset} (n={entry['n']}): NME {nmes}", file=sys.stderr)
    return 0
