"""labkit.instruments.undo: a host-wide change journalled before it is made is undone by the next command when
the process that made it died, and only then; records from another boot or unreadable ones do no harm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labkit.instruments import procfs, undo

UNDONE: list[dict[str, Any]] = []


def mark_undone(detail: dict[str, Any]) -> None:
    """The undo under test: remembers what it was asked to undo."""
    UNDONE.append(detail)


@pytest.fixture(autouse=True)
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABKIT_STATE", str(tmp_path))
    monkeypatch.setattr(undo, "UNDO_PREFIX", "tests.")  # this module's undo stands in for an instrument's
    UNDONE.clear()
    return undo.journal_dir()


def fail_undo(detail: dict[str, Any]) -> None:
    raise OSError("still busy")


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def _orphan_of(change: undo.Change, **fields: Any) -> Path:
    """A copy of `change`'s record as another process (or boot) would have left it."""
    record = json.loads(change.path.read_text())
    record.update(fields)
    path = change.path.with_name(f"orphan-{len(list(change.path.parent.iterdir()))}.json")
    path.write_text(json.dumps(record))
    return path


def test_a_change_of_a_live_process_is_left_alone_and_undone_with_its_record_when_the_block_ends(
        journal: Path) -> None:
    with undo.recorded("thing changed", mark_undone, {"thing": 1}) as change:
        assert change.path.exists() and change.maker_alive()
        assert undo.orphans() == [] and undo.undo_orphans() == [] and UNDONE == []
    assert not change.path.exists() and UNDONE == [{"thing": 1}]


def test_an_undo_that_fails_at_the_end_of_the_block_keeps_the_record(journal: Path) -> None:
    with pytest.raises(OSError, match="still busy"), undo.recorded("thing changed", fail_undo, {}) as change:
        pass
    assert change.path.exists()  # the next command tries again


def test_a_dead_makers_change_is_undone_once_and_its_record_removed(journal: Path) -> None:
    dead = _dead_pid()
    with undo.recorded("thing changed", mark_undone, {"thing": 2}) as change:
        left = _orphan_of(change, pid=dead)
    UNDONE.clear()  # the block's own undo
    assert [c.path for c in undo.orphans()] == [left]
    assert undo.undo_orphans() == [f"thing changed (left by pid {dead}): undone"]
    assert UNDONE == [{"thing": 2}] and not left.exists()
    assert undo.undo_orphans() == [] and UNDONE == [{"thing": 2}]


def test_a_reused_pid_does_not_pass_for_the_maker(journal: Path) -> None:
    with undo.recorded("thing changed", mark_undone, {"thing": 3}) as change:
        left = _orphan_of(change, start_ticks=procfs.start_ticks("self") - 1)  # this pid, another start
        assert [c.path for c in undo.orphans()] == [left]


def test_a_record_from_another_boot_is_dropped_without_undoing(journal: Path) -> None:
    with undo.recorded("thing changed", mark_undone, {"thing": 4}) as change:
        left = _orphan_of(change, boot_id="00000000-0000-0000-0000-000000000000")
    assert undo.undo_orphans() == [] and UNDONE == [{"thing": 4}] and not left.exists()  # the block's undo only


def test_a_failing_undo_keeps_its_record_for_the_next_command(journal: Path) -> None:
    with undo.recorded("thing changed", mark_undone, {"thing": 5}) as change:
        left = _orphan_of(change, pid=_dead_pid(), undo="tests.test_undo:no_such_function")
    assert undo.undo_orphans() == [] and left.exists()


def test_an_undo_outside_labkit_instruments_is_refused_before_the_change(journal: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(undo, "UNDO_PREFIX", "labkit.instruments.")
    with pytest.raises(ValueError, match="not a labkit instrument function"), \
            undo.recorded("thing changed", mark_undone, {}):
        pytest.fail("the block must not run")
    assert not list(journal.glob("*.json"))


KEEPS_A_FOLDER = """
import sys, time
from pathlib import Path
from labkit.instruments import undo
with undo.temporary_folder("labkit-test-", sys.argv[1]) as folder:
    (Path(folder) / "half-written").write_text("x")
    print(folder, flush=True)
    time.sleep(60)
"""


def test_a_temporary_folder_goes_when_its_block_ends_and_after_its_maker_is_killed(
        journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(undo, "UNDO_PREFIX", "labkit.instruments.")
    with pytest.raises(RuntimeError, match="boom"), undo.temporary_folder("labkit-test-", tmp_path) as folder:
        (Path(folder) / "file").write_text("x")
        raise RuntimeError("boom")
    assert not Path(folder).exists() and not list(journal.glob("*.json"))
    child = subprocess.Popen([sys.executable, "-c", KEEPS_A_FOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "LABKIT_STATE": str(tmp_path)})
    try:
        assert child.stdout is not None
        killed = Path(child.stdout.readline().strip())
    finally:
        child.kill()  # SIGKILL: no block ends, nothing of the child's cleans up
        child.wait(30)
    assert (killed / "half-written").exists()
    assert undo.undo_orphans() == [f"temporary folder {killed} (left by pid {child.pid}): undone"]
    assert not killed.exists()
