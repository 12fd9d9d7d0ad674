"""Linear learning-rate warm-up over the first epochs, stepped per optimiser step.

Why: the embedded default trains at a batch and rate (64, 3e-3) at which CCDN's excitation gates blow up
in the first epoch without it; the paper's recipe has no warm-up (``optim.warmup_epochs: 0``).
The factor is a pure function of the global step, so a resumed run continues it bit-exactly, and it ends
on an epoch boundary before the first milestone, so the per-epoch ``MultiStepLR`` staircase is untouched.
"""

from __future__ import annotations

import torch


def warmup_factor(global_step: int, warmup_steps: int) -> float:
    """The rate multiplier of the step after ``global_step`` completed steps: (s + 1) / W, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (global_step + 1) / warmup_steps)


def apply_warmup(optimizer: torch.optim.Optimizer, base_lr: float, global_step: int, warmup_steps: int) -> None:
    """Set every group's rate for the coming step while the warm-up lasts (afterwards the scheduler owns it)."""
    if global_step >= warmup_steps:
        return
    for group in optimizer.param_groups:
        group["lr"] = base_lr * warmup_factor(global_step, warmup_steps)
