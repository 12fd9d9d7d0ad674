"""User errors share one base and the CLI recognises them by type: one line, exit 2; bugs keep their traceback."""

from __future__ import annotations

import pytest

import ccdn.grid.cli as grid_cli
from ccdn import cli
from ccdn.checkpoint import CheckpointError
from ccdn.config import ConfigError
from ccdn.data.errors import DataFormatError, FetchError
from ccdn.data.prepare import CacheMismatchError
from ccdn.data.sources import ManifestError
from ccdn.errors import CCDNError, NonFiniteLossError
from ccdn.evaluate import EvaluationError
from ccdn.grid import GridError
from ccdn.models.registry import UnknownModelError
from ccdn.report import ReportError


@pytest.mark.parametrize(
    "error",
    [ConfigError, DataFormatError, FetchError, CheckpointError, NonFiniteLossError, CacheMismatchError,
     ManifestError, EvaluationError, GridError, UnknownModelError, ReportError],
)
def test_every_user_facing_error_is_a_ccdn_error(error):
    assert issubclass(error, CCDNError)


def test_old_base_classes_still_catch_them():
    assert issubclass(ConfigError, ValueError) and issubclass(DataFormatError, ValueError)
    assert issubclass(CheckpointError, RuntimeError) and issubclass(UnknownModelError, KeyError)


def test_cli_prints_a_user_error_as_one_line_and_exits_2(monkeypatch, capsys):
    def broken(args):
        raise CheckpointError("runs/x/checkpoints/last.pt is truncated; delete it to resume from epoch_002.pt")

    monkeypatch.setattr(grid_cli, "run", broken)
    assert cli.main(["grid", "check", "config/config.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "ccdn grid: error: runs/x/checkpoints/last.pt is truncated; delete it to resume from epoch_002.pt\n"


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    def buggy(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(grid_cli, "run", buggy)
    with pytest.raises(ZeroDivisionError):
        cli.main(["grid", "check", "config/config.yaml"])
