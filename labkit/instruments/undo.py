"""Host-wide changes undone whatever happens to the process that made them.

A change beyond docker objects (a binfmt entry disabled, the engine's processes moved into a throttling cgroup)
is written to a journal on disk *before* it is made, saying how to undo it. The ``with`` block that made it
undoes it as usual and then deletes its record. When the process dies first — SIGKILL, an OOM kill, a notebook
kernel shut down by its runner — the record stays behind, and the next labkit command that starts (``labkit
run``, ``setup``, ``clean``; pytest's session start; the runner when a notebook ends) applies it: the idea of
testcontainers' reaper, without a reaper process. ``labkit doctor`` lists what is pending.

A record names its maker by pid *and* start time (``/proc/<pid>/stat``), so a reused pid is not mistaken for a
live maker, and by boot id: kernel state does not outlive a reboot, so a record from an earlier boot is dropped.
Its undo is a function of an instrument module (``labkit.instruments.<module>:<function>``), called with the
record's ``detail``; undo functions are idempotent (undoing twice, or after the block's own undo, is harmless).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit import paths
from labkit.instruments import procfs, shell

log = logging.getLogger("labkit.undo")

UNDO_PREFIX = "labkit.instruments."


def journal_dir() -> Path:
    """Where pending undo records live (one JSON file each), under labkit's state folder."""
    return paths.state_dir() / "undo"


@dataclass(frozen=True)
class Change:
    """One host-wide change: `what` it is (for people), `undo` (``module:function``) and its `detail`, and the
    process that made it (`pid`, its `start_ticks` since boot, the `boot_id`)."""

    what: str
    undo: str
    detail: dict[str, Any]
    pid: int
    start_ticks: int
    boot_id: str
    path: Path

    def maker_alive(self) -> bool:
        """Whether the process that made the change still runs (same pid, same start, same boot)."""
        if self.boot_id != procfs.boot_id():
            return False
        try:
            return procfs.start_ticks(self.pid) == self.start_ticks
        except procfs.ProcessGone:
            return False


def _undo_function(name: str) -> Callable[[dict[str, Any]], None]:
    module, _, function = name.partition(":")
    if not module.startswith(UNDO_PREFIX) or not function:
        raise ValueError(f"undo {name!r} is not a labkit instrument function")
    found: Callable[[dict[str, Any]], None] = getattr(importlib.import_module(module), function)
    return found


@contextmanager
def recorded(what: str, undo: Callable[[dict[str, Any]], None], detail: dict[str, Any]) -> Iterator[Change]:
    """Journal a change for the block that makes it; when the block ends, `undo(detail)` runs (a no-op when the
    block undid the change itself) and the record goes — unless the undo failed: then the record stays for the
    next command. `undo` must be a module-level function of a labkit instrument, taking `detail`."""
    name = f"{undo.__module__}:{undo.__name__}"
    _undo_function(name)  # refuse an undo the next command could not call, before anything is changed
    path = journal_dir() / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    change = Change(what, name, detail, os.getpid(), procfs.start_ticks("self"), procfs.boot_id(), path)
    record = {k: v for k, v in asdict(change).items() if k != "path"}
    paths.atomic_write(path, json.dumps(record, indent=2) + "\n")
    try:
        yield change
    finally:
        with shell.interrupts_held():  # an interrupt arriving now is raised after the record is gone
            undo(detail)
            path.unlink(missing_ok=True)


@contextmanager
def temporary_folder(prefix: str, folder: str | Path | None = None) -> Iterator[str]:
    """A new folder (its path, as :class:`tempfile.TemporaryDirectory` gives it) under `folder` (the system's
    temporary folder by default), removed with all it holds when the block ends — and, being journalled, by the
    next labkit command when the process was killed first."""
    made = tempfile.mkdtemp(prefix=prefix, dir=folder)
    with recorded(f"temporary folder {made}", remove_folder, {"folder": made}):
        yield made


def remove_folder(detail: dict[str, Any]) -> None:
    """Undo of :func:`temporary_folder`: ``detail['folder']`` and all it holds gone (nothing when it is gone)."""
    shutil.rmtree(detail["folder"], ignore_errors=True)


def pending() -> list[Change]:
    """Every record in the journal (of live makers too), oldest first; unreadable ones are skipped and logged."""
    found = []
    folder = journal_dir()
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            fields = json.loads(path.read_text())
            found.append(Change(**fields, path=path))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable undo record %s: %s", path, exc)
    return found


def orphans() -> list[Change]:
    """Records whose maker is gone: changes nobody is left to undo."""
    return [change for change in pending() if not change.maker_alive()]


def undo_orphans() -> list[str]:
    """Undo every orphaned change and delete its record; return what was undone (one line each).

    A record from an earlier boot is deleted without being applied (the kernel state it describes is gone).
    An undo that fails is logged and its record kept, so that a later command tries again.
    """
    done = []
    current_boot = procfs.boot_id()
    for change in orphans():
        if change.boot_id != current_boot:
            change.path.unlink(missing_ok=True)
            continue
        try:
            _undo_function(change.undo)(change.detail)
        except Exception as exc:  # keep the record: a later command may succeed where this one failed
            log.warning("could not undo %s (pid %d's change): %s", change.what, change.pid, exc)
            continue
        with suppress(FileNotFoundError):
            change.path.unlink()
        done.append(f"{change.what} (left by pid {change.pid}): undone")
    return done
