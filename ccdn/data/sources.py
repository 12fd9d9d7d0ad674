"""Per-dataset download manifests: where each file comes from and what it unpacks to.

The facts (URLs, gating, archive names, the few known checksums) live in
``ccdn/data/manifests/<dataset>.yaml`` so they can be corrected without touching code; this module
loads them into frozen dataclasses and validates them strictly, because a typo in a manifest would
otherwise surface as a confusing download or extraction failure much later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ccdn.data.errors import DataFormatError
from ccdn.errors import yaml_problem
from ccdn.data.schemes import DATASETS as DATASET_TABLE

MANIFEST_DIR = Path(__file__).with_name("manifests")
DATASETS: tuple[str, ...] = tuple(DATASET_TABLE)  # the one dataset table (ccdn.data.schemes)
METHODS: tuple[str, ...] = ("http", "gdrive", "manual")
ARCHIVE_KINDS: tuple[str, ...] = ("zip", "tar", "none")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")

_TOP_KEYS = {
    "dataset": True, "title": True, "landmarks": True, "homepage": True, "licence": True,
    "citation": False, "files": True, "manual_steps": False, "notes": False,
}  # fmt: skip
_FILE_KEYS = {
    "name": True, "description": True, "method": True, "urls": False, "gdrive_id": False,
    "sha256": False, "md5": False, "size": False, "size_note": False, "unpacked_size": False, "members": False,
    "archive": False, "dest": False,
    "keep": False, "expect": True, "member_checksums": False, "licence": False,
    "registration": False, "notes": False,
}  # fmt: skip
_MEMBER_KEYS = {"path": True, "md5": False, "sha256": False}


class ManifestError(DataFormatError):
    """A manifest file is malformed; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class MemberChecksum:
    """A checksum for one file *inside* an archive (used where only that file's hash is published)."""

    path: str
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """One downloadable (or hand-placed) file of a dataset and where its content lands.

    ``dest`` is a folder relative to the dataset's raw root (``data/raw/<dataset>/``): an archive's
    content is unpacked into it, a plain file (``archive: none``) lands at ``dest/name``.
    ``expect`` are glob patterns relative to ``dest`` that must each match at least one path once
    the file is in place: they locate the content inside an archive (whatever wrapper folders it
    has) and tell ``fetch`` that the file is already present. ``keep`` limits which top-level
    entries of that content are kept (e.g. only ``COFW68_Data`` from a whole repository).
    """

    name: str
    description: str
    method: str
    expect: tuple[str, ...]
    urls: tuple[str, ...] = ()
    gdrive_id: str | None = None
    sha256: str | None = None
    md5: str | None = None  # a published md5 (e.g. a data repository's record), checked on every fetch
    size: int | None = None
    size_note: str | None = None
    unpacked_size: int | None = None  # bytes the archive unpacks to (bounds extraction, +25 %)
    members: int | None = None  # entries in the archive (bounds extraction, +25 %)
    archive: str = "none"
    dest: str = "."
    keep: tuple[str, ...] = ()
    member_checksums: tuple[MemberChecksum, ...] = ()
    licence: str | None = None
    registration: str | None = None
    notes: str | None = None

    @property
    def is_archive(self) -> bool:
        return self.archive != "none"


@dataclass(frozen=True)
class DatasetManifest:
    """Everything ``ccdn fetch`` needs to know about one dataset."""

    dataset: str
    title: str
    landmarks: int
    homepage: str
    licence: str
    files: tuple[SourceFile, ...]
    citation: str | None = None
    manual_steps: tuple[str, ...] = ()
    notes: str | None = None
    path: Path | None = None

    def file(self, name: str) -> SourceFile:
        for source in self.files:
            if source.name == name:
                return source
        raise KeyError(f"{self.dataset} has no file {name!r}; known: {[f.name for f in self.files]}")


def list_datasets() -> list[str]:
    """Names of the datasets that ship a manifest."""
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))


def load_manifest(dataset: str) -> DatasetManifest:
    """Load and validate the shipped manifest of ``dataset`` (``300w``, ``cofw68``, ``aflw``, ``wflw``)."""
    path = MANIFEST_DIR / f"{dataset}.yaml"
    if not path.is_file():
        raise ManifestError(f"no manifest for dataset {dataset!r} (looked for {path}); known: {list_datasets()}")
    manifest = load_manifest_file(path)
    if manifest.dataset != dataset:
        raise ManifestError(f"{path}: 'dataset' is {manifest.dataset!r} but the file is named for {dataset!r}")
    return manifest


def load_manifest_file(path: Path | str) -> DatasetManifest:
    """Load and validate a manifest from any path (tests and private mirrors use their own)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({yaml_problem(exc)}); fix the YAML syntax") from exc
    return parse_manifest(raw, source=str(path), path=path)


def parse_manifest(raw: Any, *, source: str = "<manifest>", path: Path | None = None) -> DatasetManifest:
    """Validate a manifest already parsed from YAML; ``source`` names it in error messages."""
    top = _check_mapping(raw, _TOP_KEYS, source)
    files_raw = top["files"]
    if not isinstance(files_raw, list) or not files_raw:
        raise ManifestError(f"{source}: 'files' must be a non-empty list of file entries")
    files = tuple(_parse_file(entry, f"{source}: files[{i}]") for i, entry in enumerate(files_raw))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ManifestError(f"{source}: file names must be unique, got {names}")
    landmarks = top["landmarks"]
    if not isinstance(landmarks, int) or landmarks <= 0:
        raise ManifestError(f"{source}: 'landmarks' must be a positive integer, got {landmarks!r}")
    return DatasetManifest(
        dataset=_text(top, "dataset", source),
        title=_text(top, "title", source),
        landmarks=landmarks,
        homepage=_text(top, "homepage", source),
        licence=_text(top, "licence", source),
        files=files,
        citation=_optional_text(top, "citation", source),
        manual_steps=_text_list(top, "manual_steps", source),
        notes=_optional_text(top, "notes", source),
        path=path,
    )


def _parse_file(raw: Any, where: str) -> SourceFile:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        where = f"{where} ({raw['name']})"
    entry = _check_mapping(raw, _FILE_KEYS, where)
    name = _text(entry, "name", where)
    method = _text(entry, "method", where)
    if method not in METHODS:
        raise ManifestError(f"{where}: 'method' must be one of {list(METHODS)}, got {method!r}")
    urls = _text_list(entry, "urls", where)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ManifestError(f"{where}: URL {url!r} must start with http:// or https://")
    gdrive_id = _optional_text(entry, "gdrive_id", where)
    registration = _optional_text(entry, "registration", where)
    if method == "http" and not urls:
        raise ManifestError(f"{where}: method 'http' needs at least one entry in 'urls'")
    if method == "gdrive" and not gdrive_id:
        raise ManifestError(f"{where}: method 'gdrive' needs 'gdrive_id' (the Google Drive file id)")
    if method == "manual" and not registration:
        raise ManifestError(f"{where}: method 'manual' needs 'registration' (the page where users request it)")
    archive = entry.get("archive") or _archive_kind_from_name(name)
    if archive not in ARCHIVE_KINDS:
        raise ManifestError(f"{where}: 'archive' must be one of {list(ARCHIVE_KINDS)}, got {archive!r}")
    dest = _relative_path(entry.get("dest", "."), "dest", where)
    expect = tuple(_relative_path(p, "expect", where) for p in _text_list(entry, "expect", where))
    if not expect:
        raise ManifestError(f"{where}: 'expect' must list at least one path pattern the file provides")
    keep = tuple(_relative_path(p, "keep", where) for p in _text_list(entry, "keep", where))
    if keep and archive == "none":
        raise ManifestError(f"{where}: 'keep' only applies to archives")
    if archive == "none" and (entry.get("unpacked_size") is not None or entry.get("members") is not None):
        raise ManifestError(f"{where}: 'unpacked_size' and 'members' only apply to archives")
    return SourceFile(
        name=name,
        description=_text(entry, "description", where),
        method=method,
        expect=expect,
        urls=urls,
        gdrive_id=gdrive_id,
        sha256=_checksum(entry.get("sha256"), _SHA256, "sha256", where),
        md5=_checksum(entry.get("md5"), _MD5, "md5", where),
        size=_size(entry.get("size"), where),
        size_note=_optional_text(entry, "size_note", where),
        unpacked_size=_size(entry.get("unpacked_size"), where, "unpacked_size"),
        members=_size(entry.get("members"), where, "members"),
        archive=archive,
        dest=dest,
        keep=keep,
        member_checksums=_member_checksums(entry.get("member_checksums"), where, is_archive=archive != "none"),
        licence=_optional_text(entry, "licence", where),
        registration=registration,
        notes=_optional_text(entry, "notes", where),
    )


def _archive_kind_from_name(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "zip"
    if re.search(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2|tar\.xz|txz)$", lowered):
        return "tar"
    return "none"


def _member_checksums(raw: Any, where: str, *, is_archive: bool) -> tuple[MemberChecksum, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ManifestError(f"{where}: 'member_checksums' must be a list of {{path, md5|sha256}} entries")
    if raw and not is_archive:
        raise ManifestError(f"{where}: 'member_checksums' only applies to archives; use 'sha256' for a plain file")
    members = []
    for i, item in enumerate(raw):
        spot = f"{where}: member_checksums[{i}]"
        entry = _check_mapping(item, _MEMBER_KEYS, spot)
        md5 = _checksum(entry.get("md5"), _MD5, "md5", spot)
        sha256 = _checksum(entry.get("sha256"), _SHA256, "sha256", spot)
        if md5 is None and sha256 is None:
            raise ManifestError(f"{spot}: give 'md5' or 'sha256'")
        members.append(MemberChecksum(_relative_path(entry["path"], "path", spot), md5, sha256))
    return tuple(members)


def _check_mapping(raw: Any, keys: dict[str, bool], where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(keys)}")
    missing = sorted(k for k, required in keys.items() if required and raw.get(k) in (None, ""))
    if missing:
        raise ManifestError(f"{where}: missing required key(s) {missing}")
    return raw


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _optional_text(raw: dict[str, Any], key: str, where: str) -> str | None:
    return None if raw.get(key) is None else _text(raw, key, where)


def _text_list(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ManifestError(f"{where}: {key!r} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _relative_path(value: Any, key: str, where: str) -> str:
    """Manifest paths are POSIX, relative and never climb out of the dataset root."""
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: {key!r} entries must be non-empty strings, got {value!r}")
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or "\\" in value:
        raise ManifestError(f"{where}: {key!r} path {value!r} must be relative, with '/' separators and no '..'")
    return str(posix)


def _checksum(value: Any, pattern: re.Pattern[str], kind: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value.lower()):
        raise ManifestError(f"{where}: {kind!r} must be a hex digest ({kind}), got {value!r}")
    return value.lower()


def _size(value: Any, where: str, key: str = "size") -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ManifestError(f"{where}: {key!r} must be a positive whole number (or null), got {value!r}")
    return value
