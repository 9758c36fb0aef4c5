"""systemd slices as labkit's fences, where Docker uses the systemd cgroup driver (cgroup v2 hosts, the lab machine).

With that driver a container's ``--cgroup-parent`` is a slice's unit name, and systemd owns every group on the way
to the container's scope: it rewrites a slice's ``memory.max`` (and the rest) from the unit's settings whenever it
realises the slice, so a limit written into the group by hand would not hold. A fence is therefore a slice whose
limits are systemd properties (``systemctl set-property --runtime``: MemoryMax, TasksMax, CPUQuota), stopped and
reverted afterwards. In a slice's name ``-`` means "below": ``labkit-<run>-<fence>.slice`` lives in
``labkit.slice/labkit-<run>.slice/``, so the run and fence names carry ``_`` instead. What a killed run left is
found by name (:func:`sweep`): every ``labkit-<run>…`` slice is stopped and its runtime settings removed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from labkit.instruments import cgroups
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

SYSTEMD_BOOTED = Path("/run/systemd/system")  # there when systemd is PID 1 (sd_booted(3))
_TIMEOUT_S = 60.0


def escape(name: str) -> str:
    """`name` as one level of a slice name: ``-`` (systemd's level separator) and anything else a unit name does
    not allow become ``_``."""
    return re.sub(r"[^A-Za-z0-9_:]", "_", name)


def unit(run_id: str, fence: str) -> str:
    """The fence's slice unit: ``labkit-<run>-<fence>.slice`` (each part escaped)."""
    return f"labkit-{escape(run_id)}-{escape(fence)}.slice"


def group_path(slice_unit: str) -> str:
    """The slice's cgroup, relative to the v2 root: every prefix of its name is a parent slice
    (``labkit-r1-ramp.slice`` → ``labkit.slice/labkit-r1.slice/labkit-r1-ramp.slice``)."""
    parts = slice_unit.removesuffix(".slice").split("-")
    return "/".join("-".join(parts[:i]) + ".slice" for i in range(1, len(parts) + 1))


def properties(limits: Limits) -> list[str]:
    """`limits` as systemd properties: MemoryMax (bytes), TasksMax, CPUQuota (``--cpus`` × 100 %, per systemd's
    default 100 ms period, which is labkit's CFS period too)."""
    return [f"MemoryMax={limits.memory_bytes}", f"TasksMax={limits.pids}",
            f"CPUQuota={limits.cpu_quota_us / 1000:g}%"]


@contextlib.contextmanager
def fenced(layout: cgroups.CgroupLayout, run_id: str, fence: str, limits: Limits) -> Iterator[
        tuple[cgroups.Cgroup, str]]:
    """A slice under `limits` for containers to run below (``--cgroup-parent`` = the unit's name); yields its
    group (read as any other) and the unit. Afterwards its processes are killed, the slice is stopped (systemd
    removes its group) and its runtime properties are reverted, also on error."""
    name = unit(run_id, fence)
    try:
        run(["systemctl", "set-property", "--runtime", name, *properties(limits)], _TIMEOUT_S)
        run(["systemctl", "start", name], _TIMEOUT_S)
        group = layout.open(group_path(name))
        yield group, name
    finally:
        with contextlib.suppress(cgroups.CgroupError, OSError):
            layout.open(group_path(name)).kill_all()
        _remove(name)
        _remove_empty_parents(layout, name)


def _remove_empty_parents(layout: cgroups.CgroupLayout, name: str) -> None:
    """Stop the parent slices systemd made on the way (``labkit-<run>.slice``, ``labkit.slice``) once no other
    fence is below them."""
    levels = group_path(name).split("/")
    for depth in range(len(levels) - 1, 0, -1):
        folder = layout.memory.path / "/".join(levels[:depth])
        if folder.is_dir() and any(child.is_dir() for child in folder.iterdir()):
            return
        _remove(levels[depth - 1])


def _remove(name: str) -> None:
    run(["systemctl", "stop", name], _TIMEOUT_S, check=False)
    run(["systemctl", "revert", name], _TIMEOUT_S, check=False)


def sweep(run_id: str | None = None) -> list[str]:
    """Stop and revert the slices of run `run_id` (every labkit slice when None), the run's parent slice too;
    what went. Nothing on a host without systemd."""
    if not SYSTEMD_BOOTED.is_dir():  # not booted with systemd (our v1 hosts): no slices to look for
        return []
    pattern = f"labkit-{escape(run_id)}*.slice" if run_id else "labkit*.slice"
    listed = run(["systemctl", "list-units", "--type=slice", "--all", "--plain", "--no-legend", pattern], _TIMEOUT_S)
    found = [line.split()[0] for line in listed.stdout.splitlines() if line.split()]
    for name in sorted(found, key=lambda n: -n.count("-")):  # the deepest first
        _remove(name)
    return [f"systemd slice {name}" for name in found]
