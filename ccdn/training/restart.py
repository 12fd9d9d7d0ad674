"""Restarting a run from one of its checkpoints with changed optimiser settings (the NaN recovery).

Why: when a run diverges, the fix is to go back to the last finite checkpoint and continue with a
lower learning rate. A plain resume refuses a changed config (it would silently mix recipes), so a
restart is explicit — ``ccdn train --run-dir R --restart-from CKPT optim.lr=...`` — and limited to
keys that change *how* the optimisation proceeds, never what is learnt from what: the model, the
data and its order, the objective and the augmentation stay fixed. Each restart is recorded in the
checkpoint, in ``history.json`` (on the last epoch record before it) and as MLflow tags.
"""

from __future__ import annotations

import datetime as _dt
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import torch

from ccdn import checkpoint as ckpt
from ccdn.config import flatten_config
from ccdn.errors import CheckpointError, ConfigError
from ccdn.training.guard import nonfinite_in_state

__all__ = ["RESTART_KEYS", "config_changes", "check_restart_changes", "load_restart_point", "apply_optim_settings",
           "restart_record", "with_restart", "describe"]

# Keys a restart may change (exact keys, or whole sections ending in a dot).
RESTART_KEYS = ("optim.lr", "optim.betas", "optim.weight_decay", "optim.milestones", "optim.lr_gamma",
                "optim.epochs", "train.", "tracking.")
# Within those sections, keys that fix which samples a step sees (the resumed position depends on them).
RESTART_FROZEN = ("train.max_steps_per_epoch", "train.limit_train_images")


def _restartable(key: str) -> bool:
    if key in RESTART_FROZEN:
        return False
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in RESTART_KEYS)


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"optim.lr": {"old": 30.0, "new": 0.001}, ...}`` for every leaf that differs."""
    before, after = flatten_config(old), flatten_config(new)
    return {key: {"old": before.get(key), "new": after.get(key)}
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)}


def check_restart_changes(changes: Mapping[str, Any], checkpoint: Path) -> None:
    """Refuse changes a restart cannot make (model, data, loss, augmentation, seed, batch size)."""
    refused = [key for key in changes if not _restartable(key)]
    if refused:
        raise ConfigError(
            f"--restart-from {checkpoint}: {', '.join(refused)} cannot change on a restart (only "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in RESTART_KEYS)} may, except "
            f"{', '.join(RESTART_FROZEN)}); train with another --run-dir for a different recipe")


def load_restart_point(path: Path, config: Mapping[str, Any],
                       previous_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint at ``path`` and the config changes a restart from it makes, both checked.

    The checkpoint must be finite; its own stored config (else the run's ``previous_config``) is
    what the changes are measured against. Called before anything in the run directory changes.
    """
    state = ckpt.load_checkpoint(path, map_location="cpu")
    if "model" not in state or "config_hash" not in state:
        raise CheckpointError(f"--restart-from {path}: not a ccdn training checkpoint (model.pt holds final "
                              "weights only); pass checkpoints/last.pt or checkpoints/epoch_XXX.pt")
    bad = nonfinite_in_state(state)
    if bad:
        raise CheckpointError(f"--restart-from {path}: the checkpoint holds non-finite tensors "
                              f"({', '.join(bad[:5])}); restart from an earlier epoch_XXX.pt")
    changes = config_changes(state.get("config") or previous_config, config)
    check_restart_changes(changes, path)
    return state, changes


def apply_optim_settings(optimizer: torch.optim.Optimizer, scheduler: Any, config: Mapping[str, Any]) -> None:
    """Make a loaded optimiser and MultiStepLR follow ``config["optim"]`` from the current epoch on.

    ``load_state_dict`` restores the old hyper-parameters; this sets the new base learning rate,
    betas and weight decay, the new milestones and factor, and the current rate the staircase
    gives at the scheduler's position (``lr × lr_gamma ** milestones passed``).
    """
    cfg = config["optim"]
    scheduler.milestones = Counter(int(m) for m in cfg["milestones"])
    scheduler.gamma = float(cfg["lr_gamma"])
    scheduler.base_lrs = [float(cfg["lr"]) for _ in optimizer.param_groups]
    passed = bisect_right(sorted(scheduler.milestones.elements()), int(scheduler.last_epoch))
    for group in optimizer.param_groups:
        group["initial_lr"] = float(cfg["lr"])
        group["lr"] = float(cfg["lr"]) * float(cfg["lr_gamma"]) ** passed
        group["weight_decay"] = float(cfg["weight_decay"])
        if "betas" in group:
            group["betas"] = tuple(float(b) for b in cfg["betas"])
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def restart_record(checkpoint: Path, state: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """What a restart did, as kept in the checkpoint, ``history.json`` and MLflow."""
    return {"from": str(checkpoint), "epoch": int(state["epoch"]), "step_in_epoch": int(state["step_in_epoch"]),
            "global_step": int(state["global_step"]), "changes": dict(changes),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def with_restart(history: list[dict[str, Any]], record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``history`` with ``record`` added to the ``restarts`` list of its last epoch record (the one restarted from)."""
    if not history:
        return list(history)
    last = history[-1]
    return [*history[:-1], {**last, "restarts": [*last.get("restarts", []), dict(record)]}]


def describe(changes: Mapping[str, Mapping[str, Any]]) -> str:
    """``optim.lr: 30.0 -> 0.001, ...`` for log lines."""
    return ", ".join(f"{key}: {value['old']!r} -> {value['new']!r}" for key, value in changes.items())
