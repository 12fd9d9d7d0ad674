"""docs/fault_injection.md stays true: every test it names exists, and the recovery cases are all listed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "fault_injection.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
# Every test of these files (and every case of the CLI error table) must have its row.
LISTED_IN_FULL = ("tests/test_nan_guard.py", "tests/test_run_recovery.py")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def _references() -> list[tuple[str, str]]:
    return REFERENCE.findall(DOC.read_text(encoding="utf-8"))


def test_every_named_test_exists():
    references = _references()
    assert len(references) > 40
    missing = [f"{file}::{name}" for file, name in references
               if not (ROOT / file).is_file() or name not in _functions(ROOT / file)]
    assert missing == []


def test_the_recovery_tests_and_every_cli_error_case_have_a_row():
    from test_cli_errors import CASES

    named = set(_references())
    for file in LISTED_IN_FULL:
        tests = {name for name in _functions(ROOT / file) if name.startswith("test_")}
        assert tests and {(file, name) for name in tests} <= named, sorted(tests - {n for f, n in named if f == file})
    cases = {case.__name__ for case in CASES}
    assert {("tests/test_cli_errors.py", name) for name in cases} <= named, cases
