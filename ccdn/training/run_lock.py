"""One ``ccdn train`` process per run directory at a time (an exclusive ``flock``).

Why: two jobs in one run directory (a requeued job starting while its predecessor still writes its
last checkpoint, a manual rerun beside a Snakemake job) would overwrite each other's checkpoints,
and the start-up clean-up of stale temporary files is only safe when nobody else is writing. The
second process waits a while for the first to finish, then stops with a message naming the holder.
File systems without ``flock`` (some parallel file systems) only get a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Iterator

from ccdn.errors import ConfigError

LOCK_NAME = ".train.lock"
WAIT_S = 60.0
POLL_S = 0.2


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; wait up to ``wait_s`` (default ``WAIT_S``) for another holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    wait_s = WAIT_S if wait_s is None else wait_s
    with open(run_dir / LOCK_NAME, "a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown process"
                    raise ConfigError(f"{run_dir} is in use by another `ccdn train` ({holder}) since more than "
                                      f"{wait_s:g} s; wait for it to end, or pass another --run-dir") from None
                time.sleep(POLL_S)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                warnings.warn(f"{run_dir}: the file system does not support flock ({exc}); nothing prevents two "
                              "jobs from training in this run directory at once", RuntimeWarning, stacklevel=3)
                yield
                return
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
