"""A slow engine on demand: the engine's daemons (dockerd, containerd) held to a CPU quota in a cgroup.

Readers' machines are slower than ours, and a busy engine answers late: a test that must pass there runs here
under :func:`engine_throttled`. Only the daemons are slowed — the API, image export and import, layer diffs,
the build's bookkeeping — not the containers they start (runc puts those in groups of their own).

Moving the daemons is a host-wide change: it is journalled (:mod:`labkit.instruments.undo`) before it is made,
so that when the process holding the throttle is killed, the next labkit command or test session moves them
back. The group lives under ``labkit-throttle/``, outside ``labkit/``, so that ``labkit clean``'s sweep of
labkit's groups never kills the engine in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import HostUnsupported
from labkit.instruments import procfs, undo
from labkit.instruments.cgroups import Cgroup, CgroupLayout
from labkit.instruments.limits import CPU_PERIOD_US, check_cpus

ENGINE_DAEMONS = ("dockerd", "containerd")
THROTTLE_ROOT = "labkit-throttle"


def daemon_pids(names: tuple[str, ...] = ENGINE_DAEMONS, proc_root: Path = procfs.PROC) -> list[int]:
    """PIDs of the processes whose command name (``/proc/<pid>/comm``) is one of `names`."""
    found = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return sorted(found)


@dataclass(frozen=True)
class Throttle:
    """The daemons held (`pids`), their quota (`cpus`, cores) and the group holding them."""

    pids: tuple[int, ...]
    cpus: float
    group: Cgroup


def release(detail: dict[str, Any]) -> None:
    """Move each throttled daemon still running (same pid and start time) back to the cpu group it came from,
    and remove the throttling group. Idempotent: the undo journal calls it after a holder was killed."""
    layout = CgroupLayout.from_system()
    hierarchy = layout.hierarchy("cpu")
    for pid, (started, origin) in detail["origin"].items():
        with contextlib.suppress(procfs.ProcessGone, ProcessLookupError):
            if procfs.start_ticks(int(pid)) == started:
                (hierarchy.path / origin / "cgroup.procs").write_text(pid)
    group = hierarchy.path / detail["relpath"]
    # What the daemons started while held (dockerd re-executing itself to unpack a layer, a containerd-shim)
    # was born in the group: it joins the engine's own group.
    engine_group = hierarchy.path / next(iter(detail["origin"].values()))[1]
    deadline = time.monotonic() + 5
    while group.exists() and (born := (group / "cgroup.procs").read_text().split()):
        for pid in born:
            with contextlib.suppress(ProcessLookupError):
                (engine_group / "cgroup.procs").write_text(pid)
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {born} keep appearing in {group}")
    while group.exists():
        try:
            group.rmdir()
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    # The shared parent goes with its last holder; while another holder's group is in it (a throttle inside a
    # throttle: a test under a slowed engine), it stays.
    if group.parent.exists() and not any(child.is_dir() for child in group.parent.iterdir()):
        with contextlib.suppress(FileNotFoundError):
            group.parent.rmdir()


@contextmanager
def engine_throttled(cpus: float, names: tuple[str, ...] = ENGINE_DAEMONS) -> Iterator[Throttle]:
    """Hold the engine's daemons to `cpus` cores (e.g. 0.2) for the block; they go back where they were after it,
    whatever happens (and, after a SIGKILL, at the next labkit command). Needs root and a local engine."""
    check_cpus(cpus, "cpus")
    pids = daemon_pids(names)
    if not pids:
        raise HostUnsupported(f"no {' or '.join(names)} process runs on this host, so none can be throttled.",
                              "Throttle a local engine (started by `labkit setup` or systemd); Docker Desktop "
                              "and remote engines run elsewhere.")
    if os.geteuid() != 0:
        raise HostUnsupported("throttling the engine moves its daemons between cgroups: that needs root.",
                              "Run it as root.")
    layout = CgroupLayout.from_system()
    relpath = f"{THROTTLE_ROOT}/{os.getpid()}"
    origin = {str(pid): (procfs.start_ticks(pid), layout.of_process(pid, ["cpu"]).paths["cpu"]) for pid in pids}
    detail = {"relpath": relpath, "origin": origin}
    with undo.recorded(f"{', '.join(names)} throttled to {cpus:g} CPUs", release, detail):  # releases at exit
        group = layout.create(relpath, controllers=["cpu"])
        group.limit_cpu_quota(round(cpus * CPU_PERIOD_US))
        for pid in pids:
            group.add(pid)
        yield Throttle(tuple(pids), cpus, group)
