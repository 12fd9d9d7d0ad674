"""``ccdn fetch`` against a local HTTP server on 127.0.0.1 (Range support and cut transfers built in).

Every archive is made here in ``tmp_path``; nothing reaches the internet (Google Drive is replaced
by a stand-in for ``gdown.download``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest
import yaml

import ccdn.cli as cli
from ccdn.data.errors import FetchError
from ccdn.data.fetch import (
    ChecksumLock,
    DownloadOptions,
    FetchOptions,
    fetch_dataset,
    part_path,
    safe_extract,
)
from ccdn.data.sources import ManifestError, load_manifest, parse_manifest

# --------------------------------------------------------------------------------------------------
# a tiny HTTP server with Range support and a "cut the connection once" switch


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        server = self.server
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        range_header = self.headers.get("Range")
        server.requests.append((path, range_header))
        if path not in server.files:
            self.send_error(404)
            return
        body, content_type = server.files[path]
        start = 0
        if range_header and path not in server.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = server.cut_once.pop(path, None)
        if cut is not None:  # announce the full length, send part of it, hang up
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


class LocalServer:
    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files = {}
        self.httpd.cut_once = {}
        self.httpd.ignore_range = set()
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, path: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        self.httpd.files[path] = (body, content_type)
        return self.url + urllib.parse.quote(path)

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.httpd.requests if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


# --------------------------------------------------------------------------------------------------
# helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """``links`` maps a member name to (tarfile.SYMTYPE or LNKTYPE, link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return buffer.getvalue()


def options(tmp_path: Path, base_url: str | None, log: list[str] | None = None, **kw) -> FetchOptions:
    sink = log if log is not None else []
    return FetchOptions(
        root=tmp_path / "raw",
        base_url=base_url,
        lock_path=tmp_path / "lock.yaml",
        download=DownloadOptions(retries=3, backoff_s=0.0, timeout_s=5.0, progress=False, log=sink.append),
        **kw,
    )


def manifest(files: list[dict], dataset: str = "toy") -> object:
    return parse_manifest(
        {"dataset": dataset, "title": "toy", "landmarks": 5, "homepage": "https://example.org", "licence": "test",
         "files": files},
        source="<test manifest>",
    )  # fmt: skip


def plain_file(name: str, **extra) -> dict:
    entry = {"name": name, "description": "a file", "method": "http", "urls": ["http://unused.invalid/x"],
             "archive": "none", "expect": [name]}  # fmt: skip
    entry.update(extra)
    return entry


def run_cli(argv: list[str], monkeypatch) -> int:
    # Only the fetch sub-command is registered here, so this test does not depend on the other
    # sub-command modules importing cleanly; main() itself is the real one.
    monkeypatch.setattr(cli, "COMMANDS", {"fetch": cli.COMMANDS["fetch"]})
    return cli.main(argv)


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --------------------------------------------------------------------------------------------------
# manifests


def test_shipped_manifests_describe_contract_layouts():
    w300 = load_manifest("300w")
    assert {f.dest for f in w300.files} == {"afw", "helen", "lfpw", "ibug", "."}
    boxes = w300.file("bounding_boxes.zip")
    assert "Bounding Boxes/bounding_boxes_lfpw_testset.mat" in boxes.expect
    assert any("300w.zip.001" in step for step in w300.manual_steps)  # multi-part IMAVIS: documented only

    cofw = load_manifest("cofw68")
    repo = cofw.file("cofw68-benchmark-f9af958.zip")
    assert repo.keep == ("COFW68_Data",)
    assert repo.member_checksums[0].md5 == "d6536a2cde2117a6218b4b72fea55685"
    assert "COFW_test_color.mat" in cofw.file("COFW_color.zip").expect

    aflw = load_manifest("aflw")
    images = [f for f in aflw.files if f.method == "manual"]
    assert sorted(f.name for f in images) == ["aflw-images-0.tar.gz", "aflw-images-2.tar.gz", "aflw-images-3.tar.gz"]
    assert all(f.registration and "tugraz" in f.registration for f in images)
    assert aflw.file("AFLWinfo_release.mat").archive == "none"
    assert aflw.file("aflw-images-0.tar.gz").notes.endswith("(insightface PR #2571).")  # ' #' is not a comment

    wflw = load_manifest("wflw")
    assert wflw.file("WFLW_images.tar.gz").gdrive_id == "1hzBd48JIdWTJSsATBEB_eFVvPL1bx6UC"
    assert len(wflw.file("WFLW_annotations.tar.gz").expect) == 9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key(s) ['colour']"),
        ({"urls": []}, "needs at least one entry in 'urls'"),
        ({"sha256": "abc"}, "'sha256' must be a hex digest"),
        ({"dest": "../outside"}, "no '..'"),
        ({"method": "ftp"}, "'method' must be one of"),
    ],
)
def test_manifest_errors_name_the_key_and_the_fix(change, message):
    with pytest.raises(ManifestError) as info:
        manifest([plain_file("a.bin", **change)])
    assert message in str(info.value)
    assert "a.bin" in str(info.value) and "<test manifest>" in str(info.value)


# --------------------------------------------------------------------------------------------------
# downloads


def test_good_download_verifies_records_lock_and_unpacks(tmp_path, server, monkeypatch):
    lists = {f"WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{s}.txt": b"x\n"
             for s in ("train", "test")}  # fmt: skip
    for subset in ("", "_largepose", "_expression", "_illumination", "_makeup", "_occlusion", "_blur"):
        lists[f"WFLW_annotations/list_98pt_test/list_98pt_test{subset}.txt"] = b"y\n"
    annotations = tar_bytes(lists)
    images = tar_bytes({"WFLW_images/0--Parade/0_Parade_marchingband_1_116.jpg": b"\xff\xd8jpeg"})
    server.serve("/wflw/WFLW_annotations.tar.gz", annotations)
    server.serve("/wflw/WFLW_images.tar.gz", images)
    monkeypatch.setenv("CCDN_MIRROR", server.url)  # the env-var route to a mirror
    lock_path = tmp_path / "lock.yaml"
    argv = ["fetch", "wflw", "--root", str(tmp_path / "raw"), "--lock", str(lock_path), "--no-progress"]

    assert run_cli(argv, monkeypatch) == 0

    raw = tmp_path / "raw" / "wflw"
    assert (raw / "WFLW_annotations/list_98pt_test/list_98pt_test_blur.txt").read_bytes() == b"y\n"
    assert (raw / "WFLW_images/0--Parade/0_Parade_marchingband_1_116.jpg").read_bytes() == b"\xff\xd8jpeg"
    lock = yaml.safe_load(lock_path.read_text())
    assert lock["files"]["wflw/WFLW_annotations.tar.gz"]["sha256"] == sha256(annotations)
    assert lock["files"]["wflw/WFLW_images.tar.gz"]["sha256"] == sha256(images)
    assert lock["files"]["wflw/WFLW_images.tar.gz"]["size"] == len(images)
    downloads = tmp_path / "raw" / ".downloads" / "wflw"
    assert all_files(downloads) == ["WFLW_annotations.tar.gz", "WFLW_images.tar.gz"]  # no .part left
    assert not list((tmp_path / "raw").glob(".staging-*"))

    requests_before = len(server.httpd.requests)
    assert run_cli(argv, monkeypatch) == 0  # already in place: nothing is downloaded again
    assert len(server.httpd.requests) == requests_before


def test_cut_transfer_is_resumed_with_range(tmp_path, server):
    data = os.urandom(300_000)
    server.serve("/toy/weights.bin", data)
    server.httpd.cut_once["/toy/weights.bin"] = 100_000
    log: list[str] = []
    toy = manifest([plain_file("weights.bin", sha256=sha256(data))])

    outcome = fetch_dataset(toy, options(tmp_path, server.url, log))

    assert outcome.installed == ["weights.bin"]
    assert server.requests_for("/toy/weights.bin") == [None, "bytes=100000-"]
    final = tmp_path / "raw" / "toy" / "weights.bin"
    assert sha256(final.read_bytes()) == sha256(data)
    assert not part_path(tmp_path / "raw" / ".downloads" / "toy" / "weights.bin").exists()
    assert any("connection closed after 100000 of 300000 bytes" in line for line in log)


@pytest.mark.parametrize(
    ("kept_bytes", "server_ignores_range", "expected_range"),
    [
        (120_000, False, "bytes=120000-"),  # a .part left by an earlier, killed run
        (120_000, True, "bytes=120000-"),  # server answers 200: start over from byte 0
        (200_000, False, "bytes=200000-"),  # .part already complete: 416, then verified and renamed
    ],
)
def test_existing_part_file_is_resumed(tmp_path, server, kept_bytes, server_ignores_range, expected_range):
    data = os.urandom(200_000)
    server.serve("/toy/weights.bin", data)
    if server_ignores_range:
        server.httpd.ignore_range.add("/toy/weights.bin")
    part = part_path(tmp_path / "raw" / ".downloads" / "toy" / "weights.bin")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:kept_bytes] if not server_ignores_range else b"\0" * kept_bytes)

    fetch_dataset(manifest([plain_file("weights.bin", sha256=sha256(data))]), options(tmp_path, server.url))

    assert server.requests_for("/toy/weights.bin") == [expected_range]
    assert (tmp_path / "raw" / "toy" / "weights.bin").read_bytes() == data
    assert not part.exists()


def test_corrupt_download_is_rejected_and_nothing_is_left(tmp_path, server):
    good, served = b"the real file" * 100, b"a tampered file" * 100
    server.serve("/toy/weights.bin", served)

    with pytest.raises(FetchError) as info:
        fetch_dataset(manifest([plain_file("weights.bin", sha256=sha256(good))]), options(tmp_path, server.url))

    message = str(info.value)
    assert "weights.bin" in message and sha256(good) in message and sha256(served) in message
    assert all_files(tmp_path / "raw") == []  # no .part, no final file, nothing unpacked
    assert not (tmp_path / "lock.yaml").exists()


def test_lock_file_mismatch_on_a_later_fetch_is_an_error(tmp_path, server):
    toy = manifest([plain_file("weights.bin")])  # no published checksum: trust on first use
    server.serve("/toy/weights.bin", b"version 1")
    fetch_dataset(toy, options(tmp_path, server.url))
    lock = ChecksumLock.load(tmp_path / "lock.yaml")
    assert lock.get("toy/weights.bin").sha256 == sha256(b"version 1")
    assert lock.get("toy/weights.bin").source == f"mirror {server.url}"

    server.serve("/toy/weights.bin", b"version 2, silently changed upstream")
    with pytest.raises(FetchError) as info:
        fetch_dataset(toy, options(tmp_path, server.url, force=True))

    assert sha256(b"version 1") in str(info.value) and str(tmp_path / "lock.yaml") in str(info.value)
    assert sha256(b"version 2, silently changed upstream") in str(info.value)
    assert ChecksumLock.load(tmp_path / "lock.yaml").get("toy/weights.bin").sha256 == sha256(b"version 1")
    assert (tmp_path / "raw" / "toy" / "weights.bin").read_bytes() == b"version 1"  # untouched


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (None, "application/octet-stream", "HTTP 404"),
        (b"<html>please log in</html>", "text/html; charset=utf-8", "HTML page instead of the file"),
    ],
)
def test_unavailable_files_are_reported_for_manual_placement(tmp_path, server, monkeypatch, capsys, body,
                                                             content_type, reason):  # fmt: skip
    if body is not None:
        server.serve("/aflw/AFLWinfo_release.mat", body, content_type)
    argv = ["fetch", "aflw", "--root", str(tmp_path / "raw"), "--lock", str(tmp_path / "lock.yaml"),
            "--base-url", server.url, "--no-progress", "--retries", "0"]  # fmt: skip

    assert run_cli(argv, monkeypatch) == 1

    err = capsys.readouterr().err
    assert "AFLWinfo_release.mat" in err and reason in err
    assert not (tmp_path / "raw" / "aflw" / "AFLWinfo_release.mat").exists()


# --------------------------------------------------------------------------------------------------
# safe extraction


@pytest.mark.parametrize(
    ("name", "payload", "problem"),
    [
        ("toy.zip", zip_bytes({"data/ok.txt": b"ok", "data/../../evil.txt": b"evil"}), "'..' path component"),
        ("toy.zip", zip_bytes({"data/ok.txt": b"ok", "/tmp/evil.txt": b"evil"}), "absolute path"),
        ("toy.tar.gz", tar_bytes({"data/ok.txt": b"ok", "../evil.txt": b"evil"}), "'..' path component"),
        ("toy.tar.gz", tar_bytes({"data/ok.txt": b"ok", "/tmp/evil.txt": b"evil"}), "absolute path"),
    ],
)
def test_unsafe_archive_is_rejected_and_nothing_is_extracted(tmp_path, server, name, payload, problem):
    server.serve(f"/toy/{name}", payload)
    entry = {"name": name, "description": "archive", "method": "http", "urls": ["http://unused.invalid/a"],
             "expect": ["data/ok.txt"]}  # fmt: skip

    with pytest.raises(FetchError) as info:
        fetch_dataset(manifest([entry]), options(tmp_path, server.url))

    assert problem in str(info.value) and "evil.txt" in str(info.value) and name in str(info.value)
    assert all_files(tmp_path / "raw") == []  # not extracted, downloaded archive removed, no staging
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "raw" / "evil.txt").exists()
    assert not (tmp_path / "lock.yaml").exists()  # an unsafe archive is never trusted


def test_tar_links_leaving_the_target_are_rejected_but_inner_links_work(tmp_path):
    inner = tmp_path / "inner.tar.gz"
    inner.write_bytes(tar_bytes({"d/a.txt": b"A"}, links={"d/sub/link.txt": (tarfile.SYMTYPE, "../a.txt")}))
    safe_extract(inner, tmp_path / "ok", "tar")
    assert (tmp_path / "ok" / "d" / "sub" / "link.txt").read_bytes() == b"A"

    for links in ({"d/up": (tarfile.SYMTYPE, "../../outside")}, {"d/abs": (tarfile.SYMTYPE, "/etc/passwd")},
                  {"d/hard": (tarfile.LNKTYPE, "../outside")}):  # fmt: skip
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(tar_bytes({"d/a.txt": b"A"}, links=links))
        target = tmp_path / "target"
        with pytest.raises(FetchError, match="refusing to extract member"):
            safe_extract(bad, target, "tar")
        assert all_files(target) == []


def test_wrapper_folder_is_skipped_and_keep_limits_what_is_installed(tmp_path, server):
    archive = zip_bytes({"repo-abc123/README.md": b"readme", "repo-abc123/Data/points/1.txt": b"1",
                         "repo-abc123/Data/boxes.bin": b"boxes"})  # fmt: skip
    server.serve("/toy/repo.zip", archive)
    entry = {"name": "repo.zip", "description": "a repository archive", "method": "http",
             "urls": ["http://unused.invalid/a"], "keep": ["Data"], "expect": ["Data/boxes.bin"],
             "member_checksums": [{"path": "Data/boxes.bin", "md5": hashlib.md5(b"boxes").hexdigest()}]}  # fmt: skip

    fetch_dataset(manifest([entry]), options(tmp_path, server.url))

    assert all_files(tmp_path / "raw" / "toy") == ["Data/boxes.bin", "Data/points/1.txt"]


def test_published_member_checksum_mismatch_installs_nothing(tmp_path, server):
    cofw = zip_bytes({"COFW_color/COFW_test_color.mat": b"mat", "COFW_color/COFW_train_color.mat": b"mat"})
    repo = zip_bytes({
        "cofw68-benchmark-f9af958/COFW68_Data/cofw68_test_bboxes.mat": b"not the published file",
        "cofw68-benchmark-f9af958/COFW68_Data/test_annotations/1_points.mat": b"p",
        "cofw68-benchmark-f9af958/COFW68_Data/test_annotations/507_points.mat": b"p",
    })  # fmt: skip
    server.serve("/cofw68/COFW_color.zip", cofw)
    server.serve("/cofw68/cofw68-benchmark-f9af958.zip", repo)

    # The stand-in COFW_color.zip is not the file of the CaltechDATA record (md5 and size published):
    with pytest.raises(FetchError, match="expected 503327162 bytes from the manifest"):
        fetch_dataset("cofw68", options(tmp_path, server.url))
    assert all_files(tmp_path / "raw") == [] and not (tmp_path / "lock.yaml").exists()

    # Without those two facts it is taken, and the repository archive's member check is what refuses:
    real = load_manifest("cofw68")
    cofw_entry = dataclasses.replace(real.file("COFW_color.zip"), md5=None, size=None)
    stand_in = dataclasses.replace(real, files=(cofw_entry, *real.files[1:]))
    with pytest.raises(FetchError) as info:
        fetch_dataset(stand_in, options(tmp_path, server.url))

    assert "cofw68_test_bboxes.mat" in str(info.value) and "d6536a2cde2117a6218b4b72fea55685" in str(info.value)
    assert all_files(tmp_path / "raw" / "cofw68") == ["COFW_test_color.mat", "COFW_train_color.mat"]


# --------------------------------------------------------------------------------------------------
# licence-gated and Drive-only files


def test_missing_aflw_images_print_placement_message_and_exit_nonzero(tmp_path, server, monkeypatch, capsys):
    server.serve("/aflw/AFLWinfo_release.mat", b"MATLAB 5.0 MAT-file stand-in")
    root = tmp_path / "raw"
    argv = ["fetch", "aflw", "--root", str(root), "--lock", str(tmp_path / "lock.yaml"), "--base-url", server.url,
            "--no-progress"]  # fmt: skip

    assert run_cli(argv, monkeypatch) == 1

    out = capsys.readouterr()
    text = out.out + out.err
    for k in (0, 2, 3):
        assert f"aflw-images-{k}.tar.gz" in text
        assert str(root / "aflw" / "aflw" / "data" / "flickr" / str(k) / "*.jpg") in text
    assert str(root / ".downloads" / "aflw" / "aflw-images-0.tar.gz") in text
    assert "learning-recognition-surveillance/downloads/aflw" in text  # the registration page
    assert "licence-gated" in text
    assert not any("/aflw/aflw-images" in path for path, _ in server.httpd.requests)  # never downloaded
    assert (root / "aflw" / "AFLWinfo_release.mat").read_bytes() == b"MATLAB 5.0 MAT-file stand-in"


def test_hand_placed_aflw_archives_are_checksummed_and_unpacked(tmp_path, server, monkeypatch):
    server.serve("/aflw/AFLWinfo_release.mat", b"mat")
    downloads = tmp_path / "raw" / ".downloads" / "aflw"
    downloads.mkdir(parents=True)
    archives = {}
    for k in (0, 2, 3):
        archives[k] = tar_bytes({f"aflw/data/flickr/{k}/image{k:05d}.jpg": b"jpg"})
        (downloads / f"aflw-images-{k}.tar.gz").write_bytes(archives[k])
    lock_path = tmp_path / "lock.yaml"
    argv = ["fetch", "aflw", "--root", str(tmp_path / "raw"), "--lock", str(lock_path), "--base-url", server.url,
            "--no-progress"]  # fmt: skip

    assert run_cli(argv, monkeypatch) == 0

    assert (tmp_path / "raw/aflw/aflw/data/flickr/2/image00002.jpg").read_bytes() == b"jpg"
    lock = ChecksumLock.load(lock_path)
    assert lock.get("aflw/aflw-images-3.tar.gz").sha256 == sha256(archives[3])
    assert lock.get("aflw/aflw-images-3.tar.gz").source.startswith("file found in")


def test_drive_refusal_falls_back_to_manual_instructions(tmp_path, monkeypatch, capsys):
    import gdown

    def refuse(**kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(gdown, "download", refuse)
    monkeypatch.delenv("CCDN_MIRROR", raising=False)
    raw = tmp_path / "raw" / "wflw"
    for name in load_manifest("wflw").file("WFLW_annotations.tar.gz").expect:  # annotations already in place
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_text("x")
    argv = ["fetch", "wflw", "--root", str(tmp_path / "raw"), "--lock", str(tmp_path / "lock.yaml"), "--no-progress"]

    assert run_cli(argv, monkeypatch) == 1

    err = capsys.readouterr().err
    assert "WFLW_images.tar.gz" in err and "Too many users" in err
    assert "https://drive.google.com/file/d/1hzBd48JIdWTJSsATBEB_eFVvPL1bx6UC/view" in err
    assert "pan.baidu.com" in err


def test_drive_download_goes_through_gdown_and_is_verified(tmp_path, monkeypatch):
    import gdown

    images = tar_bytes({"WFLW_images/1--Handshaking/img.jpg": b"jpg"})
    calls = []

    def fake_download(*, id, output, quiet, resume):  # noqa: A002 (gdown's keyword)
        calls.append(id)
        Path(output).write_bytes(images)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    monkeypatch.delenv("CCDN_MIRROR", raising=False)
    wflw = load_manifest("wflw")
    raw = tmp_path / "raw" / "wflw"
    for name in wflw.file("WFLW_annotations.tar.gz").expect:
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_text("x")

    outcome = fetch_dataset(wflw, options(tmp_path, None))

    assert outcome.complete and outcome.installed == ["WFLW_images.tar.gz"]
    assert calls == ["1hzBd48JIdWTJSsATBEB_eFVvPL1bx6UC"]
    assert (raw / "WFLW_images/1--Handshaking/img.jpg").read_bytes() == b"jpg"
    assert ChecksumLock.load(tmp_path / "lock.yaml").get("wflw/WFLW_images.tar.gz").sha256 == sha256(images)


def test_fetch_refuses_to_mix_real_files_into_a_synthetic_root(tmp_path, server):
    raw = tmp_path / "raw" / "toy"
    raw.mkdir(parents=True)
    (raw / "SYNTHETIC.json").write_text('{"synthetic": true}')
    with pytest.raises(FetchError, match="synthetic"):
        fetch_dataset(manifest([plain_file("weights.bin")]), options(tmp_path, server.url))


# --------------------------------------------------------------------------------------------------
# bounded extraction


def deflated_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_small_archive_expanding_past_the_ratio_bound_installs_and_records_nothing(tmp_path, server):
    from ccdn.data.archive import MAX_RATIO, RATIO_FLOOR_BYTES

    zeros = b"\0" * (RATIO_FLOOR_BYTES + 2**20)  # 65 MiB of zeros deflate to ~65 kB: a ratio of ~1000
    bomb = deflated_zip({"data/ok.txt": b"ok", "data/zeros.bin": zeros})
    assert len(bomb) * MAX_RATIO < RATIO_FLOOR_BYTES  # so the floor is the bound
    server.serve("/toy/bomb.zip", bomb)
    entry = {"name": "bomb.zip", "description": "archive", "method": "http", "urls": ["http://unused.invalid/a"],
             "expect": ["data/ok.txt"]}  # fmt: skip

    with pytest.raises(FetchError) as info:
        fetch_dataset(manifest([entry]), options(tmp_path, server.url))

    message = str(info.value)
    assert "bomb.zip: unpacking would write" in message and f"{len(zeros) + 2} bytes in 2 members" in message
    assert "nothing was installed or recorded" in message
    assert all_files(tmp_path / "raw") == []  # no staging, no content, downloaded archive removed
    assert not (tmp_path / "lock.yaml").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_manifest_bounds_limit_size_and_member_count(tmp_path, server, kind):
    members = {f"data/{i}.txt": b"x" * 100 for i in range(40)}
    payload = zip_bytes(members) if kind == "zip" else tar_bytes(members)
    name = "toy.zip" if kind == "zip" else "toy.tar.gz"
    server.serve(f"/toy/{name}", payload)
    base = {"name": name, "description": "archive", "method": "http", "urls": ["http://unused.invalid/a"],
            "expect": ["data/0.txt"]}  # fmt: skip
    for bound, announced in (({"unpacked_size": 2000}, "4000 bytes in 40 members"),  # 2000 + 25 % < 4000
                             ({"members": 8}, "4000 bytes in 40 members")):  # 8 + 25 % + 16 < 40
        with pytest.raises(FetchError, match=announced):
            fetch_dataset(manifest([{**base, **bound}]), options(tmp_path, server.url))
        assert all_files(tmp_path / "raw") == [] and not (tmp_path / "lock.yaml").exists()
    fetch_dataset(manifest([{**base, "unpacked_size": 4000, "members": 40}]), options(tmp_path, server.url))
    assert len(all_files(tmp_path / "raw" / "toy" / "data")) == 40


def test_the_byte_count_while_writing_stops_an_archive_whose_headers_understate(tmp_path, monkeypatch):
    import ccdn.data.archive as archive
    from ccdn.data.archive import ExtractionLimits

    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(deflated_zip({"a.bin": b"\0" * 5 * archive.COPY_CHUNK, "b.bin": b"\0" * 10}))
    monkeypatch.setattr(archive, "_check_totals", lambda *args: None)  # as if the headers had lied
    with pytest.raises(FetchError, match=r"more than 3145728 bytes \(stopped at 'a.bin'\)"):
        safe_extract(bomb, tmp_path / "out", "zip", ExtractionLimits(3 * archive.COPY_CHUNK, 10, "test"))
    assert (tmp_path / "out" / "a.bin").stat().st_size <= 3 * archive.COPY_CHUNK  # stopped, not written out


def test_a_published_md5_and_size_are_checked_before_unpacking(tmp_path, server):
    archive = zip_bytes({"data/ok.txt": b"ok"})
    server.serve("/toy/rec.zip", archive)
    base = {"name": "rec.zip", "description": "archive", "method": "http", "urls": ["http://unused.invalid/a"],
            "expect": ["data/ok.txt"], "registration": "https://data.example.org/records/1"}  # fmt: skip
    wrong_md5 = hashlib.md5(b"another file").hexdigest()
    with pytest.raises(FetchError, match=f"published md5 is {wrong_md5} \\(published at https://data.example.org"):
        fetch_dataset(manifest([{**base, "md5": wrong_md5}]), options(tmp_path, server.url))
    assert all_files(tmp_path / "raw") == [] and not (tmp_path / "lock.yaml").exists()
    fetch_dataset(manifest([{**base, "md5": hashlib.md5(archive).hexdigest(), "size": len(archive)}]),
                  options(tmp_path, server.url))
    assert all_files(tmp_path / "raw" / "toy") == ["data/ok.txt"]


def test_shipped_manifests_carry_the_published_cofw_checksum_and_true_sources():
    cofw = load_manifest("cofw68").file("COFW_color.zip")
    assert (cofw.md5, cofw.size, cofw.members) == ("8b21d126c4e1fb307cb463578eef0511", 503_327_162, 2)
    aflw_text = (Path(load_manifest("aflw").path)).read_text()
    assert "BEL_regression" in aflw_text and "DS_DATA.md" in aflw_text


def test_an_html_answer_for_any_ibug_annotation_zip_asks_for_placement_by_hand(tmp_path, server, monkeypatch,
                                                                               capsys):
    ibug = ("afw.zip", "helen.zip", "lfpw.zip", "ibug.zip")
    for name in ibug:
        server.serve(f"/300w/{name}", b"<html><form>register</form></html>", "text/html; charset=utf-8")
    argv = ["fetch", "300w", "--root", str(tmp_path / "raw"), "--lock", str(tmp_path / "lock.yaml"),
            "--base-url", server.url, "--no-progress", "--retries", "0"]  # fmt: skip
    assert run_cli(argv, monkeypatch) == 1
    err = capsys.readouterr().err
    for name in ibug:
        block = err[err.index(f"  {name}  ("):]
        block = block[: block.index("then EITHER")]
        assert "HTML page instead of the file" in block, name
        assert "get it from: https://ibug.doc.ic.ac.uk/resources/facial-point-annotations/" in block, name
