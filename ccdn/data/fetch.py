"""``ccdn fetch DATASET``: download, verify and safely unpack a dataset into ``data/raw/<dataset>/``.

Why each piece exists:
- downloads go to ``<name>.part`` and are resumed with an HTTP ``Range`` request, because the
  archives are large and the hosts are slow and flaky;
- a file counts as downloaded only after its sha256 matches (the manifest's, or the one recorded
  in the lock file on first download, trust-on-first-use) and an atomic rename, so a cut or corrupt
  transfer never looks complete;
- archives are unpacked into a staging folder after every member has been checked (no absolute
  paths, no ``..``, no links leaving the target), then moved into place, so a bad archive leaves
  nothing behind;
- licence-gated and Drive-only files cannot always be downloaded: ``fetch`` checks whether they are
  in place and otherwise says exactly which file to put where, and exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ccdn import __version__
from ccdn.data.errors import FetchError
from ccdn.data.sources import DatasetManifest, SourceFile, list_datasets, load_manifest

DEFAULT_ROOT = Path("data/raw")
DEFAULT_LOCK = Path(__file__).with_name("checksums.lock.yaml")
LOCK_ENV = "CCDN_LOCK_FILE"
MIRROR_ENV = "CCDN_MIRROR"
SYNTHETIC_MARKER = "SYNTHETIC.json"
USER_AGENT = f"ccdn-repro/{__version__} (+https://github.com; urllib)"
CHUNK_BYTES = 1 << 20
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
MAX_ROOT_SEARCH_DEPTH = 4

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# checksums and the lock file


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (archives are hundreds of MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LockEntry:
    sha256: str
    size: int
    source: str
    recorded: str


class ChecksumLock:
    """sha256 of every file fetched without a published checksum, keyed ``<dataset>/<file name>``.

    Trust on first use: the first verified download records its checksum here; users commit the
    file so that every later fetch (theirs or a colleague's) must produce the same bytes.
    """

    HEADER = (
        "# Checksums recorded by `ccdn fetch` on the first verified download of files whose\n"
        "# publishers give no checksum. Commit this file: later fetches must match it.\n"
        "# If an upstream file legitimately changed, delete its entry and fetch again.\n"
    )

    def __init__(self, path: Path, entries: dict[str, LockEntry] | None = None):
        self.path = Path(path)
        self.entries: dict[str, LockEntry] = dict(entries or {})

    @classmethod
    def load(cls, path: Path) -> ChecksumLock:
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise FetchError(f"lock file {path} cannot be read ({exc}); fix it or delete it to start over") from exc
        files = raw.get("files") or {} if isinstance(raw, dict) else None
        if not isinstance(files, dict):
            raise FetchError(f"lock file {path}: expected a mapping with a 'files' mapping; fix it or delete it")
        entries = {}
        for key, value in files.items():
            entries[str(key)] = cls._parse_entry(path, str(key), value)
        return cls(path, entries)

    @staticmethod
    def _parse_entry(path: Path, key: str, value: Any) -> LockEntry:
        if not isinstance(value, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(value.get("sha256", ""))):
            raise FetchError(f"lock file {path}: entry {key!r} needs a 64-hex 'sha256'; fix or delete that entry")
        return LockEntry(
            sha256=str(value["sha256"]),
            size=int(value.get("size") or 0),
            source=str(value.get("source") or ""),
            recorded=str(value.get("recorded") or ""),
        )

    def get(self, key: str) -> LockEntry | None:
        return self.entries.get(key)

    def record(self, key: str, sha256: str, size: int, source: str) -> None:
        """Add an entry and write the file at once (atomically), so progress survives a crash."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        self.entries[key] = LockEntry(sha256, size, source, now)
        self.save()

    def save(self) -> None:
        body = {
            "version": 1,
            "files": {k: vars(e) for k, e in sorted(self.entries.items())},
        }
        _atomic_write_text(self.path, self.HEADER + yaml.safe_dump(body, sort_keys=False))


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# HTTP download with resume and retries


@dataclass
class DownloadOptions:
    """Network knobs; tests use ``backoff_s=0`` and a tiny ``timeout_s``."""

    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    progress: bool = True
    sleep: Callable[[float], None] = time.sleep
    log: Log = _stderr


class DownloadFailed(FetchError):
    """No URL delivered the file (network errors, 404, HTML pages); the ``.part`` is kept for resume."""


class _Retryable(Exception):
    """A transient failure: try again (resuming) after a back-off."""


class _WrongSource(Exception):
    """This URL will not give the file (404, an HTML page, ...): try the next URL."""


def part_path(dest: Path) -> Path:
    """Where an unfinished download of ``dest`` lives (resumable)."""
    return dest.with_name(dest.name + ".part")


def download_verified(
    urls: list[str] | tuple[str, ...],
    dest: Path,
    *,
    expected_sha256: str | None,
    expected_size: int | None = None,
    expected_from: str = "the manifest",
    options: DownloadOptions | None = None,
) -> str:
    """Download ``dest`` from the first URL that works, verify it and rename it into place.

    Returns the file's sha256. A checksum or size mismatch deletes the ``.part`` and raises
    :class:`FetchError` naming the file and both digests (after one clean retry when the mismatch
    might come from resuming onto a stale ``.part``). Network failures keep the ``.part`` so that
    the next run resumes.
    """
    options = options or DownloadOptions()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    problems: list[str] = []
    for url in urls:
        try:
            resumed = _download_to_part(url, part, dest.name, options)
        except _WrongSource as exc:
            problems.append(f"{url}: {exc}")
            continue
        except _Retryable as exc:
            problems.append(f"{url}: {exc} (gave up after {options.retries} retries)")
            continue
        actual = _check_part(part, dest, expected_sha256, expected_size, expected_from, final=not resumed)
        if actual is None:  # resumed onto a stale .part: start over once
            options.log(f"{dest.name}: checksum mismatch after a resumed transfer; downloading again from scratch")
            part.unlink(missing_ok=True)
            try:
                _download_to_part(url, part, dest.name, options)
            except (_WrongSource, _Retryable) as exc:
                problems.append(f"{url}: {exc}")
                continue
            actual = _check_part(part, dest, expected_sha256, expected_size, expected_from, final=True)
        os.replace(part, dest)
        return actual  # type: ignore[return-value]
    kept = f" The partial file {part} is kept; rerun to resume." if part.exists() else ""
    raise DownloadFailed(f"could not download {dest.name}:\n  " + "\n  ".join(problems) + kept)


def _check_part(
    part: Path, dest: Path, expected_sha256: str | None, expected_size: int | None, expected_from: str, *, final: bool
) -> str | None:
    """sha256 of the finished ``.part``; on mismatch delete it and raise (or return None to retry)."""
    actual = file_digest(part)
    size = part.stat().st_size
    size_bad = expected_size is not None and size != expected_size
    sha_bad = expected_sha256 is not None and actual != expected_sha256
    if not (size_bad or sha_bad):
        return actual
    if not final:
        return None
    part.unlink(missing_ok=True)
    if sha_bad:
        detail = f"expected sha256 {expected_sha256} from {expected_from}, got {actual}"
    else:
        detail = f"expected {expected_size} bytes from {expected_from}, got {size}"
    raise FetchError(
        f"{dest.name}: downloaded file is corrupt or not the expected file ({detail}). It was deleted; "
        f"nothing was written to {dest}. Rerun to try again; if it keeps failing, the upstream file "
        f"changed: check it and update {expected_from}."
    )


def _download_to_part(url: str, part: Path, name: str, options: DownloadOptions) -> bool:
    """Fill ``part`` from ``url`` with retries and back-off; True if any bytes came from a resumed range."""
    resumed = False
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            used_range = _transfer_once(url, part, name, offset, options)
            return resumed or used_range
        except _Retryable as exc:
            resumed = resumed or offset > 0
            failures += 1
            if failures > options.retries:
                raise
            delay = options.backoff_s * 2 ** (failures - 1)
            options.log(f"{name}: {exc}; retrying in {delay:.1f}s ({failures}/{options.retries})")
            options.sleep(delay)


def _transfer_once(url: str, part: Path, name: str, offset: int, options: DownloadOptions) -> bool:
    """One HTTP request appending to ``part``; True when the server honoured our Range request."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=options.timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:  # release the error response's socket
            return _handle_http_error(exc, part, offset)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"connection failed ({_reason(exc)})") from exc
    with response:
        _reject_html(response, name)
        if response.status == 206 and offset:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start} instead of {offset}; starting over")
            mode, used_range = "ab", True
        else:  # 200: the server ignored Range (or there was none): start from byte 0
            offset, mode, used_range = 0, "wb", False
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        written = _copy_body(response, part, mode, name, offset, total, options.progress)
    if total is not None and offset + written < total:
        raise _Retryable(f"connection closed after {offset + written} of {total} bytes")
    return used_range


def _handle_http_error(exc: urllib.error.HTTPError, part: Path, offset: int) -> bool:
    if exc.code == 416 and offset:  # our range starts at or past the end: maybe already complete
        _, total = _parse_content_range(exc.headers.get("Content-Range"), unsatisfied=True)
        if total == offset:
            return True
        part.unlink(missing_ok=True)
        raise _Retryable("server rejected the resume range; starting over") from exc
    if exc.code in RETRYABLE_HTTP:
        raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
    raise _WrongSource(f"HTTP {exc.code} {exc.reason}") from exc


def _reject_html(response: http.client.HTTPResponse, name: str) -> None:
    """Login pages, licence forms and Drive quota pages arrive as HTML with status 200."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.lower().startswith("text/html") and not name.lower().endswith((".html", ".htm")):
        raise _WrongSource(
            "the server returned an HTML page instead of the file (a login, licence or quota page?); "
            "download it in a browser and place it by hand"
        )


def _copy_body(response, part: Path, mode: str, name: str, offset: int, total: int | None, progress: bool) -> int:
    written = 0
    with open(part, mode) as fh, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=name, disable=not progress, leave=False,
    ) as bar:  # fmt: skip
        try:
            while chunk := response.read(CHUNK_BYTES):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"transfer interrupted after {offset + written} bytes ({_reason(exc)})") from exc
    return written


def _parse_content_range(value: str | None, *, unsatisfied: bool = False) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200)."""
    if not value:
        return None, None
    pattern = r"bytes\s+\*/(\d+)" if unsatisfied else r"bytes\s+(\d+)-\d+/(\d+|\*)"
    match = re.match(pattern, value.strip())
    if not match:
        return None, None
    if unsatisfied:
        return None, int(match.group(1))
    total = match.group(2)
    return int(match.group(1)), (None if total == "*" else int(total))


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def download_gdrive(file_id: str, dest: Path, *, options: DownloadOptions) -> None:
    """Download a Google Drive file with ``gdown`` (it handles Drive's confirmation pages).

    Raises :class:`_WrongSource` when gdown is missing or Drive refuses (quota, no network).
    """
    try:
        import gdown
    except ImportError as exc:
        raise _WrongSource("the gdown package is not installed") from exc
    tmp = dest.with_name(dest.name + ".gdown")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download(id=file_id, output=str(tmp), quiet=not options.progress, resume=True)
    except Exception as exc:  # gdown raises many types (requests errors, FileURLRetrievalError, ...)
        raise _WrongSource(f"Google Drive download failed ({type(exc).__name__}: {exc})") from exc
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise _WrongSource("Google Drive download produced no file")
    os.replace(tmp, part_path(dest))


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


def _find_content_root(staging: Path, patterns: tuple[str, ...]) -> Path | None:
    """The shallowest folder of an unpacked archive holding the expected paths (skips wrappers)."""
    level = [staging]
    for _ in range(MAX_ROOT_SEARCH_DEPTH + 1):
        for folder in level:
            if expected_present(folder, patterns):
                return folder
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not c.is_symlink()]
    return None


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging folders and replacing files (re-fetch is idempotent)."""
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in sorted(src.iterdir()):
            _merge_move(child, dst / child.name)
        return
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def _move_file(src: Path, dst: Path) -> None:
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


# --------------------------------------------------------------------------------------------------
# the per-dataset procedure


@dataclass
class FetchOptions:
    """Where things go and how to reach the hosts (see ``ccdn fetch --help``)."""

    root: Path = DEFAULT_ROOT
    downloads: Path | None = None
    base_url: str | None = None
    lock_path: Path = DEFAULT_LOCK
    force: bool = False
    use_gdrive: bool = True
    download: DownloadOptions = field(default_factory=DownloadOptions)

    def downloads_dir(self, dataset: str) -> Path:
        return Path(self.downloads) / dataset if self.downloads else Path(self.root) / ".downloads" / dataset


@dataclass
class MissingFile:
    """A file that must be placed by hand, and why."""

    source: SourceFile
    reason: str


@dataclass
class FetchOutcome:
    dataset: str
    raw_root: Path
    downloads: Path
    present: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)
    missing: list[MissingFile] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def fetch_dataset(manifest: DatasetManifest | str, options: FetchOptions | None = None) -> FetchOutcome:
    """Bring ``data/raw/<dataset>/`` to the layout of Contract 1 (or say what must be placed by hand).

    Raises :class:`FetchError` for corrupt or unsafe files and checksum disagreements; files that
    cannot be downloaded (licence-gated, Drive refused, host unreachable) are returned in
    ``outcome.missing`` so that all of them can be reported at once.
    """
    options = options or FetchOptions()
    if isinstance(manifest, str):
        manifest = load_manifest(manifest)
    raw_root = Path(options.root) / manifest.dataset
    if (raw_root / SYNTHETIC_MARKER).exists():
        raise FetchError(
            f"{raw_root} holds synthetic data ({SYNTHETIC_MARKER}); real files must not be mixed into it. "
            "Move that folder away or fetch into another --root."
        )
    outcome = FetchOutcome(manifest.dataset, raw_root, options.downloads_dir(manifest.dataset))
    lock = ChecksumLock.load(Path(options.lock_path))
    log = options.download.log
    for source in manifest.files:
        dest_dir = raw_root / source.dest
        if not options.force and expected_present(dest_dir, source.expect):
            outcome.present.append(source.name)
            continue
        _install_file(manifest, source, options, lock, outcome)
    if outcome.complete:
        log(f"{manifest.dataset}: complete in {raw_root}")
    return outcome


def _install_file(
    manifest: DatasetManifest, source: SourceFile, options: FetchOptions, lock: ChecksumLock, outcome: FetchOutcome
) -> None:
    log = options.download.log
    key = f"{manifest.dataset}/{source.name}"
    expected = _expected_sha256(source, lock, key)
    file_path = outcome.downloads / source.name
    downloaded_now = False
    origin = f"file found in {outcome.downloads}"
    if file_path.is_file():
        sha = _verify_existing(file_path, expected, key, lock)
    else:
        origin = _origin(source, options)
        try:
            expected_from = "the manifest" if source.sha256 else f"lock file {lock.path} (entry {key})"
            sha = _acquire(manifest, source, file_path, expected, expected_from, options)
        except _WrongSource as exc:
            outcome.missing.append(MissingFile(source, str(exc)))
            return
        if sha is None:
            outcome.missing.append(MissingFile(source, _manual_reason(source)))
            return
        downloaded_now = True
    size = file_path.stat().st_size
    try:
        _place(source, file_path, outcome.raw_root, Path(options.root))
    except FetchError:
        if downloaded_now:  # never keep (or trust) a file we fetched that turned out bad
            file_path.unlink(missing_ok=True)
        raise
    if expected is None:
        lock.record(key, sha, size, origin)
        log(f"{source.name}: recorded sha256 {sha} in {lock.path} (commit it)")
    outcome.installed.append(source.name)
    log(f"{source.name}: installed into {outcome.raw_root / source.dest}")


def _expected_sha256(source: SourceFile, lock: ChecksumLock, key: str) -> str | None:
    entry = lock.get(key)
    if source.sha256 and entry and entry.sha256 != source.sha256:
        raise FetchError(
            f"{key}: the manifest says sha256 {source.sha256} but lock file {lock.path} says {entry.sha256}; "
            "delete the stale lock entry."
        )
    return source.sha256 or (entry.sha256 if entry else None)


def _verify_existing(path: Path, expected: str | None, key: str, lock: ChecksumLock) -> str:
    """A file already in the downloads folder (an earlier run, or placed by hand) must match too."""
    actual = file_digest(path)
    if expected is not None and actual != expected:
        raise FetchError(
            f"{path}: sha256 is {actual} but {key} is expected to be {expected} (manifest or lock file "
            f"{lock.path}). It is not the right file, or it is truncated: delete it and fetch again."
        )
    return actual


def _acquire(
    manifest: DatasetManifest,
    source: SourceFile,
    file_path: Path,
    expected: str | None,
    expected_from: str,
    options: FetchOptions,
) -> str | None:
    """Download ``source`` into the downloads folder; None for files that must be placed by hand."""
    mirror = options.base_url or os.environ.get(MIRROR_ENV) or None
    if source.method == "manual":
        return None
    if mirror:
        urls = [f"{mirror.rstrip('/')}/{manifest.dataset}/{urllib.parse.quote(source.name)}"]
    elif source.method == "gdrive":
        if not options.use_gdrive:
            raise _WrongSource("Google Drive downloads are disabled (--no-gdrive)")
        options.download.log(f"{source.name}: downloading from Google Drive with gdown")
        download_gdrive(source.gdrive_id or "", file_path, options=options.download)
        actual = _check_part(part_path(file_path), file_path, expected, source.size, expected_from, final=True)
        os.replace(part_path(file_path), file_path)
        return actual
    else:
        urls = list(source.urls)
    options.download.log(f"{source.name}: downloading from {urls[0]}" + (" (+ fallbacks)" if len(urls) > 1 else ""))
    try:
        return download_verified(
            urls,
            file_path,
            expected_sha256=expected,
            expected_size=source.size,
            expected_from=expected_from,
            options=options.download,
        )
    except DownloadFailed as exc:
        raise _WrongSource(str(exc)) from exc


def _place(source: SourceFile, file_path: Path, raw_root: Path, root: Path) -> None:
    """Unpack (or move) a verified file into the raw root; nothing moves unless all checks pass."""
    dest_dir = raw_root / source.dest
    if not source.is_archive:
        _move_file(file_path, dest_dir / source.name)
        return
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".staging-{raw_root.name}-"))
    try:
        safe_extract(file_path, staging, source.archive)
        content = _find_content_root(staging, source.expect)
        if content is None:
            top = sorted(p.name for p in staging.iterdir())[:10]
            raise FetchError(
                f"{file_path}: after unpacking, the expected paths {list(source.expect)} were not found "
                f"(top-level entries: {top}). It is not the expected archive: delete it and fetch again, "
                "or fix the manifest's 'expect'."
            )
        _check_members(source, file_path, content)
        entries = [content / k for k in source.keep] if source.keep else sorted(content.iterdir())
        for entry in entries:
            if not entry.exists():
                raise FetchError(f"{file_path}: the archive has no {entry.name!r} to keep; fix the manifest")
        dest_dir.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            _merge_move(entry, dest_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(source: SourceFile, archive: Path, content: Path) -> None:
    for member in source.member_checksums:
        path = content / member.path
        if not path.is_file():
            raise FetchError(f"{archive}: member {member.path!r} with a published checksum is missing")
        for algorithm, expected in (("md5", member.md5), ("sha256", member.sha256)):
            if expected is None:
                continue
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise FetchError(
                    f"{archive}: member {member.path!r} has {algorithm} {actual}, expected {expected} "
                    "(published checksum). Nothing was installed; the archive is not the expected version."
                )


def _origin(source: SourceFile, options: FetchOptions) -> str:
    mirror = options.base_url or os.environ.get(MIRROR_ENV)
    if mirror:
        return f"mirror {mirror}"
    if source.method == "gdrive":
        return f"gdrive:{source.gdrive_id}"
    return source.urls[0] if source.urls else "placed by hand"


def _manual_reason(source: SourceFile) -> str:
    return f"licence-gated: {source.licence}" if source.licence else "must be downloaded by hand"


# --------------------------------------------------------------------------------------------------
# messages and the command line


def placement_message(manifest: DatasetManifest, outcome: FetchOutcome) -> str:
    """Tell the user, per missing file, where to get it and the two ways to put it in place."""
    lines = [
        f"ccdn fetch {manifest.dataset}: {len(outcome.missing)} file(s) could not be fetched automatically; "
        "place them by hand:",
    ]
    for item in outcome.missing:
        source = item.source
        dest_dir = outcome.raw_root / source.dest
        lines += [
            "",
            f"  {source.name}  ({source.description})",
            f"    why: {item.reason}",
        ]
        if source.registration:
            lines.append(f"    get it from: {source.registration}")
        if source.method == "gdrive" and source.gdrive_id:
            lines.append(f"    Google Drive: https://drive.google.com/file/d/{source.gdrive_id}/view")
        if source.notes:
            lines.append(f"    note: {source.notes}")
        lines.append(
            f"    then EITHER put the file at {outcome.downloads / source.name} and rerun "
            f"`ccdn fetch {manifest.dataset}` (it is checksummed, recorded in the lock file and unpacked)"
        )
        if source.is_archive:
            shown = ", ".join(str(dest_dir / p) for p in source.expect)
            lines.append(f"    OR unpack it yourself so that these exist: {shown}")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fetch",
        help="download, verify and unpack a dataset into data/raw/<dataset>/",
        description=(
            "Download a dataset's files (resumable, checksummed, recorded in a lock file), unpack them safely "
            "into ROOT/<dataset>/, and explain what to place by hand for licence-gated or Drive-only files."
        ),
    )
    parser.add_argument("dataset", choices=list_datasets(), metavar="DATASET", help=f"one of {list_datasets()}")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR", help="raw data root (data/raw)")
    parser.add_argument(
        "--downloads", type=Path, metavar="DIR", help="where archives are kept (default: ROOT/.downloads/<dataset>)"
    )
    parser.add_argument("--base-url", metavar="URL", help=f"mirror serving URL/<dataset>/<file> (or ${MIRROR_ENV})")
    parser.add_argument(
        "--lock", type=Path, metavar="FILE", help=f"checksum lock file (default: ${LOCK_ENV} or the packaged one)"
    )
    parser.add_argument("--force", action="store_true", help="unpack again even if the files are already in place")
    parser.add_argument("--retries", type=int, default=5, metavar="N", help="retries per URL after a network error")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="socket timeout (default 60)")
    parser.add_argument("--no-gdrive", action="store_true", help="never try Google Drive (print manual steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """0 when the dataset is complete, 1 when files must be placed by hand (FetchError -> cli exit 2)."""
    lock_path = args.lock or Path(os.environ.get(LOCK_ENV) or DEFAULT_LOCK)
    options = FetchOptions(
        root=args.root,
        downloads=args.downloads,
        base_url=args.base_url,
        lock_path=lock_path,
        force=args.force,
        use_gdrive=not args.no_gdrive,
        download=DownloadOptions(retries=args.retries, timeout_s=args.timeout, progress=not args.no_progress),
    )
    manifest = load_manifest(args.dataset)
    outcome = fetch_dataset(manifest, options)
    for step in manifest.manual_steps:
        _stderr(f"note: {step}")
    if outcome.complete:
        print(f"{manifest.dataset}: ready in {outcome.raw_root}")
        return 0
    _stderr(placement_message(manifest, outcome))
    return 1
