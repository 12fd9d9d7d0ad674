"""The errors a user can fix, all under one base :class:`CCDNError`.

The ``ccdn`` command prints any ``CCDNError`` as one line and exits with status 2; every other
exception is a bug and keeps its traceback. Each class also derives from the built-in error it
replaced (``ValueError``, ``RuntimeError``), so existing ``except ValueError`` code keeps working.
This module is the bottom layer: it imports nothing from ``ccdn``.
"""

from __future__ import annotations

__all__ = [
    "CCDNError",
    "ConfigError",
    "DataFormatError",
    "FetchError",
    "CheckpointError",
    "NonFiniteLossError",
    "one_line",
    "yaml_problem",
]


class CCDNError(Exception):
    """An error with a message meant for the user: it names the file or key and the fix."""


class ConfigError(CCDNError, ValueError):
    """A config file, key or value is wrong; the message names it and says what is accepted."""


class DataFormatError(CCDNError, ValueError):
    """A dataset file is missing, truncated or malformed (the message names the file and line)."""


class FetchError(CCDNError, RuntimeError):
    """A download, checksum or extraction failed; nothing half-written is left behind."""


class CheckpointError(CCDNError, RuntimeError):
    """A checkpoint cannot be read; the message names the file and what to do."""


class NonFiniteLossError(CCDNError, RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the indentation after them) folded into single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def yaml_problem(exc: BaseException) -> str:
    """A YAML parser error as "line L, column C: what" (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or one_line(str(exc))
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
