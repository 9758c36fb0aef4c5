"""Finding a scratch container's PID 1 from the host: by NSpid, read through :mod:`labkit.instruments.procfs`.

A process's NSpid lists its pid in each pid namespace it is in, outermost first. The container's PID 1 is one
namespace deeper than the caller and reads ``(<host pid>, 1)`` from the caller's namespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from labkit.instruments import procfs
from labkit.instruments.scratch.argv import in_setup


def own_depth(proc_root: Path = procfs.PROC) -> int:
    """How many pid namespaces the caller is nested in (1 on a host); RuntimeError on kernels without NSpid."""
    nspid = procfs.read_status("self", proc_root).nspid
    if not nspid:
        raise RuntimeError("/proc/self/status has no NSpid line (kernel older than 4.1): PID 1 cannot be found")
    return len(nspid)


def find_pid1(candidates: Iterable[int], unshare: str, depth: int, proc_root: Path = procfs.PROC) -> int | None:
    """The host pid among ``candidates`` (the container cgroup's processes) that is PID 1 of a pid namespace
    ``depth`` levels deep and already runs the command (not ``unshare`` or the setup shell); None if none is."""
    for pid in candidates:
        try:
            nspid = procfs.read_status(pid, proc_root).nspid
            cmdline = procfs.cmdline(pid, proc_root)
        except procfs.ProcessGone:
            continue
        if len(nspid) == depth and nspid[-1] == 1 and cmdline and not in_setup(cmdline, unshare):
            return pid
    return None
