"""HTTP download with resume, retries and checksums, and the checksum lock file (trust on first use).

Downloads go to ``<name>.part`` and are resumed with an HTTP ``Range`` request, because the archives
are large and the hosts slow and flaky; a file counts as downloaded only after its sha256 matches
and an atomic rename, so a cut or corrupt transfer never looks complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ccdn import __version__
from ccdn.errors import FetchError, yaml_problem
from ccdn.io import write_text


USER_AGENT = f"ccdn-repro/{__version__} (+https://github.com; urllib)"
CHUNK_BYTES = 1 << 20
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The default progress/message sink: one flushed line on stderr."""
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
            raise FetchError(f"lock file {path} cannot be read ({yaml_problem(exc)}); fix it or delete it to start "
                             "over") from exc
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
        write_text(self.path, self.HEADER + yaml.safe_dump(body, sort_keys=False))


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
    log: Log = stderr_log


class DownloadFailed(FetchError):
    """No URL delivered the file (network errors, 404, HTML pages); the ``.part`` is kept for resume."""


class _Retryable(Exception):
    """A transient failure: try again (resuming) after a back-off."""


class WrongSource(Exception):
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
        except WrongSource as exc:
            problems.append(f"{url}: {exc}")
            continue
        except _Retryable as exc:
            problems.append(f"{url}: {exc} (gave up after {options.retries} retries)")
            continue
        actual = check_part(part, dest, expected_sha256, expected_size, expected_from, final=not resumed)
        if actual is None:  # resumed onto a stale .part: start over once
            options.log(f"{dest.name}: checksum mismatch after a resumed transfer; downloading again from scratch")
            part.unlink(missing_ok=True)
            try:
                _download_to_part(url, part, dest.name, options)
            except (WrongSource, _Retryable) as exc:
                problems.append(f"{url}: {exc}")
                continue
            actual = check_part(part, dest, expected_sha256, expected_size, expected_from, final=True)
        os.replace(part, dest)
        return actual  # type: ignore[return-value]
    kept = f" The partial file {part} is kept; rerun to resume." if part.exists() else ""
    raise DownloadFailed(f"could not download {dest.name}:\n  " + "\n  ".join(problems) + kept)


def check_part(
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
        detail = f"expected {expected_size} bytes from the manifest, got {size}"
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
    raise WrongSource(f"HTTP {exc.code} {exc.reason}") from exc


def _reject_html(response: http.client.HTTPResponse, name: str) -> None:
    """Login pages, licence forms and Drive quota pages arrive as HTML with status 200."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.lower().startswith("text/html") and not name.lower().endswith((".html", ".htm")):
        raise WrongSource(
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

    Raises :class:`WrongSource` when gdown is missing or Drive refuses (quota, no network).
    """
    try:
        import gdown
    except ImportError as exc:
        raise WrongSource("the gdown package is not installed") from exc
    tmp = dest.with_name(dest.name + ".gdown")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download(id=file_id, output=str(tmp), quiet=not options.progress, resume=True)
    except Exception as exc:  # gdown raises many types (requests errors, FileURLRetrievalError, ...)
        raise WrongSource(f"Google Drive download failed ({type(exc).__name__}: {exc})") from exc
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise WrongSource("Google Drive download produced no file")
    os.replace(tmp, part_path(dest))
