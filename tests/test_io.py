"""``ccdn.io``: one atomic writer — the file appears whole or not at all, with the umask's permissions."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
import yaml

from ccdn import io


@pytest.fixture
def umask():
    """Set a umask for the test and restore the caller's afterwards."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_permissions_follow_the_umask_not_mkstemp(tmp_path, umask, mask, expected):
    umask(mask)
    path = io.write_text(tmp_path / "sub" / "a.txt", "hello\n")
    assert path.read_text() == "hello\n" and _mode(path) == expected
    assert os.listdir(tmp_path / "sub") == ["a.txt"]  # no temporary file left


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = io.write_text(tmp_path / "config.yaml", "old: 1\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with io.atomic_open(path, "w") as handle:
            handle.write("new: 2\n")
            raise RuntimeError("disk on fire")
    assert path.read_text() == "old: 1\n"
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_each_format_round_trips(tmp_path):
    io.write_yaml(tmp_path / "c.yaml", {"b": 1, "a": [1, 2]})
    assert list(yaml.safe_load((tmp_path / "c.yaml").read_text())) == ["b", "a"]  # order kept
    io.write_json(tmp_path / "m.json", {"x": 1.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1.5}
    assert (tmp_path / "m.json").read_text().endswith("}\n")
    io.write_npz(tmp_path / "s.npz", {"a": np.arange(3)})
    with np.load(tmp_path / "s.npz") as data:
        assert data["a"].tolist() == [0, 1, 2]
    io.save_torch(tmp_path / "w.pt", {"w": torch.ones(2)})
    assert torch.load(tmp_path / "w.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]
    io.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "c.yaml", "m.json", "s.npz", "w.pt"]


def test_text_is_utf8_with_line_endings_as_given(tmp_path):
    io.write_text(tmp_path / "t.txt", "synthetic data — not a reproduction\r\nx\n")
    assert (tmp_path / "t.txt").read_bytes() == "synthetic data — not a reproduction\r\nx\n".encode()


def test_atomic_path_serves_writers_that_want_a_file_name(tmp_path):
    target = tmp_path / "figure.png"
    with pytest.raises(ValueError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("renderer failed")
    assert not target.exists() and os.listdir(tmp_path) == []
    with io.atomic_path(target) as tmp:
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png"


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with io.atomic_open("x", "a"):
            pass
