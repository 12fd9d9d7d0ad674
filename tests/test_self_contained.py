"""The repository stands alone: no tracked file points outside it, and every relative link in the
docs resolves (a user's clone has no development machine's folders beside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Paths of the development machine, and the reference folder that sits beside the checkout there.
FORBIDDEN = re.compile(r"/work/|/root/|/home/\w+/|\.\./shared\b|\bshared/(realdata|research|paper|reference)\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ALLOWED_FILES = {"tests/test_self_contained.py"}  # the pattern itself (a regular expression, not a path)


def tracked_text_files() -> list[Path]:
    """Files git tracks (the committed ones; a fresh clone has exactly these)."""
    if not (ROOT / ".git").exists():  # a copy of the repository without git: every file counts
        return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for path in tracked_text_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED_FILES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, archives
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()[:120]}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_forbidden_pattern_catches_what_it_should():
    # joined from single names, so that no line of this file spells an outside path
    outside = ["/".join(["", "work", "shared", "realdata"]), "see " + "/".join(["..", "shared", "paper"]),
               "/".join(["shared", "research", "datasets.md"])]
    for bad in outside:
        assert FORBIDDEN.search(bad), bad
    for fine in ("docs/research/datasets.md", "a shared cluster file system", "tests/data/README.md"):
        assert not FORBIDDEN.search(fine), fine


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "tests" / "data").rglob("README.md")), *sorted((ROOT / "results").rglob("*.md")),
            *sorted((ROOT / "config").rglob("*.md"))]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # URLs, mail addresses and in-page anchors
        path = target.split("#", 1)[0]
        if path and not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links to missing files: {broken}"
