"""Safe unpacking of downloaded archives and moving their content into the raw root.

Every member is checked before anything is written (no absolute paths, no ``..``, no links leaving
the target), and content is unpacked into a staging folder and then moved, so a bad archive leaves
nothing behind. Unpacking is bounded (:class:`ExtractionLimits`): the total size and member count
are checked from the archive's headers before anything is written, and the bytes are counted again
while writing, so a 1 MB archive that expands to gigabytes (a decompression bomb, or the wrong file)
is refused instead of filling the disk.
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
from dataclasses import dataclass
from pathlib import Path

from ccdn.data.errors import FetchError


MAX_ROOT_SEARCH_DEPTH = 4

# Without a manifest figure, an archive may expand to at most MAX_RATIO times its own size (images
# and .mat files barely compress; text annotations compress ~5-10x), never below RATIO_FLOOR_BYTES
# and never above the global ceilings. Manifest figures get a MARGIN.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 64 * 2**20
CEILING_BYTES = 200 * 2**30
CEILING_MEMBERS = 2_000_000
MARGIN = 1.25
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExtractionLimits:
    """What unpacking one archive may write: total bytes and member count, and where the bounds come from."""

    max_bytes: int
    max_members: int
    why: str


def extraction_limits(archive_size: int, *, unpacked_size: int | None = None,
                      members: int | None = None) -> ExtractionLimits:
    """Bounds from the manifest's ``unpacked_size`` / ``members`` (+25 %), else the ratio and ceilings."""
    if unpacked_size:
        max_bytes, why = int(unpacked_size * MARGIN), f"the manifest's unpacked_size {unpacked_size} + 25 %"
    else:
        max_bytes = min(CEILING_BYTES, max(RATIO_FLOOR_BYTES, archive_size * MAX_RATIO))
        why = f"{MAX_RATIO} x the archive's {archive_size} bytes (at least {RATIO_FLOOR_BYTES})"
    max_members = int(members * MARGIN) + 16 if members else CEILING_MEMBERS
    return ExtractionLimits(max_bytes, max_members, why)


# --------------------------------------------------------------------------------------------------
# safe extraction


def safe_extract(archive: Path, target: Path, kind: str, limits: ExtractionLimits | None = None) -> None:
    """Unpack ``archive`` (``zip`` or ``tar``, any compression) into ``target``, within ``limits``.

    Every member is checked before anything is written: absolute paths, ``..`` components, links
    that point outside ``target``, hard links and device files are refused with a :class:`FetchError`
    naming the archive and the member; so are archives whose headers announce more bytes or members
    than ``limits`` (default: :func:`extraction_limits` of the archive's size) or than the free disk
    space. The caller removes ``target`` on failure (``fetch`` unpacks into a staging folder).
    """
    target.mkdir(parents=True, exist_ok=True)
    limits = limits or extraction_limits(archive.stat().st_size)
    if kind == "zip":
        _extract_zip(archive, target, limits)
    elif kind == "tar":
        _extract_tar(archive, target, limits)
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


def _too_large(archive: Path, what: str, limits: ExtractionLimits) -> FetchError:
    return FetchError(
        f"{archive}: unpacking would write {what}, more than allowed ({limits.max_bytes} bytes and "
        f"{limits.max_members} members: {limits.why}). It is not the expected archive (or a decompression "
        "bomb); nothing was installed or recorded. Delete it and fetch again from the official source."
    )


def _check_totals(archive: Path, target: Path, members: int, total: int, limits: ExtractionLimits) -> None:
    """The archive's announced totals against the limits and the free space, before writing anything."""
    if members > limits.max_members or total > limits.max_bytes:
        raise _too_large(archive, f"{total} bytes in {members} members", limits)
    free = shutil.disk_usage(target).free
    if total > free:
        raise FetchError(f"{archive}: unpacking needs {total} bytes but {target} has {free} free; free some space "
                         "or pass another --root, then fetch again")


def _escapes(member_name: str, link_target: str) -> bool:
    """Does a symlink at ``member_name`` pointing to ``link_target`` leave the extraction folder?"""
    if _name_problem(link_target) == "absolute path":
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(member_name.replace("\\", "/")), link_target))
    return joined == ".." or joined.startswith("../")


def _extract_zip(archive: Path, target: Path, limits: ExtractionLimits) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                problem = _name_problem(info.filename)
                if problem:
                    raise _unsafe(archive, info.filename, problem)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise _unsafe(archive, info.filename, "symbolic links are not allowed in zip archives")
            _check_totals(archive, target, len(infos), sum(i.file_size for i in infos), limits)
            written = 0
            for info in infos:  # headers can lie: count the bytes actually decompressed
                written = _write_zip_member(zf, info, target, archive, written, limits)
    except zipfile.BadZipFile as exc:
        raise FetchError(
            f"{archive} is not a valid zip file ({exc}): a truncated download or an HTML page saved "
            "under the archive's name. Delete it and fetch again."
        ) from exc


def _write_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path, written: int,
                      limits: ExtractionLimits) -> int:
    """Decompress one member in chunks, stopping as soon as the total passes ``limits.max_bytes``."""
    dest = target / info.filename
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return written
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as source, open(dest, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if written > limits.max_bytes:
                raise _too_large(archive, f"more than {limits.max_bytes} bytes (stopped at {info.filename!r})",
                                 limits)
            out.write(chunk)
    return written


def _extract_tar(archive: Path, target: Path, limits: ExtractionLimits) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_tar_member(archive, member)
            # A tar member's data is exactly ``size`` bytes read from the stream, so the headers'
            # total is what extraction writes (sparse members, which could expand, are refused).
            _check_totals(archive, target, len(members), sum(m.size for m in members if m.isfile()), limits)
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
    if member.issparse():
        raise _unsafe(archive, member.name, "sparse files are not allowed")


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
