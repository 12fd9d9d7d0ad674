"""``ccdn fetch DATASET``: download, verify and safely unpack a dataset into ``data/raw/<dataset>/``.

This module is the per-dataset procedure and the command line; the pieces live beside it:
:mod:`ccdn.data.download` (resumable HTTP/Drive downloads, sha256 checks, the lock file, trust on
first use) and :mod:`ccdn.data.archive` (checked extraction into a staging folder, moves into
place). Licence-gated and Drive-only files cannot always be downloaded: ``fetch`` checks whether
they are in place and otherwise says exactly which file to put where, and exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ccdn.data.archive import (
    expected_present,
    find_content_root,
    merge_move,
    move_file,
    extraction_limits,
    safe_extract,
)
from ccdn.data.download import (  # noqa: F401  (re-exported: the public fetch API)
    ChecksumLock,
    DownloadFailed,
    DownloadOptions,
    LockEntry,
    WrongSource,
    check_part,
    download_gdrive,
    download_verified,
    file_digest,
    part_path,
    stderr_log,
)
from ccdn.data.errors import FetchError
from ccdn.data.sources import DatasetManifest, SourceFile, list_datasets, load_manifest


DEFAULT_ROOT = Path("data/raw")
DEFAULT_LOCK = Path(__file__).with_name("checksums.lock.yaml")
LOCK_ENV = "CCDN_LOCK_FILE"
MIRROR_ENV = "CCDN_MIRROR"
SYNTHETIC_MARKER = "SYNTHETIC.json"


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
        except WrongSource as exc:
            outcome.missing.append(MissingFile(source, str(exc)))
            return
        if sha is None:
            outcome.missing.append(MissingFile(source, _manual_reason(source)))
            return
        downloaded_now = True
    size = file_path.stat().st_size
    try:
        _check_published(source, file_path, size)
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


def _check_published(source: SourceFile, path: Path, size: int) -> None:
    """A published size and md5 (e.g. a data repository's record) must match before anything is unpacked."""
    where = f" (published at {source.registration})" if source.registration else ""
    if source.size is not None and size != source.size:
        raise FetchError(f"{path}: {size} bytes, but the published size is {source.size}{where}. It is truncated "
                         "or not the right file: delete it and fetch again.")
    if source.md5 is not None:
        actual = file_digest(path, "md5")
        if actual != source.md5:
            raise FetchError(f"{path}: md5 is {actual}, but the published md5 is {source.md5}{where}. It is not "
                             "the right file or it is damaged: delete it and fetch again.")


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
            raise WrongSource("Google Drive downloads are disabled (--no-gdrive)")
        options.download.log(f"{source.name}: downloading from Google Drive with gdown")
        download_gdrive(source.gdrive_id or "", file_path, options=options.download)
        actual = check_part(part_path(file_path), file_path, expected, source.size, expected_from, final=True)
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
        raise WrongSource(str(exc)) from exc


def _place(source: SourceFile, file_path: Path, raw_root: Path, root: Path) -> None:
    """Unpack (or move) a verified file into the raw root; nothing moves unless all checks pass."""
    dest_dir = raw_root / source.dest
    if not source.is_archive:
        move_file(file_path, dest_dir / source.name)
        return
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".staging-{raw_root.name}-"))
    try:
        limits = extraction_limits(file_path.stat().st_size, unpacked_size=source.unpacked_size,
                                   members=source.members)
        safe_extract(file_path, staging, source.archive, limits)
        content = find_content_root(staging, source.expect)
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
            merge_move(entry, dest_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_members(source: SourceFile, archive: Path, content: Path) -> None:
    for member in source.member_checksums:
        path = content / member.path
        if not path.is_file():
            raise FetchError(f"{archive}: member {member.path!r} with a checksum in the manifest is missing")
        for algorithm, expected in (("md5", member.md5), ("sha256", member.sha256)):
            if expected is None:
                continue
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise FetchError(
                    f"{archive}: member {member.path!r} has {algorithm} {actual}, expected {expected} "
                    "(the manifest's checksum). Nothing was installed; the archive is not the expected version."
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
        stderr_log(f"note: {step}")
    if outcome.complete:
        print(f"{manifest.dataset}: ready in {outcome.raw_root}")
        return 0
    stderr_log(placement_message(manifest, outcome))
    return 1
