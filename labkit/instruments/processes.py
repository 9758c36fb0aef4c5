"""The host's process table and the per-process files notebook 10 reads from /proc: zombies below a container's
main process and the environment a process started with (its security module label: :mod:`procfs`).

Pure parsers take text; readers take ``proc_root`` (``/proc`` by default, or a fixture tree laid out as
``<proc_root>/<pid>/...``), as :mod:`labkit.instruments.procfs` does. Nothing happens at import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.instruments.procfs import PROC, parse_cmdline, stat_fields_after_name


@dataclass(frozen=True)
class ProcessState:
    """One process as its ``/proc/<pid>/stat`` shows it: `state` is the kernel's letter (R, S, D, Z zombie …)."""

    pid: int
    ppid: int
    state: str


def parse_process_state(pid: int, stat_text: str) -> ProcessState:
    """Fields 3 (state) and 4 (parent pid) of ``/proc/<pid>/stat``."""
    state, ppid = stat_fields_after_name(stat_text)[:2]
    return ProcessState(pid, int(ppid), state)


def process_table(proc_root: Path = PROC) -> list[ProcessState]:
    """Every process on the host now, zombies included (a zombie keeps its ``stat`` until it is reaped); a process
    that exits while the table is read is left out."""
    table = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            try:
                table.append(parse_process_state(int(entry.name), (entry / "stat").read_text()))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return table


def descendants(table: Iterable[ProcessState], root: int) -> list[ProcessState]:
    """The processes below `root` (not `root` itself) in `table`, by parent pid."""
    children: dict[int, list[ProcessState]] = {}
    for process in table:
        children.setdefault(process.ppid, []).append(process)
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child.pid)
    return found


def environ(pid: int, proc_root: Path = PROC) -> list[str]:
    """The environment `pid` started with (``KEY=value`` entries) from ``<proc_root>/<pid>/environ``: readable by
    root from the host for any process, a container's included."""
    return parse_cmdline((proc_root / str(pid) / "environ").read_bytes())
