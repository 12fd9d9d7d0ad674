"""One atomic writer for every file ``ccdn`` produces (text, YAML, JSON, ``.npz``, torch, figures).

A reader — another process, a Snakemake rule, a requeued job — must never see half a file. So each
writer writes a temporary file in the destination's folder (same file system, so the rename is
atomic), flushes and fsyncs it, gives it the permissions a plain ``open()`` would (from the umask;
``mkstemp``'s 0600 is too strict for shared results), renames it over the destination and fsyncs
the folder. On any failure the temporary file is removed and the destination is untouched.
This module is the bottom layer: it imports nothing from ``ccdn``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_open",
    "write_text",
    "write_bytes",
    "write_yaml",
    "write_json",
    "write_npz",
    "save_torch",
    "fsync_dir",
    "file_mode",
    "remove_stale_temporaries",
]

TEMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask (e.g. 0644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (best effort: some file systems cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the writer's leftovers (``.NAME.XXXX.tmp``) in ``folder``; returns what was removed.

    A process killed between writing its temporary file and the rename (``kill -9``, a node
    failure) leaves one behind, possibly as large as a checkpoint. Call this only where no other
    process is writing (a run directory when its one job starts).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    For writers that want a file name (h5py, matplotlib); the caller closes what it opened before
    the block ends. The file is fsynced before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, file_mode())
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **open_options: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that only appears at ``path`` when the block succeeds (``"w"`` or ``"wb"``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    if mode == "w":
        open_options = {"encoding": "utf-8", "newline": "", **open_options}
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_options) as handle:
            yield handle
            handle.flush()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, line endings as given) atomically; returns ``path``."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_yaml(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """YAML in the order given (``sort_keys=False``), as configs are read by people."""
    import yaml

    return write_text(path, yaml.safe_dump(dict(data), sort_keys=False))


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """JSON with a final newline."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> Path:
    """An uncompressed ``.npz`` (memory-mappable members)."""
    import numpy as np

    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` atomically (checkpoints, final weights)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)
