"""Safe unpacking of downloaded archives and moving their content into the raw root.

Every member is checked before anything is written (no absolute paths, no ``..``, no links leaving
the target), and content is unpacked into a staging folder and then moved, so a bad archive leaves
nothing behind.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from ccdn.data.errors import FetchError


MAX_ROOT_SEARCH_DEPTH = 4


# --------------------------------------------------------------------------------------------------
# safe extraction


def safe_extract(archive: Path, target: Path, kind: str) -> None:
    """Unpack ``archive`` (``zip`` or ``tar``, any compression) into ``target``.

    Every member is checked before anything is written: absolute paths, ``..`` components, links
    that point outside ``target``, hard links and device files are refused with a :class:`FetchError`
    naming the archive and the member.
    """
    target.mkdir(parents=True, exist_ok=True)
    if kind == "zip":
        _extract_zip(archive, target)
    elif kind == "tar":
        _extract_tar(archive, target)
    else:
        raise ValueError(f"not an archive kind: {kind!r}")


def _unsafe(archive: Path, member: str, why: str) -> FetchError:
    return FetchError(
        f"{archive}: refusing to extract member {member!r}: {why}. The archive is unsafe or not the "
        "expected file; nothing was extracted. Delete it and download it again from the official source."
    )


def _name_problem(name: str) -> str | None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in posix.split("/"):
        return "'..' path component"
    return None


def _escapes(member_name: str, link_target: str) -> bool:
    """Does a symlink at ``member_name`` pointing to ``link_target`` leave the extraction folder?"""
    if _name_problem(link_target) == "absolute path":
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(member_name.replace("\\", "/")), link_target))
    return joined == ".." or joined.startswith("../")


def _extract_zip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                problem = _name_problem(info.filename)
                if problem:
                    raise _unsafe(archive, info.filename, problem)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise _unsafe(archive, info.filename, "symbolic links are not allowed in zip archives")
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise FetchError(
            f"{archive} is not a valid zip file ({exc}): a truncated download or an HTML page saved "
            "under the archive's name. Delete it and fetch again."
        ) from exc


def _extract_tar(archive: Path, target: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_tar_member(archive, member)
            tf.extractall(target, members=members, filter="data")
    except tarfile.FilterError as exc:  # defence in depth: our checks should already have refused it
        raise _unsafe(archive, exc.tarinfo.name, str(exc)) from exc
    except (tarfile.ReadError, EOFError) as exc:
        raise FetchError(
            f"{archive} is not a readable tar archive ({exc}): a truncated download or the wrong file. "
            "Delete it and fetch again."
        ) from exc


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    problem = _name_problem(member.name)
    if problem:
        raise _unsafe(archive, member.name, problem)
    if member.issym() and _escapes(member.name, member.linkname):
        raise _unsafe(archive, member.name, f"symbolic link to {member.linkname!r} leaves the target folder")
    if member.islnk():
        link_problem = _name_problem(member.linkname)
        if link_problem:
            raise _unsafe(archive, member.name, f"hard link to {member.linkname!r} ({link_problem})")
    if member.ischr() or member.isblk() or member.isfifo():
        raise _unsafe(archive, member.name, "device files and FIFOs are not allowed")


# --------------------------------------------------------------------------------------------------
# placing content into the raw root


def expected_present(folder: Path, patterns: tuple[str, ...]) -> bool:
    """True when every glob pattern matches at least one path under ``folder``."""
    return folder.is_dir() and all(next(folder.glob(p), None) is not None for p in patterns)


def find_content_root(staging: Path, patterns: tuple[str, ...]) -> Path | None:
    """The shallowest folder of an unpacked archive holding the expected paths (skips wrappers)."""
    level = [staging]
    for _ in range(MAX_ROOT_SEARCH_DEPTH + 1):
        for folder in level:
            if expected_present(folder, patterns):
                return folder
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.is_symlink()]
    return None


def merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging folders and replacing files (re-fetch is idempotent)."""
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in sorted(src.iterdir()):
            merge_move(child, dst / child.name)
        return
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def move_file(src: Path, dst: Path) -> None:
    """Atomic rename, falling back to copy-then-rename across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        src.unlink()
