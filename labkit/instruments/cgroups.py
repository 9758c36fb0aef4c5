"""One interface over cgroup v1 and v2: create a group with limits, read memory and pids, kill, remove.

Where the memory and pids controllers live is read from /proc/self/mountinfo (:func:`detect`): on a v1 host
each controller has its own hierarchy (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/pids``), on a v2 host both
are in the unified tree (``/sys/fs/cgroup``); a hybrid host can have both kinds mounted at once. A
:class:`Cgroup` is one relative path (``labkit/<run_id>/<name>``) that exists in every hierarchy it needs.

The filesystem root is injectable (``root``) so recorded fixture trees in a temporary directory work like
the kernel's files. Used by notebook 01 (a container from scratch) and 07 (cgroups, :class:`MemorySampler`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from labkit.instruments import procfs

if TYPE_CHECKING:
    import pandas as pd

Version = Literal["v1", "v2"]

MIB = 1024 * 1024
MEMORY_MIN_BYTES = 4 * MIB
PIDS_MAX_LIMIT = 4_194_304  # PID_MAX_LIMIT on 64-bit kernels: the largest value pids.max accepts
# v1 reports "no limit" as PAGE_COUNTER_MAX * page size (9223372036854771712 with 4 KiB pages); anything
# this large is not a limit anyone set.
_V1_UNLIMITED_FROM = 2**62
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]*$")


class CgroupError(RuntimeError):
    """Something about the cgroup filesystem prevents the operation; the message says what to do."""


class CgroupUnavailable(CgroupError):
    """A controller labkit needs (memory, or pids when a pids limit is asked for) is not available."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: where it is (already joined with the layout's root) and its version."""

    path: Path
    version: Version


@dataclass(frozen=True)
class CgroupLayout:
    """Where the memory and pids controllers are mounted; ``version`` is that of the memory controller."""

    memory: Hierarchy
    pids: Hierarchy | None
    root: Path = Path("/")

    @property
    def version(self) -> Version:
        return self.memory.version

    @classmethod
    def from_system(cls, root: Path = Path("/")) -> CgroupLayout:
        """Read ``<root>/proc/self/mountinfo`` (the running kernel's for ``/``) and :func:`detect`."""
        text = (root / "proc/self/mountinfo").read_text()
        return detect(text, root=root)

    def hierarchies(self) -> list[Hierarchy]:
        """The distinct hierarchies a labkit group lives in (one on v2, two on v1)."""
        out = [self.memory]
        if self.pids is not None and self.pids != self.memory:
            out.append(self.pids)
        return out

    def create(self, relpath: str, memory_max_bytes: int | None, pids_max: int | None) -> Cgroup:
        """Make the group ``relpath`` (e.g. ``labkit/<run_id>/<name>``) and set its limits (None: no limit).

        Limits are validated before anything is created. Raises FileExistsError when the group is already
        there (a run interrupted earlier: ``labkit clean`` removes it). On v2 the parents get
        ``+memory +pids`` in ``cgroup.subtree_control`` so the leaf has those files.
        """
        validate_limits(memory_max_bytes, pids_max)
        parts = _split_relpath(relpath)
        if pids_max is not None and self.pids is None:
            raise CgroupUnavailable(
                "pids_max was given but no pids controller is mounted (neither a v1 `pids` hierarchy nor "
                "`pids` in the cgroup2 root's cgroup.controllers). Enable it (kernel CONFIG_CGROUP_PIDS) or "
                "pass pids_max=None."
            )
        group = self.open(relpath)
        existing = [d for d in group.dirs() if d.exists()]
        if existing:
            raise FileExistsError(
                f"cgroup {relpath!r} already exists ({existing[0]}): left over from an interrupted run? "
                "`labkit clean` removes labkit's leftover groups."
            )
        created: list[Path] = []
        try:
            for hierarchy in self.hierarchies():
                controllers = self._controllers_on(hierarchy)
                directory = hierarchy.path
                for part in parts:
                    if hierarchy.version == "v2":
                        _enable_controllers(directory, controllers)
                    directory = directory / part
                    if not directory.exists():
                        _mkdir_retrying(directory)
                        created.append(directory)
            if memory_max_bytes is not None:
                name = "memory.limit_in_bytes" if self.memory.version == "v1" else "memory.max"
                _write(group.dir("memory") / name, str(memory_max_bytes))
            if pids_max is not None:
                _write(group.dir("pids") / "pids.max", str(pids_max))
        except BaseException:
            for directory in reversed(created):
                with contextlib.suppress(OSError):  # the original error is the one worth reporting
                    _remove_group_dir(directory)
            raise
        return group

    def open(self, relpath: str) -> Cgroup:
        """The group at ``relpath`` (which may or may not exist yet); nothing is touched."""
        _split_relpath(relpath)
        return Cgroup(self, relpath)

    def _controllers_on(self, hierarchy: Hierarchy) -> list[str]:
        names = ["memory"] if self.memory == hierarchy else []
        if self.pids == hierarchy:
            names.append("pids")
        return names


def validate_limits(memory_max_bytes: int | None, pids_max: int | None) -> None:
    """Raise ValueError naming the parameter and the allowed range when a limit is out of range."""
    if memory_max_bytes is not None and (
        isinstance(memory_max_bytes, bool)
        or not isinstance(memory_max_bytes, int)
        or memory_max_bytes < MEMORY_MIN_BYTES
    ):
        raise ValueError(
            f"memory_max_bytes={memory_max_bytes!r}: allowed is an int >= {MEMORY_MIN_BYTES} (4 MiB), "
            "or None for no limit"
        )
    if pids_max is not None and (
        isinstance(pids_max, bool) or not isinstance(pids_max, int) or not 1 <= pids_max <= PIDS_MAX_LIMIT
    ):
        raise ValueError(
            f"pids_max={pids_max!r}: allowed is an int in 1..{PIDS_MAX_LIMIT}, or None for no limit"
        )


def detect(mountinfo_text: str, root: Path = Path("/")) -> CgroupLayout:
    """Find the memory and pids controllers in the text of /proc/self/mountinfo.

    A v1 mount (fs type ``cgroup``) lists its controllers in the super options (``rw,memory``); a controller
    bound to a v1 hierarchy is not available on cgroup2. For a ``cgroup2`` mount the available controllers
    are read from ``<root>/<mount point>/cgroup.controllers``. Raises CgroupUnavailable when no memory
    controller is found, saying what to do about it.
    """
    v1: dict[str, Path] = {}
    v2_mounts: list[Path] = []
    try:
        mounts = procfs.parse_mountinfo(mountinfo_text)
    except ValueError as exc:
        raise ValueError(f"not a /proc/self/mountinfo line: {exc}") from exc
    for mount in mounts:
        path = root / mount.mount_point.lstrip("/")
        if mount.fs_type == "cgroup":
            for option in mount.super_options:
                v1.setdefault(option, path)
        elif mount.fs_type == "cgroup2":
            v2_mounts.append(path)

    v2_available: list[tuple[Path, set[str]]] = []
    for path in v2_mounts:
        try:
            v2_available.append((path, set((path / "cgroup.controllers").read_text().split())))
        except OSError as exc:
            if "memory" not in v1:
                raise CgroupUnavailable(
                    f"cgroup2 is mounted at {path} but {path / 'cgroup.controllers'} cannot be read ({exc})."
                ) from exc

    def find(controller: str) -> Hierarchy | None:
        if controller in v1:
            return Hierarchy(v1[controller], "v1")
        for path, available in v2_available:
            if controller in available:
                return Hierarchy(path, "v2")
        return None

    memory = find("memory")
    if memory is None:
        if not v1 and not v2_mounts:
            raise CgroupUnavailable(
                "No cgroup filesystem is mounted (no `cgroup` or `cgroup2` line in /proc/self/mountinfo). "
                "Mount one: `mount -t cgroup2 none /sys/fs/cgroup`."
            )
        seen = ", ".join(f"{p} ({' '.join(sorted(c)) or 'no controllers'})" for p, c in v2_available)
        raise CgroupUnavailable(
            "No memory controller: it is not on any cgroup v1 hierarchy"
            + (f" and not in cgroup2's cgroup.controllers at {seen}" if seen else "")
            + ". To fix: if the kernel has it disabled, boot with `cgroup_enable=memory` (e.g. Raspberry Pi "
            "OS); on cgroup v2 make sure `memory` is in the root's cgroup.subtree_control "
            "(`echo +memory > /sys/fs/cgroup/cgroup.subtree_control`) and, inside a container, that the "
            "container was given a delegated cgroup."
        )
    return CgroupLayout(memory=memory, pids=find("pids"), root=root)


@dataclass
class Cgroup:
    """One group: ``relpath`` below every hierarchy of ``layout``; methods read and write kernel files."""

    layout: CgroupLayout
    relpath: str

    def dir(self, controller: Literal["memory", "pids"]) -> Path:
        """The directory holding ``controller``'s files for this group."""
        hierarchy = self.layout.memory if controller == "memory" else self.layout.pids
        if hierarchy is None:
            raise CgroupUnavailable(f"no {controller} controller is mounted")
        return hierarchy.path / self.relpath

    def dirs(self) -> list[Path]:
        """This group's directory in each hierarchy."""
        return [h.path / self.relpath for h in self.layout.hierarchies()]

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

    def memory_current_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.layout.memory.version == "v1" else "memory.current"
        return int(_read(self.dir("memory") / name))

    def memory_max_bytes(self) -> int | None:
        """The memory limit in bytes, None when there is none (v1's huge value, v2's ``max``)."""
        if self.layout.memory.version == "v1":
            value = int(_read(self.dir("memory") / "memory.limit_in_bytes"))
            return None if value >= _V1_UNLIMITED_FROM else value
        text = _read(self.dir("memory") / "memory.max")
        return None if text == "max" else int(text)

    def pids_max(self) -> int | None:
        text = _read(self.dir("pids") / "pids.max")
        return None if text == "max" else int(text)

    def memory_events(self) -> dict[str, int]:
        """Counters of memory events: v2's memory.events as is; on v1 ``max`` (memory.failcnt, times usage
        hit the limit) and ``oom_kill`` (from memory.oom_control)."""
        directory = self.dir("memory")
        if self.layout.memory.version == "v2":
            return _read_flat_keyed(directory / "memory.events")
        events = {"max": int(_read(directory / "memory.failcnt"))}
        oom_control = _read_flat_keyed(directory / "memory.oom_control")
        if "oom_kill" in oom_control:  # kernels before 4.13 do not count OOM kills per group
            events["oom_kill"] = oom_control["oom_kill"]
        return events

    def kill_all(self, timeout_s: float = 5.0) -> None:
        """SIGKILL every process in the group, again and again, until it is empty.

        Raises TimeoutError when processes are still listed after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        kill_file = self.dir("memory") / "cgroup.kill"
        if self.layout.memory.version == "v2" and kill_file.exists():
            _write(kill_file, "1")  # atomic against fork, kernel >= 5.14
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile: what we wanted
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"cgroup {self.relpath!r}: processes {pids} still there after {timeout_s} s"
                )
            time.sleep(0.005)

    def remove(self, *, prune_parents: bool = True, timeout_s: float = 2.0) -> None:
        """rmdir this group in every hierarchy (call :meth:`kill_all` first); a missing directory is fine.

        With ``prune_parents`` the ancestors up to the first path component (``labkit``) are removed too
        when nothing else is in them. A group the kernel still counts as busy shortly after its last
        process died is retried until ``timeout_s``.
        """
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
                        raise CgroupError(
                            f"cannot remove cgroup {directory}: {exc.strerror}; still in it: {self.pids()} "
                            "(call kill_all() first; child groups must be removed before their parent)"
                        ) from exc
                    time.sleep(0.01)
        if prune_parents:
            for directory in self.dirs():
                _prune_empty_parents(directory, levels=self.relpath.count("/"))


def sweep(layout: CgroupLayout, prefix: str = "labkit", timeout_s: float = 5.0) -> list[str]:
    """Kill and remove every group below ``<prefix>/`` and then ``prefix`` itself, deepest first.

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
        group = layout.open(relpath)
        group.kill_all(timeout_s)
        group.remove(prune_parents=False)
        removed.append(relpath)
    return removed


@dataclass
class MemorySampler:
    """Sample a group's memory usage every ``interval_s`` in a background thread (notebook 07).

    ``with MemorySampler(group, 0.05) as sampler: ...`` then ``sampler.frame()``: columns ``t_s`` (seconds
    since the sampler started) and ``memory_bytes``. Sampling ends quietly when the group disappears.
    """

    cgroup: Cgroup
    interval_s: float = 0.05
    _samples: list[tuple[float, int]] = field(default_factory=list, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _error: BaseException | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s={self.interval_s!r}: allowed is a number of seconds > 0")

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(
            target=self._run, name=f"MemorySampler({self.cgroup.relpath})", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and exc_type is None:
            raise self._error

    def _run(self) -> None:
        start = time.perf_counter_ns()
        while True:
            try:
                value = self.cgroup.memory_current_bytes()
            except FileNotFoundError:
                return  # the group was removed: the experiment is over
            except BaseException as exc:
                self._error = exc
                return
            self._samples.append(((time.perf_counter_ns() - start) / 1e9, value))
            if self._stop.wait(self.interval_s):
                return

    def frame(self) -> pd.DataFrame:
        """The samples so far: one row per sample, columns ``t_s`` and ``memory_bytes``."""
        import pandas as pd

        return pd.DataFrame(list(self._samples), columns=["t_s", "memory_bytes"])


def _split_relpath(relpath: str) -> list[str]:
    """Check a group path like ``labkit/run/name``: relative, no empty, ``.`` or ``..`` parts."""
    parts = relpath.split("/")
    if not relpath or any(not _GROUP_NAME.match(p) for p in parts):
        raise ValueError(
            f"relpath={relpath!r}: allowed is a relative path like 'labkit/<run_id>/<name>' whose parts use "
            "letters, digits and _ . @ : - (not starting with . or -); the cgroup root itself is not allowed"
        )
    return parts


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
            f"cannot enable {' '.join(names)} in {control}: {exc.strerror}. On cgroup v2 a group with "
            'processes cannot pass controllers to children ("no internal processes"); labkit creates its '
            "groups under the cgroup root for this reason."
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


def _read_flat_keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (memory.events, memory.oom_control)."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out
