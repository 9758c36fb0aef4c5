"""One interface over cgroup v1 and v2: make a group under :class:`~labkit.instruments.limits.Limits`, read what
the kernel counts for it (memory, CPU, pids), find the group of a running process, kill, remove.

Where each controller lives is read from /proc/self/mountinfo (:func:`detect`): on a v1 host every controller
has its own hierarchy (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/pids``, ``/sys/fs/cgroup/cpu``, …; ``cpu`` and
``cpuacct`` are often co-mounted as ``cpu,cpuacct``), on a v2 host all of them are in the unified tree
(``/sys/fs/cgroup``); a hybrid host can have both kinds mounted at once. A :class:`CgroupLayout` maps each
controller name to its :class:`Hierarchy`; a :class:`Cgroup` is a path below the hierarchy of each of its
controllers — one path (``labkit/<run_id>/<name>``) for the groups labkit makes, possibly a different one per
controller for the group of a process found by :meth:`CgroupLayout.of_process`.

Pure parsers (``parse_*``) turn the text of one kernel file into values; :class:`Cgroup`'s readers read the
file of the right version and call them. The filesystem root is injectable (``root``) so recorded fixture trees
in a temporary directory work like the kernel's files. /proc is read through :mod:`labkit.instruments.procfs`.
Used by notebook 01 (a container from scratch) and 07 (cgroups; the sampler is in
:mod:`labkit.instruments.sampler`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from labkit.errors import BadParameter, HostUnsupported, LabkitError
from labkit.instruments import procfs
from labkit.instruments.limits import CPU_PERIOD_US, MIB, Limits

__all__ = [
    "GROUP_CONTROLLERS",
    "MIB",
    "Cgroup",
    "CgroupError",
    "CgroupLayout",
    "CgroupUnavailable",
    "CpuMax",
    "CpuStat",
    "Hierarchy",
    "MemoryStat",
    "detect",
    "parse_cfs",
    "parse_cpu_max",
    "parse_cpu_stat",
    "parse_flat_keyed",
    "parse_limit",
    "parse_memory_stat",
    "sweep",
]

Version = Literal["v1", "v2"]

# The controllers a labkit group joins by default, in the order their hierarchies are listed.
GROUP_CONTROLLERS: tuple[str, ...] = ("memory", "pids", "cpu", "cpuacct")
# Every controller a v1 mount can carry (cgroup-v1 docs); other super options (rw, name=…, noprefix, xattr,
# clone_children, release_agent=…) are not controllers.
_V1_CONTROLLERS = frozenset({
    "blkio", "cpu", "cpuacct", "cpuset", "debug", "devices", "freezer", "hugetlb", "memory", "misc", "net_cls",
    "net_prio", "perf_event", "pids", "rdma",
})  # fmt: skip
# v1 reports "no limit" as PAGE_COUNTER_MAX * page size (9223372036854771712 with 4 KiB pages); anything this
# large is not a limit anyone set.
_V1_UNLIMITED_FROM = 2**62
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]*$")
_ENABLE_HINT = (
    "On cgroup v1 mount the controller's hierarchy (e.g. `mount -t cgroup -o pids none /sys/fs/cgroup/pids`); "
    "on cgroup v2 make sure it is in the root's cgroup.controllers and enable it "
    "(`echo +pids > /sys/fs/cgroup/cgroup.subtree_control`); inside a container, ask for a delegated cgroup."
)


class CgroupError(LabkitError, RuntimeError):
    """Something about the cgroup filesystem prevents the operation; the hint says what to do."""


class CgroupUnavailable(CgroupError, HostUnsupported):
    """A controller labkit needs is not available on this host (or not in this group)."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: where it is mounted (already joined with the layout's root), its version,
    and which of its paths is mounted there (``mount_root``: ``/`` on a host, ``/docker/<id>`` for a v1
    hierarchy bind-mounted into a container without a cgroup namespace)."""

    path: Path
    version: Version
    mount_root: str = "/"


@dataclass(frozen=True)
class CgroupLayout:
    """Where each controller is mounted (controller name → :class:`Hierarchy`); ``version`` is the memory
    controller's. On v2 ``cpuacct`` names the unified tree too: cpu.stat's usage_usec is there whether or not
    the cpu controller is enabled."""

    controllers: Mapping[str, Hierarchy]
    root: Path = Path("/")
    # v1 hierarchies with no controller (``name=systemd``): runc makes a container's group there too, so a
    # group made for containers is removed from them as well (:meth:`everywhere`, :func:`sweep`).
    named: Mapping[str, Hierarchy] = field(default_factory=dict)

    @property
    def version(self) -> Version:
        return self.memory.version

    @property
    def memory(self) -> Hierarchy:
        """The memory controller's hierarchy (:func:`detect` refuses a host without one)."""
        return self.hierarchy("memory")

    @property
    def pids(self) -> Hierarchy | None:
        return self.controllers.get("pids")

    def hierarchy(self, controller: str) -> Hierarchy:
        """The hierarchy ``controller`` (or a named hierarchy such as ``name=systemd``) is mounted in;
        CgroupUnavailable when it is not mounted."""
        try:
            return self.controllers[controller] if controller in self.controllers else self.named[controller]
        except KeyError:
            raise CgroupUnavailable(f"No {controller} controller is mounted (mounted: "
                                    f"{', '.join(self.controllers) or 'none'}).", _ENABLE_HINT) from None

    @classmethod
    def from_system(cls, root: Path = Path("/")) -> CgroupLayout:
        """Read ``<root>/proc/self/mountinfo`` (the running kernel's for ``/``) and :func:`detect`."""
        mounts = procfs.read_mountinfo("self", proc_root=root / "proc")
        return _layout_from_mounts(mounts, root)

    def hierarchies(self, controllers: Iterable[str] | None = None) -> list[Hierarchy]:
        """The distinct hierarchies of ``controllers`` (default: every mounted one, named ones last), memory's
        first."""
        names = [*self.controllers, *self.named] if controllers is None else list(controllers)
        out: list[Hierarchy] = []
        for name in names:
            hierarchy = self.hierarchy(name)
            if hierarchy not in out:
                out.append(hierarchy)
        return out

    def create(self, relpath: str, limits: Limits | None = None, *,
               controllers: Iterable[str] | None = None) -> Cgroup:
        """Make the group ``relpath`` (e.g. ``labkit/<run_id>/<name>``) in the hierarchy of each controller and
        apply ``limits`` (None: no limit at all).

        ``controllers`` defaults to every one of :data:`GROUP_CONTROLLERS` that is mounted; with ``limits`` the
        group needs memory, pids and cpu. Limits written: memory → ``memory.limit_in_bytes`` (v1) /
        ``memory.max`` (v2), bytes; pids → ``pids.max``; cpus → ``cpu.cfs_period_us`` = 100000 and
        ``cpu.cfs_quota_us`` = cpus × 100000 (v1) / ``cpu.max`` = ``"<quota> 100000"`` (v2), microseconds.
        Everything is checked before anything is made. Raises FileExistsError when the group is already there
        (a run interrupted earlier: ``labkit clean`` removes it). On v2 the parents get ``+memory +pids +cpu``
        in ``cgroup.subtree_control`` so the leaf has those files. On failure what was made is removed.
        """
        if limits is not None and not isinstance(limits, Limits):
            raise BadParameter(f"limits={limits!r}: not a Limits.",
                               "Pass labkit.instruments.limits.Limits.of(memory_mib=…, pids=…, cpus=…) or None.")
        parts = _split_relpath(relpath)
        chosen = self._choose(controllers, limits)
        group = Cgroup(self, relpath, {c: relpath for c in chosen})
        existing = [d for d in group.dirs() if d.exists()]
        if existing:
            raise FileExistsError(
                f"cgroup {relpath!r} already exists ({existing[0]}): left over from an interrupted run? "
                "`labkit clean` removes labkit's leftover groups."
            )
        created: list[Path] = []
        try:
            for hierarchy in self.hierarchies(chosen):
                # cpuacct is no v2 controller: its file (cpu.stat) is always there
                enable = [c for c in chosen if self.controllers[c] == hierarchy and c != "cpuacct"]
                directory = hierarchy.path
                for part in parts:
                    if hierarchy.version == "v2":
                        _enable_controllers(directory, enable)
                    directory = directory / part
                    if not directory.exists():
                        _mkdir_retrying(directory)
                        created.append(directory)
            if limits is not None:
                group._apply(limits)
        except BaseException:
            for directory in reversed(created):
                with contextlib.suppress(OSError):  # the original error is the one worth reporting
                    _remove_group_dir(directory)
            raise
        return group

    def open(self, relpath: str, controllers: Iterable[str] | None = None) -> Cgroup:
        """The group at ``relpath`` (which may or may not exist yet) in ``controllers`` (default: every one of
        :data:`GROUP_CONTROLLERS` that is mounted); nothing is touched."""
        _split_relpath(relpath)
        chosen = self._choose(controllers, None)
        return Cgroup(self, relpath, {c: relpath for c in chosen})

    def everywhere(self, relpath: str) -> Cgroup:
        """The group at ``relpath`` in every mounted hierarchy, named ones included: what to remove after
        containers ran below it (``docker run --cgroup-parent``), since runc makes their groups in all of them."""
        _split_relpath(relpath)
        return Cgroup(self, relpath, {c: relpath for c in [*self.controllers, *self.named]})

    def of_process(self, pid: int | str, controllers: Iterable[str] | None = None) -> Cgroup:
        """The group process ``pid`` is in (e.g. a container's main process), per controller, from
        ``<root>/proc/<pid>/cgroup`` and this layout's mounts — never guessed.

        The path in /proc/<pid>/cgroup is taken relative to the part of the hierarchy that is mounted (a
        mount whose root is ``/docker/<id>`` shows only that subtree). Raises :class:`procfs.ProcessGone` when
        there is no such process, and CgroupError when a controller's group is not reachable through this
        mount table (outside the mounted subtree or the reader's cgroup namespace, or no such directory).
        The group's ``relpath`` is the memory controller's path ("" for a root group, which is never killed
        or removed).
        """
        chosen = self._choose(controllers, None)
        entries = procfs.read_cgroup(pid, proc_root=self.root / "proc")
        paths: dict[str, str] = {}
        for controller in chosen:
            hierarchy = self.controllers[controller]
            path = procfs.cgroup_path(entries, controller if hierarchy.version == "v1" else None)
            where = f"/proc/{pid}/cgroup"
            if path is None:
                raise CgroupError(f"{where} has no line for the {controller} hierarchy mounted at {hierarchy.path}.",
                                  "The process may live in another mount or cgroup namespace: read it from there.")
            relative = _below_mount(path, hierarchy.mount_root)
            if relative is None:
                raise CgroupError(f"{where} puts it in {path!r} of the {controller} hierarchy, which is not below "
                                  f"the part mounted at {hierarchy.path} ({hierarchy.mount_root!r}).",
                                  "Read it from a mount (or cgroup namespace) that shows that group.")
            directory = hierarchy.path / relative
            if not directory.is_dir():
                raise CgroupError(f"{where} puts it in {path!r} of the {controller} hierarchy, but {directory} "
                                  "does not exist.", "The process probably exited or moved: look again.")
            paths[controller] = relative
        relpath = paths.get("memory", next(iter(paths.values()), ""))
        return Cgroup(self, relpath, paths)

    def _choose(self, controllers: Iterable[str] | None, limits: Limits | None) -> list[str]:
        if controllers is None:
            chosen = [c for c in GROUP_CONTROLLERS if c in self.controllers]
        else:
            if isinstance(controllers, str):
                raise BadParameter(f"controllers={controllers!r}: a list of names is needed.",
                                   f"E.g. controllers={list(GROUP_CONTROLLERS)!r}.")
            chosen = list(dict.fromkeys(controllers))
            for name in chosen:
                self.hierarchy(name)  # CgroupUnavailable when it is not mounted
        if limits is not None:
            for needed in ("memory", "pids", "cpu"):
                if needed in chosen:
                    continue
                if needed in self.controllers:
                    raise BadParameter(f"controllers={chosen!r}: limits need the memory, pids and cpu controllers.",
                                       f"Add {needed!r}, or pass limits=None.")
                raise CgroupUnavailable(f"Limits were given but no {needed} controller is mounted "
                                        f"(mounted: {', '.join(self.controllers)}).",
                                        _ENABLE_HINT + " Or pass limits=None.")
        return chosen


def detect(mountinfo_text: str, root: Path = Path("/")) -> CgroupLayout:
    """Find every cgroup controller in the text of /proc/self/mountinfo.

    A v1 mount (fs type ``cgroup``) lists its controllers in the super options (``rw,cpu,cpuacct``); a
    controller bound to a v1 hierarchy is not available on cgroup2. For a ``cgroup2`` mount the available
    controllers are read from ``<root>/<mount point>/cgroup.controllers``. Raises CgroupUnavailable when no
    memory controller is found, saying what to do about it.
    """
    try:
        mounts = procfs.parse_mountinfo(mountinfo_text)
    except ValueError as exc:
        raise BadParameter(f"not a /proc/self/mountinfo line: {exc}", "Pass the text of /proc/self/mountinfo.") \
            from exc
    return _layout_from_mounts(mounts, root)


def _layout_from_mounts(mounts: Iterable[procfs.Mount], root: Path) -> CgroupLayout:
    v1: dict[str, Hierarchy] = {}
    named: dict[str, Hierarchy] = {}
    v2_mounts: list[tuple[Path, str]] = []
    for mount in mounts:
        path = root / mount.mount_point.lstrip("/")
        if mount.fs_type == "cgroup":
            for option in mount.super_options:
                if option in _V1_CONTROLLERS:
                    v1.setdefault(option, Hierarchy(path, "v1", mount.root))
                elif option.startswith("name="):
                    named.setdefault(option, Hierarchy(path, "v1", mount.root))
        elif mount.fs_type == "cgroup2":
            v2_mounts.append((path, mount.root))

    v2: list[tuple[Hierarchy, set[str]]] = []
    for path, mount_root in v2_mounts:
        try:
            v2.append((Hierarchy(path, "v2", mount_root), set((path / "cgroup.controllers").read_text().split())))
        except OSError as exc:
            if "memory" not in v1:
                raise CgroupUnavailable(f"cgroup2 is mounted at {path} but {path / 'cgroup.controllers'} cannot be "
                                        f"read ({exc}).", "Run as a user who can read /sys/fs/cgroup.") from exc

    found: dict[str, Hierarchy] = dict(v1)
    for hierarchy, available in v2:
        for name in sorted(available):
            found.setdefault(name, hierarchy)
    if v2 and "cpuacct" not in found:
        found["cpuacct"] = v2[0][0]  # v2's cpu.stat always carries usage_usec

    if "memory" not in found:
        if not v1 and not v2_mounts:
            raise CgroupUnavailable(
                "No cgroup filesystem is mounted (no `cgroup` or `cgroup2` line in /proc/self/mountinfo).",
                "Mount one: `mount -t cgroup2 none /sys/fs/cgroup`.")
        seen = ", ".join(f"{h.path} ({' '.join(sorted(c)) or 'no controllers'})" for h, c in v2)
        raise CgroupUnavailable(
            "No memory controller: it is not on any cgroup v1 hierarchy"
            + (f" and not in cgroup2's cgroup.controllers at {seen}" if seen else "") + ".",
            "To fix: if the kernel has it disabled, boot with `cgroup_enable=memory` (e.g. Raspberry Pi OS); on "
            "cgroup v2 make sure `memory` is in the root's cgroup.subtree_control "
            "(`echo +memory > /sys/fs/cgroup/cgroup.subtree_control`) and, inside a container, that the "
            "container was given a delegated cgroup.")
    order = [c for c in GROUP_CONTROLLERS if c in found] + sorted(c for c in found if c not in GROUP_CONTROLLERS)
    return CgroupLayout(controllers={c: found[c] for c in order}, root=root, named=named)


# --- what the kernel files say ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryStat:
    """A group's memory split from memory.stat (bytes, this group and its descendants).

    ``anon_bytes``: anonymous memory (heap, stack; v1 ``total_rss``, v2 ``anon``); ``file_bytes``: page cache
    (v1 ``total_cache``, v2 ``file``; both include shmem/tmpfs). ``fields`` holds every line as printed.
    """

    anon_bytes: int
    file_bytes: int
    fields: Mapping[str, int] = field(repr=False, compare=False)


@dataclass(frozen=True)
class CpuStat:
    """CFS bandwidth counters from cpu.stat: ``nr_periods`` enforcement periods (100 ms each by default) in
    which the group ran, ``nr_throttled`` of them in which it used up its quota and was stopped, and
    ``throttled_s`` seconds its threads spent stopped in total (summed over CPUs)."""

    nr_periods: int
    nr_throttled: int
    throttled_s: float

    @property
    def throttled_fraction(self) -> float:
        """nr_throttled / nr_periods (0.0 before the first period)."""
        return self.nr_throttled / self.nr_periods if self.nr_periods else 0.0


@dataclass(frozen=True)
class CpuMax:
    """A CFS quota: at most ``quota_us`` microseconds of CPU time per ``period_us`` (None: no quota)."""

    quota_us: int | None
    period_us: int

    @property
    def cpus(self) -> float | None:
        """The quota in cores (0.5: half a core), None when there is no quota."""
        return None if self.quota_us is None else self.quota_us / self.period_us


def parse_pressure(text: str) -> dict[str, float]:
    """A PSI file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=1234``, and a ``full`` line): each line's
    ``total`` stall time, seconds."""
    out = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        values = dict(field.partition("=")[::2] for field in fields)
        if kind and values.get("total", "").isdigit():
            out[kind] = int(values["total"]) / 1e6
    return out


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A ``key value`` per line file (memory.events, memory.oom_control, memory.stat, cpu.stat, pids.events);
    lines whose value is not an integer are left out."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        if key and value.lstrip("-").isdigit():
            out[key] = int(value)
    return out


def parse_limit(text: str, version: Version) -> int | None:
    """A limit file (memory.limit_in_bytes, memory.max, pids.max): its number, None for "no limit" (``max``, or
    v1's huge page-counter maximum)."""
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if version == "v1" and value >= _V1_UNLIMITED_FROM else value


def parse_memory_stat(text: str, version: Version) -> MemoryStat:
    """memory.stat → :class:`MemoryStat`. v1 takes ``total_rss``/``total_cache`` (hierarchical) when present,
    else ``rss``/``cache``; v2 ``anon``/``file``. A file without those keys raises ValueError."""
    fields = parse_flat_keyed(text)
    if version == "v1":
        keys = ("total_rss", "total_cache") if "total_rss" in fields else ("rss", "cache")
    else:
        keys = ("anon", "file")
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ValueError(f"memory.stat ({version}) has no {' or '.join(missing)} line")
    return MemoryStat(fields[keys[0]], fields[keys[1]], fields)


def parse_cpu_stat(text: str, version: Version) -> CpuStat:
    """cpu.stat → :class:`CpuStat`: v1 ``throttled_time`` is nanoseconds, v2 ``throttled_usec`` microseconds.

    A v2 cpu.stat without ``nr_periods`` (the cpu controller is not enabled for the group) raises
    CgroupUnavailable."""
    fields = parse_flat_keyed(text)
    key, scale = ("throttled_time", 1e9) if version == "v1" else ("throttled_usec", 1e6)
    if "nr_periods" not in fields or key not in fields:
        raise CgroupUnavailable("cpu.stat has no CFS bandwidth counters (nr_periods, nr_throttled): the cpu "
                                "controller is not enabled for this group.",
                                "On cgroup v2 enable it in the parent: `echo +cpu > <parent>/cgroup.subtree_control`.")
    return CpuStat(fields["nr_periods"], fields["nr_throttled"], fields[key] / scale)


def parse_cpu_max(text: str) -> CpuMax:
    """v2 cpu.max (``"50000 100000"`` or ``"max 100000"``) → :class:`CpuMax`."""
    quota, _, period = text.strip().partition(" ")
    return CpuMax(None if quota == "max" else int(quota), int(period) if period else CPU_PERIOD_US)


def parse_cfs(quota_text: str, period_text: str) -> CpuMax:
    """v1 cpu.cfs_quota_us (``-1``: no quota) and cpu.cfs_period_us → :class:`CpuMax`."""
    quota = int(quota_text)
    return CpuMax(None if quota < 0 else quota, int(period_text))


# --- a group -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cgroup:
    """One group: for each of its controllers (``paths``' keys) a path below that controller's hierarchy.

    ``relpath`` is the path labkit made it under (the same in every hierarchy), or for a group found by
    :meth:`CgroupLayout.of_process` the memory controller's path. Readers raise FileNotFoundError when the
    group is gone and CgroupUnavailable when the group lacks the controller.
    """

    layout: CgroupLayout
    relpath: str
    paths: Mapping[str, str]

    def dir(self, controller: str) -> Path:
        """The directory holding ``controller``'s files for this group."""
        if controller not in self.paths:
            raise CgroupUnavailable(f"cgroup {self.relpath!r} has no {controller} controller "
                                    f"(it has {', '.join(self.paths) or 'none'}).",
                                    f"Make or open it with controllers including {controller!r}.")
        return self.layout.hierarchy(controller).path / self.paths[controller]

    def version(self, controller: str) -> Version:
        return self.layout.hierarchy(controller).version

    def dirs(self) -> list[Path]:
        """This group's directory in each of its hierarchies."""
        out: list[Path] = []
        for controller in self.paths:
            directory = self.dir(controller)
            if directory not in out:
                out.append(directory)
        return out

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs())

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid to, to join this group everywhere."""
        return [d / "cgroup.procs" for d in self.dirs()]

    def add(self, pid: int) -> None:
        """Move process ``pid`` (and on v1 only that process's threads) into this group in every hierarchy."""
        for procs in self.procs_files:
            _write(procs, str(pid))

    def pids(self) -> list[int]:
        """The processes in this group, over every hierarchy (a missing directory counts as empty)."""
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found.update(int(tok) for tok in procs.read_text().split())
            except FileNotFoundError:
                continue
        return sorted(found)

    # memory

    def memory_current_bytes(self) -> int:
        """Memory charged to the group now, bytes (v1 memory.usage_in_bytes, v2 memory.current)."""
        v1 = self.version("memory") == "v1"
        return int(self._read("memory", "memory.usage_in_bytes" if v1 else "memory.current"))

    def memory_max_bytes(self) -> int | None:
        """The memory limit, bytes; None when there is none (v1 memory.limit_in_bytes, v2 memory.max)."""
        version = self.version("memory")
        return parse_limit(self._read("memory", "memory.limit_in_bytes" if version == "v1" else "memory.max"),
                           version)

    def memory_peak_bytes(self) -> int | None:
        """The most memory charged to the group so far, bytes (v1 memory.max_usage_in_bytes, v2 memory.peak);
        None on v2 kernels before 5.19, which have no memory.peak."""
        if self.version("memory") == "v1":
            return int(self._read("memory", "memory.max_usage_in_bytes"))
        peak = self._read_if_present("memory", "memory.peak")
        return None if peak is None else int(peak)

    def memory_events(self) -> dict[str, int]:
        """Counts of memory events. v2: memory.events as is (``low``, ``high``, ``max``: times usage hit the
        limit, ``oom``, ``oom_kill``, ``oom_group_kill``). v1 has fewer: ``max`` is memory.failcnt plus, where
        swap is accounted, memory.memsw.failcnt, and ``oom_kill`` comes from memory.oom_control (kernels >= 4.13);
        v1 counts no ``oom`` or ``high``. On v1 the kernel charges memory + swap first, and recent kernels (6.18
        here) count failures of the memory counter only: with ``--memory-swap`` equal to ``--memory`` the memsw
        charge fails first and ``max`` stays 0 while the group sits at its limit (measured: 0 and 0 at the OOM
        kill of a 32 MiB group). There, :meth:`memory_peak_bytes` reaching the limit is the witness."""
        if self.version("memory") == "v2":
            return parse_flat_keyed(self._read("memory", "memory.events"))
        memsw_hits = self._read_if_present("memory", "memory.memsw.failcnt")
        events = {"max": int(self._read("memory", "memory.failcnt")) + int(memsw_hits or 0)}
        oom_control = parse_flat_keyed(self._read("memory", "memory.oom_control"))
        if "oom_kill" in oom_control:
            events["oom_kill"] = oom_control["oom_kill"]
        return events

    def memory_pressure_s(self) -> tuple[float, float] | None:
        """Total time (s) some / all of the group's tasks stalled waiting for memory since the group was made:
        v2 memory.pressure's ``total`` (PSI, µs); None where the group has no such file (v1, a kernel without
        PSI)."""
        text = self._read_if_present("memory", "memory.pressure")
        if text is None:
            return None
        totals = parse_pressure(text)
        return totals.get("some", 0.0), totals.get("full", 0.0)

    def memory_oom_group(self) -> int | None:
        """v2 memory.oom.group: 1 when an OOM kill in the group kills every process in it, 0 when it kills one;
        None where there is no such file (v1)."""
        text = self._read_if_present("memory", "memory.oom.group")
        return None if text is None else int(text)

    def swap_current_bytes(self) -> int | None:
        """Swap used by the group, bytes; None where swap is not accounted (v1 memory.stat ``total_swap``, which
        the kernel prints only with swap accounting on; v2 memory.swap.current)."""
        if self.version("memory") == "v1":
            fields = self.memory_stat().fields
            return fields.get("total_swap", fields.get("swap"))
        swap = self._read_if_present("memory", "memory.swap.current")
        return None if swap is None else int(swap)

    def swap_max_bytes(self) -> int | None:
        """The swap the group may use on top of its memory limit, bytes; None when unlimited. v1 limits memory +
        swap together (memory.memsw.limit_in_bytes, minus memory.limit_in_bytes); v2 swap alone
        (memory.swap.max). CgroupUnavailable where swap is not accounted (v1 without memsw files)."""
        version = self.version("memory")
        if version == "v2":
            return parse_limit(self._read("memory", "memory.swap.max"), version)
        combined = self._read_if_present("memory", "memory.memsw.limit_in_bytes")
        if combined is None:
            raise CgroupUnavailable("this kernel does not account swap per cgroup (no memory.memsw.* files).",
                                    "Boot with `swapaccount=1` (cgroup v1) to limit memory + swap.")
        memsw, memory = parse_limit(combined, version), self.memory_max_bytes()
        return None if memsw is None or memory is None else memsw - memory

    def memory_stat(self) -> MemoryStat:
        """Anonymous memory vs page cache (bytes) from memory.stat: see :class:`MemoryStat`."""
        return parse_memory_stat(self._read("memory", "memory.stat"), self.version("memory"))

    # cpu

    def cpu_stat(self) -> CpuStat:
        """Throttling counters (see :class:`CpuStat`) from the cpu controller's cpu.stat."""
        return parse_cpu_stat(self._read("cpu", "cpu.stat"), self.version("cpu"))

    def cpu_usage_s(self) -> float:
        """CPU time the group's processes used, seconds, summed over CPUs (v1 cpuacct.usage, nanoseconds; v2
        cpu.stat usage_usec, microseconds)."""
        if self.version("cpuacct") == "v1":
            return int(self._read("cpuacct", "cpuacct.usage")) / 1e9
        fields = parse_flat_keyed(self._read("cpuacct", "cpu.stat"))
        if "usage_usec" not in fields:
            raise ValueError(f"{self.dir('cpuacct') / 'cpu.stat'} has no usage_usec line")
        return fields["usage_usec"] / 1e6

    def cpu_max(self) -> CpuMax:
        """The CFS quota as the kernel has it (v1 cpu.cfs_quota_us + cpu.cfs_period_us, v2 cpu.max)."""
        if self.version("cpu") == "v1":
            return parse_cfs(self._read("cpu", "cpu.cfs_quota_us"), self._read("cpu", "cpu.cfs_period_us"))
        return parse_cpu_max(self._read("cpu", "cpu.max"))

    # pids

    def pids_current(self) -> int:
        """Processes and threads in the group now (pids.current; the pids limit counts threads too)."""
        return int(self._read("pids", "pids.current"))

    def pids_max(self) -> int | None:
        """The pids limit (tasks: processes and threads); None when there is none."""
        return parse_limit(self._read("pids", "pids.max"), self.version("pids"))

    def pids_events(self) -> dict[str, int]:
        """pids.events: ``max`` is how many forks/clones failed because the group was at its pids limit."""
        return parse_flat_keyed(self._read("pids", "pids.events"))

    # lifetime

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the group, again and again, until it is empty.

        Raises TimeoutError when processes are still listed after ``timeout_s``.
        """
        self._refuse_root("kill every process in")
        deadline = time.monotonic() + timeout_s
        for directory in self.dirs():
            kill_file = directory / "cgroup.kill"
            if kill_file.exists():  # v2, kernel >= 5.14: atomic against fork
                _write(kill_file, "1")
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile: what we wanted
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"cgroup {self.relpath!r}: processes {pids} still there after {timeout_s} s")
            time.sleep(0.005)

    def remove(self, *, prune_parents: bool = True, timeout_s: float = 2.0) -> None:
        """rmdir this group in every hierarchy (call :meth:`kill_all` first); a missing directory is fine.

        With ``prune_parents`` the ancestors up to the first path component (``labkit``) are removed too
        when nothing else is in them. A group the kernel still counts as busy shortly after its last
        process died is retried until ``timeout_s``.
        """
        self._refuse_root("remove")
        deadline = time.monotonic() + timeout_s
        for directory in self.dirs():
            while True:
                try:
                    _remove_group_dir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        raise CgroupError(f"cannot remove cgroup {directory}: {exc.strerror}; still in it: "
                                          f"{self.pids()}.", "Call kill_all() first; child groups must be removed "
                                          "before their parent.") from exc
                    time.sleep(0.01)
        if prune_parents:
            for controller, relpath in self.paths.items():
                _prune_empty_parents(self.dir(controller), levels=relpath.count("/"))

    def _apply(self, limits: Limits) -> None:
        if self.version("memory") == "v1":
            self._set("memory", "memory.limit_in_bytes", str(limits.memory_bytes))
        else:
            self._set("memory", "memory.max", str(limits.memory_bytes))
        self._set("pids", "pids.max", str(limits.pids))
        self.limit_cpu_quota(limits.cpu_quota_us)

    def limit_cpu_quota(self, quota_us: int) -> None:
        """Let the group run `quota_us` µs per 100 ms CFS period (``--cpus`` × 100000): v1 cpu.cfs_quota_us,
        v2 cpu.max."""
        if self.version("cpu") == "v1":
            self._set("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US))
            self._set("cpu", "cpu.cfs_quota_us", str(quota_us))
        else:
            self._set("cpu", "cpu.max", f"{quota_us} {CPU_PERIOD_US}")

    def _set(self, controller: str, name: str, value: str) -> None:
        path = self.dir(controller) / name
        try:
            _write(path, value)
        except OSError as exc:
            raise CgroupError(f"writing {value!r} to {path} failed: {exc.strerror}.",
                              "Check that the value is allowed by the parent group and this kernel.") from exc

    def _read(self, controller: str, name: str) -> str:
        return _read(self.dir(controller) / name)

    def _read_if_present(self, controller: str, name: str) -> str | None:
        """The file's text, or None when this kernel does not have the file (the group itself must exist)."""
        try:
            return self._read(controller, name)
        except FileNotFoundError:
            if not self.dir(controller).is_dir():
                raise
            return None

    def _refuse_root(self, action: str) -> None:
        if any(not p for p in self.paths.values()):
            raise CgroupError(f"refusing to {action} a root cgroup ({self.paths}).",
                              "Only groups below the root can be killed or removed.")


def sweep(layout: CgroupLayout, prefix: str = "labkit", timeout_s: float = 5.0) -> list[str]:
    """Kill and remove every group below ``<prefix>/`` and then ``prefix`` itself, deepest first, in every
    mounted hierarchy.

    Returns the relative paths removed. Used by ``labkit clean`` and after an interrupted run.
    """
    _split_relpath(prefix)
    found: set[str] = set()
    for hierarchy in layout.hierarchies():
        base = hierarchy.path / prefix
        if not base.is_dir():
            continue
        found.add(prefix)
        for dirpath, dirnames, _ in os.walk(base):
            for name in dirnames:
                found.add((Path(dirpath) / name).relative_to(hierarchy.path).as_posix())
    removed = []
    for relpath in sorted(found, key=lambda p: (-p.count("/"), p)):
        group = layout.everywhere(relpath)
        group.kill_all(timeout_s)
        group.remove(prune_parents=False)
        removed.append(relpath)
    return removed


def swept(detail: dict[str, Any]) -> None:
    """Undo of a group labkit made (``detail['relpath']``), also the next labkit command's after its maker was
    killed: every process in it and below killed, the groups removed from every hierarchy (nothing when they are
    gone already), and its parents up to ``labkit`` when nothing else is in them."""
    layout = CgroupLayout.from_system()
    sweep(layout, prefix=detail["relpath"])
    layout.everywhere(detail["relpath"]).remove()  # the group is gone: this prunes its empty parents


def _split_relpath(relpath: str) -> list[str]:
    """Check a group path like ``labkit/run/name``: relative, no empty, ``.`` or ``..`` parts."""
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    if not relpath or any(not _GROUP_NAME.match(p) for p in parts):
        raise BadParameter(
            f"relpath={relpath!r}: not a group path below the cgroup root.",
            "Give a relative path like 'labkit/<run_id>/<name>' whose parts use letters, digits and _ . @ : - "
            "(not starting with . or -)."
        )
    return parts


def _below_mount(path: str, mount_root: str) -> str | None:
    """``path`` (from /proc/<pid>/cgroup) relative to the mount's root, None when it is not below it."""
    root = mount_root.rstrip("/")
    if not path.startswith("/") or (root and path != root and not path.startswith(root + "/")):
        return None
    relative = path[len(root):].strip("/")  # "" is the mounted root itself
    if relative and any(part in ("", ".", "..") for part in relative.split("/")):
        return None  # e.g. "/../x": outside the reader's cgroup namespace
    return relative


def _enable_controllers(directory: Path, controllers: Iterable[str]) -> None:
    """Make sure a v2 group's children get ``controllers`` (writing ``+x`` twice is harmless)."""
    names = list(controllers)
    if not names:
        return
    control = directory / "cgroup.subtree_control"
    try:
        _write(control, " ".join(f"+{c}" for c in names))
    except OSError as exc:
        raise CgroupError(
            f"cannot enable {' '.join(names)} in {control}: {exc.strerror}.",
            'On cgroup v2 a group with processes cannot pass controllers to children ("no internal processes"); '
            "labkit creates its groups under the cgroup root for this reason: move processes out of the parent."
        ) from exc


def _mkdir_retrying(directory: Path) -> None:
    """mkdir, tolerating a parent that a concurrent :meth:`Cgroup.remove` pruned a moment ago."""
    for _ in range(20):
        try:
            directory.mkdir()
            return
        except FileExistsError:
            return
        except FileNotFoundError:
            directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir()


def _prune_empty_parents(directory: Path, levels: int) -> None:
    for parent in list(directory.parents)[:levels]:
        try:
            _remove_group_dir(parent)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return  # another group (or process) still uses it: keep it
            raise


def _remove_group_dir(directory: Path) -> None:
    """rmdir a group; on cgroupfs the kernel removes its control files with it (tests emulate this)."""
    directory.rmdir()


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: Path) -> str:
    return path.read_text().strip()
