"""Stop signals of a training process: SIGTERM / SIGUSR1 (SLURM preemption, ``scancel``).

Why a flag and not an exception: the handler only records the signal; the loop checkpoints at the
next step boundary (all ranks agree on the step) and exits, so no state is torn mid-step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


@contextlib.contextmanager
def on_stop_signals(record: Callable[[int], None]) -> Iterator[None]:
    """Within the block, SIGTERM / SIGUSR1 call ``record(signum)``; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return
    previous = {}

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        record(signum)

    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
