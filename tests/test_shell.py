from __future__ import annotations

import pytest

from labkit.instruments.shell import CommandError, MissingProgram, run


def test_run_returns_output() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2"], 10)
    assert (done.exit_code, done.stdout, done.stderr) == (0, "out\n", "err\n")


def test_nonzero_exit_raises_with_argv_code_and_output() -> None:
    with pytest.raises(CommandError) as caught:
        run(["sh", "-c", "echo partial; echo broken >&2; exit 3"], 10, hint="do this instead")
    error = caught.value
    assert error.argv == ["sh", "-c", "echo partial; echo broken >&2; exit 3"]
    assert error.exit_code == 3
    assert error.stdout == "partial\n"
    assert "broken" in str(error) and "do this instead" in str(error)


def test_check_false_returns_the_exit_code() -> None:
    assert run(["sh", "-c", "exit 4"], 10, check=False).exit_code == 4


def test_timeout_raises_with_no_exit_code() -> None:
    with pytest.raises(CommandError) as caught:
        run(["sleep", "5"], 0.2)
    assert caught.value.exit_code is None
    assert "timed out" in str(caught.value)


def test_missing_program_names_the_package() -> None:
    with pytest.raises(MissingProgram, match="apt-get install"):
        run(["labkit-no-such-program"], 5)
