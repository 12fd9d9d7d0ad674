"""Seeds and deterministic-algorithm flags: a run restarted from any checkpoint continues exactly
as if never stopped, so every random stream is derived from the config's seed (and the epoch)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Set the deterministic-algorithm flags and assert they took effect.

    Asserting matters: a misspelt flag (``cudnn.determinstic``) silently does nothing.
    ``CUBLAS_WORKSPACE_CONFIG`` must be set before cuBLAS starts, so set it before any CUDA work.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    assert torch.are_deterministic_algorithms_enabled() == deterministic, "torch deterministic flag did not apply"
    assert torch.backends.cudnn.deterministic == deterministic, "cudnn.deterministic did not apply"
    assert torch.backends.cudnn.benchmark == (not deterministic), "cudnn.benchmark did not apply"


def determinism_flags() -> tuple[bool, bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)


def restore_determinism_flags(flags: tuple[bool, bool, bool, bool]) -> None:
    """Give a library caller (tests, notebooks) back the global flags it had before ``train``."""
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for the sample order of one epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
