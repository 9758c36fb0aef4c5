"""The CLI prints a user's error with its hint and no traceback, the docker SDK's errors too; a bug keeps its
traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import docker.errors
import pandas as pd
import pytest
import requests

from labkit.app import cli
from labkit.core.session import LabSession
from labkit.errors import BadParameter, EngineError, EngineLost, EngineTimeout, LabkitError, NotPrepared
from labkit.instruments import engine


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


def test_an_error_of_the_docker_sdk_reaches_the_user_as_a_labkit_error_with_a_hint(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(args: argparse.Namespace) -> int:
        raise docker.errors.APIError("409 Client Error", _response(409), explanation="the name is already in use")

    monkeypatch.setattr(cli, "cmd_claims", refused)
    assert cli.main(["claims"]) == 2
    err = capsys.readouterr().err
    assert "labkit claims: The Docker Engine refused labkit claims (HTTP 409): the name is already in use." in err
    assert "`labkit clean`" in err and "Traceback" not in err


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


@pytest.mark.parametrize(("raised", "kind", "said"), [
    (docker.errors.ImageNotFound("404", _response(404), explanation="No such image: labkit/x"), NotPrepared,
     "`labkit setup`"),
    (docker.errors.NotFound("404", _response(404), explanation="No such container: abc"), EngineError,
     "Something removed it"),
    (docker.errors.APIError("500", _response(500), explanation="no space left on device"), EngineError,
     "journalctl -u docker"),
    (docker.errors.ContainerError("c1", 3, ["false"], "labkit/busybox", b"it failed\n"), EngineError,
     "its stderr"),
    (requests.exceptions.ConnectionError("Connection aborted."), EngineLost, "make lab"),
    (requests.exceptions.ReadTimeout("read timed out"), EngineTimeout, "LABKIT_ENGINE_TIMEOUT"),
    (docker.errors.DockerException("Error while fetching server API version"), EngineError, "labkit doctor"),
], ids=["image-not-found", "gone", "server-error", "container-failed", "connection", "timeout", "other"])
def test_each_sdk_error_becomes_a_labkit_error_that_says_what_to_do(raised: Exception, kind: type[LabkitError],
                                                                     said: str) -> None:
    error = engine.engine_error(raised, "the experiment 'x'", " Kept in /results.")
    assert isinstance(error, kind) and isinstance(error, LabkitError)
    assert said in error.hint and "the experiment 'x'" in error.message and "Kept in /results." in error.message


def test_what_is_not_the_sdks_is_left_alone() -> None:
    assert engine.engine_error(KeyError("a bug"), "anything") is None


def test_an_sdk_error_in_an_experiment_reaches_the_notebook_as_a_labkit_error(tmp_path: Path) -> None:
    lab = LabSession("99-topic", quick=True, results_root=tmp_path, client=None, replay=None)

    def experiment() -> pd.DataFrame:
        raise docker.errors.ImageNotFound("404", _response(404), explanation="No such image: labkit/x")

    with pytest.raises(NotPrepared, match=r"(?s)the experiment 'sizes'.*kept in .*`labkit setup`"):
        lab.measure("sizes", experiment)


def test_record_refuses_an_uncommitted_tree_before_anything_runs(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from labkit.app import runner
    from labkit.core import session

    def nothing_may_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a notebook was looked up before the tree was checked")

    monkeypatch.setattr(session, "uncommitted", lambda root=None: ["labkit/labs/new_lab.py"])
    monkeypatch.setattr(runner, "discover", nothing_may_run)
    monkeypatch.setattr(cli.undo, "undo_orphans", list)  # nothing of the host's is touched either
    assert cli.main(["run", "--record", "01"]) == 2
    err = capsys.readouterr().err
    assert "only from a committed tree; not committed: labkit/labs/new_lab.py." in err and "Commit first" in err
