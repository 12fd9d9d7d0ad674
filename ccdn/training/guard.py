"""The NaN guard: a run never saves or records a non-finite state.

Why three checks: a finite loss does not make the step's result finite — one large step can turn
the weights to Inf/NaN, and the *next* loss is the first to show it. So the weights (and buffers,
e.g. BatchNorm's running statistics) are checked right after each optimiser step, the validation
NME before it is recorded, and every state once more before a checkpoint is written. Records go to
``history.json`` through :func:`history_json`, which turns any non-finite number into ``null`` so the
file is always valid JSON (``json.dumps`` would write a bare ``NaN``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ccdn import checkpoint as ckpt

__all__ = ["nonfinite_tensors", "weights_are_finite", "nonfinite_in_state", "json_safe", "history_json",
           "recovery_advice"]


def _floating(items: Iterable[tuple[str, Any]]) -> list[tuple[str, torch.Tensor]]:
    return [(name, t) for name, t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]


def weights_are_finite(model: nn.Module) -> bool:
    """All floating parameters and buffers finite; one reduction and one device sync per call."""
    tensors = [t.detach() for _, t in _floating(model.state_dict().items()) if t.numel()]
    if not tensors:
        return True
    # The max-norm (largest |element|) is NaN/Inf exactly when an element is, and cannot overflow.
    if hasattr(torch, "_foreach_norm"):
        peaks = torch._foreach_norm(tensors, float("inf"))
    else:
        peaks = [t.abs().max() for t in tensors]
    return bool(torch.isfinite(torch.stack([p.float() for p in peaks])).all()) if peaks else True


def nonfinite_tensors(state: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Names of the floating tensors in a (nested) state dict that hold a NaN or Inf (the slow, exact list)."""
    bad: list[str] = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, Mapping):
            bad.extend(nonfinite_tensors(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            bad.extend(nonfinite_tensors({str(i): v for i, v in enumerate(value)}, f"{name}."))
    return bad


def nonfinite_in_state(state: Mapping[str, Any]) -> list[str]:
    """The non-finite tensors of a checkpoint's model and optimiser state (empty when it may be saved)."""
    parts = {k: state[k] for k in ("model", "optimizer") if k in state} if "model" in state else dict(state)
    return nonfinite_tensors(parts)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def history_json(history: list[dict[str, Any]]) -> str:
    """``history.json``'s text: strict JSON (``allow_nan=False``), non-finite numbers as ``null``."""
    return json.dumps(json_safe(history), indent=2, allow_nan=False) + "\n"


def recovery_advice(run_dir: Path, lr: float) -> str:
    """The end of every NaN-guard message: the last finite checkpoint and the command that restarts from it."""
    path = ckpt.latest_checkpoint(run_dir)
    if path is None:
        return (f"No checkpoint was written yet; lower optim.lr (now {lr:g}) or check the data, and start again with "
                f"another --run-dir or after deleting {run_dir}.")
    state = ckpt.load_checkpoint(path)
    return (f"The last good checkpoint is {path} (epoch {state['epoch']}, step {state['step_in_epoch']}); restart "
            f"from it with a lower learning rate: ccdn train --run-dir {run_dir} --restart-from {path} "
            f"optim.lr={lr / 10:g}")
