"""Checkpoints that survive preemption: atomic writes, safe loading, and every RNG a run depends on.

Why: a requeued cluster job must continue exactly where it stopped. A checkpoint therefore holds
the model, optimiser, scheduler, the position (epoch, step within it) and the Python, NumPy and torch
(CPU and CUDA) generator states; it is written under a temporary name and renamed, so a job killed
mid-write leaves the previous checkpoint intact. Everything is stored as tensors, numbers, strings,
lists and dicts so that ``torch.load(weights_only=True)`` can read it (no arbitrary unpickling).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccdn.errors import CheckpointError
from ccdn.io import fsync_dir, save_torch

LAST_NAME = "last.pt"
EPOCH_PATTERN = re.compile(r"^epoch_(\d{3,})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def epoch_checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """``checkpoints/epoch_XXX.pt`` for a completed ``epoch`` (1-based count of finished epochs)."""
    return checkpoint_dir(run_dir) / f"epoch_{epoch:03d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """``checkpoints/last.pt`` when present (it is always the newest state), else ``None``."""
    path = checkpoint_dir(run_dir) / LAST_NAME
    return path if path.is_file() else None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a sibling temporary file, fsync, then ``os.replace`` over ``path``."""
    save_torch(path, state)


def publish_as_last(source: Path, run_dir: Path) -> Path:
    """Make ``source`` (an epoch checkpoint) the new ``last.pt`` atomically, by hard link when possible."""
    target = checkpoint_dir(run_dir) / LAST_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{LAST_NAME}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


RESUME_HINT = ("Delete it to restart from the previous epoch_XXX.pt (copy that to last.pt) or from scratch.")


def final_weights_hint(run_dir: Path) -> str:
    """What to do about a bad ``model.pt``: training rewrites it from ``checkpoints/last.pt``."""
    return (f"Delete it and {Path(run_dir) / 'DONE'}, then rerun `ccdn train --run-dir {run_dir}`: it writes "
            "model.pt again from checkpoints/last.pt.")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *, hint: str = RESUME_HINT) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; an unreadable file is a ``CheckpointError`` ending in ``hint``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        first_line = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first_line[:200]}); it is corrupt (e.g. "
            f"truncated) or not a ccdn checkpoint. {hint}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a ccdn checkpoint dict")
    return state


def prune_epoch_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` ``epoch_XXX.pt`` files (``None`` keeps all)."""
    if keep is None:
        return
    epochs = sorted(
        (int(m.group(1)), p) for p in checkpoint_dir(run_dir).glob("epoch_*.pt") if (m := EPOCH_PATTERN.match(p.name))
    )
    for _, path in epochs[: max(0, len(epochs) - keep)]:
        path.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when initialised) CUDA generator states as weights-only-safe values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored only onto as many devices as exist."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


