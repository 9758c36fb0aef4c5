"""The CLI prints a user's error with its hint and no traceback; a bug keeps its traceback."""

from __future__ import annotations

import argparse

import pytest

from labkit.app import cli
from labkit.errors import BadParameter


def test_an_error_a_user_can_fix_prints_the_fix_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["setup", "99"]) == 2
    err = capsys.readouterr().err
    assert "labkit setup: notebook '99' not found." in err and "Choose from: 01-what-a-container-is" in err
    assert "Traceback" not in err


def test_a_bug_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setattr(cli, "cmd_claims", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["claims"])


def test_bad_parameters_are_both_labkit_errors_and_value_errors() -> None:
    error = BadParameter("repeats=0: need a whole number >= 1.", "E.g. repeats=5.")
    assert isinstance(error, ValueError) and str(error) == "repeats=0: need a whole number >= 1.\nE.g. repeats=5."
