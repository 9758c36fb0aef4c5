"""Section 1: namespaces, read from /proc, on the host, in a default container and with ``--X host``."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import containers, images, procfs
from labkit.labs.what_a_container_is.declaration import (
    DEFAULT,
    HOST,
    SHARED_NAMESPACE_VARIANTS,
    SLEEP_ARGV,
    limits_for,
    listed,
)

SHOWN_KINDS = (*procfs.NAMESPACE_KINDS, "time")  # "time": Linux >= 5.6, absent from older kernels' tables


@dataclass(frozen=True)
class NamespaceResult:
    """`namespaces`: subject, kind, inode, host_inode, shared (with the host).

    `inside`: subject, check, inside, host, same — what a process in the subject sees against the host.
    `ancestry`: subject, depth, pid, name, command — the default container's main process and its parents as
    the host sees them (depth 0 is the process itself).
    """

    namespaces: pd.DataFrame
    inside: pd.DataFrame
    ancestry: pd.DataFrame

    def verdicts(self) -> pd.DataFrame:
        """subject × kind table of 'shared' / 'new'."""
        labels = self.namespaces.assign(verdict=self.namespaces["shared"].map({True: "shared", False: "new"}))
        table = labels.pivot(index="subject", columns="kind", values="verdict")
        order = list(dict.fromkeys(self.namespaces["subject"]))
        return table.loc[order, [k for k in SHOWN_KINDS if k in table.columns]]

    def inodes(self) -> pd.DataFrame:
        """subject × kind table of namespace inode numbers, in the order of :meth:`verdicts`."""
        verdicts = self.verdicts()
        return self.namespaces.pivot(index="subject", columns="kind", values="inode").loc[verdicts.index,
                                                                                          verdicts.columns]

    def new_kinds(self, subject: str) -> list[str]:
        rows = self.namespaces[(self.namespaces["subject"] == subject) & ~self.namespaces["shared"]]
        return list(rows["kind"])

    def shared_kinds(self, subject: str) -> list[str]:
        rows = self.namespaces[(self.namespaces["subject"] == subject) & self.namespaces["shared"]]
        return list(rows["kind"])

    def fact(self, check: str, subject: str = DEFAULT) -> pd.Series:
        rows = rows_where(self.inside, subject=subject, check=check)
        if rows.empty:
            raise KeyError(f"no check {check!r} for {subject!r}")
        return rows.iloc[0]

    @property
    def parent_chain(self) -> str:
        """The default container's main process and its parents, e.g. ``sleep ← containerd-shim-runc-v2``."""
        return " ← ".join(self.ancestry.sort_values("depth")["name"])

    @property
    def parent_name(self) -> str:
        rows = self.ancestry[self.ancestry["depth"] == 1]
        return str(rows["name"].iloc[0]) if not rows.empty else "(not readable)"

    @property
    def same_kernel(self) -> bool:
        """The same boot id and the same release inside and outside: one running kernel."""
        return bool(self.fact("kernel boot id")["same"]) and bool(self.fact("kernel release (uname -r)")["same"])

    def conclusion(self) -> str:
        new, shared = self.new_kinds(DEFAULT), self.shared_kinds(DEFAULT)
        flags = "; ".join(f"`{subject}` shares {listed(self.shared_kinds(subject))}"
                          for subject in SHARED_NAMESPACE_VARIANTS if subject != DEFAULT)
        text = (f"**What we measured.** A default container gets new **{', '.join(new)}** namespaces and keeps the "
                f"host's **{listed(shared)}**. {flags}.")
        if "user" in shared:
            text += (" The user namespace is the host's: uid 0 in the container is uid 0 on the host, held back only "
                     "by capabilities and seccomp (section 2).")
        if "cgroup" in shared:
            text += " The cgroup namespace is the host's too: Docker makes a private one only on cgroup v2 hosts."
        if "time" in shared:
            text += (" So is the time namespace (Linux ≥ 5.6): the container's clocks are the host's clocks, "
                     "read below.")
        return text

    def inside_conclusion(self) -> str:
        pid, pid1 = self.fact("its PID"), self.fact("command of its PID 1")
        nics, mounts = self.fact("network interfaces"), self.fact("mounts in its table")
        kernel, boot = self.fact("kernel release (uname -r)"), self.fact("kernel boot id")
        kernels = "one kernel, shared." if self.same_kernel else "two kernels — this would not be a container."
        return (f"The container's main process is host PID {pid['host']}, but inside its namespace it is PID "
                f"**{pid['inside']}** and PID 1 runs `{pid1['inside']}`. From the host it is an ordinary process "
                f"whose parent chain reads **{self.parent_chain}**: a child of the container runtime's shim, not of "
                f"a virtual machine. It sees the interfaces **{nics['inside']}** (the host: {nics['host']}), its "
                f"own hostname `{self.fact('hostname')['inside']}`, {mounts['inside']} mounts against the host's "
                f"{mounts['host']}, on a `{self.fact('filesystem at /')['inside']}` root. But `uname -r` says "
                f"**{kernel['inside']}** inside and **{kernel['host']}** outside, and the kernel's boot id reads "
                f"`{boot['inside']}` inside and `{boot['host']}` outside: {kernels}")


def namespace_rows(subject: str, pid: int | str, host: dict[str, int]) -> list[dict[str, Any]]:
    found = procfs.namespaces(pid)
    return [{"subject": subject, "kind": kind, "inode": found[kind], "host_inode": host[kind],
             "shared": found[kind] == host[kind]} for kind in SHOWN_KINDS if kind in found]


def inside_rows(subject: str, pid: int, inside_argv: Callable[[list[str]], str]) -> list[dict[str, Any]]:
    """What the process `pid` sees, read from the host's /proc and by running commands in its namespaces.

    The host side is this lab's own process, never PID 1 (on a host that is itself a microVM, PID 1 may hide
    its /proc entries)."""
    status = procfs.read_status(pid)
    host_mounts = procfs.read_mountinfo("self")
    mounts = procfs.read_mountinfo(pid)
    root_fs = next(m.fs_type for m in reversed(mounts) if m.mount_point == "/")
    host_root_fs = next(m.fs_type for m in reversed(host_mounts) if m.mount_point == "/")
    checks = [
        # The same process, as its own pid namespace numbers it and as the host does.
        ("its PID", str(status.nspid[-1]), str(status.nspid[0])),
        ("command of its PID 1", " ".join(procfs.cmdline(pid)), " ".join(procfs.cmdline(1))),
        ("network interfaces", " ".join(sorted(procfs.interfaces(pid))),
         " ".join(sorted(procfs.interfaces("self")))),
        ("hostname", inside_argv(["hostname"]), socket.gethostname()),
        ("mounts in its table", str(len(mounts)), str(len(host_mounts))),
        ("filesystem at /", root_fs, host_root_fs),
        ("kernel release (uname -r)", inside_argv(["uname", "-r"]), os.uname().release),
        ("kernel boot id", inside_argv(["cat", "/proc/sys/kernel/random/boot_id"]), procfs.boot_id()),
    ]
    return [{"subject": subject, "check": check, "inside": inside, "host": host, "same": inside == host}
            for check, inside, host in checks]


def _variant_stem(subject: str) -> str:
    return "ns-" + "".join(ch if ch.isalnum() else "-" for ch in subject).strip("-")


def run_namespaces(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> NamespaceResult:
    """Namespace inodes of this lab's process and of a default container and one per `--X host` flag; what the
    default container sees inside; its parent chain on the host. Each container runs under
    `memory_limit_mib` MiB, 32 pids and half a core."""
    images.validate_base(base)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/ns links")

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        image = images.require_base(client, base).tag
        host = procfs.namespaces("self")
        rows = namespace_rows(HOST, "self", host)
        with lab.scope() as scope:
            for subject, options in SHARED_NAMESPACE_VARIANTS.items():
                with containers.running(client, scope, image, SLEEP_ARGV, stem=_variant_stem(subject),
                                        limits=limits, **options) as container:
                    rows += namespace_rows(subject, containers.host_pid(client, container.id), host)
            with containers.running(client, scope, image, SLEEP_ARGV, stem="inside", limits=limits) as container:
                pid = containers.host_pid(client, container.id)
                inside = inside_rows(DEFAULT, pid, lambda argv: containers.exec_text(container, argv))
                chain = [{"subject": DEFAULT, "depth": depth, "pid": a.pid, "name": a.name, "command": a.command}
                         for depth, a in enumerate(procfs.ancestry(pid))]
        return {"namespaces": pd.DataFrame(rows), "inside": pd.DataFrame(inside), "ancestry": pd.DataFrame(chain)}

    tables = lab.record("namespaces", ("namespaces", "inside", "ancestry"), experiment, base=base, **limits.record())
    return NamespaceResult(tables["namespaces"], tables["inside"], tables["ancestry"])


TIME_NAMESPACE = "time namespace"
TIME_FOR_CHILDREN = "time namespace for its children"
REALTIME = "wall clock (date +%s), s"
BOOTTIME = "time since boot (/proc/uptime), s"


@dataclass(frozen=True)
class ClockResult:
    """`clock`: subject, check, inside, host_low, host_high, within — the default container's time namespaces
    (inode numbers; the host's in both host columns; NaN where the kernel has none) and its clocks read inside,
    bracketed by the host's clock read just before (floored to the inside reading's resolution) and just after:
    `within` says the inside reading lies in that bracket. Empty when replaying a recording made without it."""

    clock: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.clock.empty

    def row(self, check: str) -> pd.Series:
        return self.clock.set_index("check").loc[check]

    def readings(self) -> pd.DataFrame:
        """:attr:`clock` for display: inode numbers whole, clocks to the hundredth of a second."""
        shown = self.clock.copy()
        inodes = shown["check"].isin([TIME_NAMESPACE, TIME_FOR_CHILDREN])
        for column in ("inside", "host_low", "host_high"):
            shown[column] = [f"{v:.0f}" if inode else f"{v:.2f}" for v, inode in zip(shown[column], inodes,
                                                                                       strict=True)]
        return shown

    @property
    def kernel_has_time_namespaces(self) -> bool:
        return bool(pd.notna(self.row(TIME_NAMESPACE)["inside"]))

    @property
    def shares_time_namespace(self) -> bool:
        """Its time namespace and its children's are the host's (or the kernel has none: one clock for all)."""
        return (not self.kernel_has_time_namespaces
                or bool(self.row(TIME_NAMESPACE)["within"] and self.row(TIME_FOR_CHILDREN)["within"]))

    @property
    def clocks_agree(self) -> bool:
        """Both clocks read inside fall within the host's readings around them."""
        return bool(self.row(REALTIME)["within"] and self.row(BOOTTIME)["within"])

    def conclusion(self) -> str:
        if not self.recorded:
            return ("*The clock was not measured in the recording this notebook replays (it predates this "
                    "section): a live run measures it.*")
        wall, boot = self.row(REALTIME), self.row(BOOTTIME)
        if not self.kernel_has_time_namespaces:
            ns = "This kernel has no time namespaces (before Linux 5.6): one set of clocks serves every process."
        else:
            own = self.row(TIME_NAMESPACE)
            ns = (f"Its time namespace is `{int(own['inside'])}` against the host's `{int(own['host_low'])}`, and "
                  f"the one its children would be born in is `{int(self.row(TIME_FOR_CHILDREN)['inside'])}`: "
                  + ("**the host's**, both." if self.shares_time_namespace else "**its own**."))
        return (f"**What we measured.** {ns} Inside, `date +%s` read **{wall['inside']:.0f}** while the host read "
                f"{wall['host_low']:.0f}–{wall['host_high']:.2f} around it "
                f"({'within' if wall['within'] else 'OUTSIDE'} the bracket); `/proc/uptime` read "
                f"{boot['inside']:.2f} s against the host's {boot['host_low']:.2f}–{boot['host_high']:.2f} s "
                f"({'within' if boot['within'] else 'OUTSIDE'}). A time namespace could only offset the clocks "
                "since boot; the wall clock is not namespaced at all. So a host whose clock is wrong (NTP stopped, "
                "a skewed RTC) is wrong in every container on it; notebook 10 shows that a container cannot set it.")


def _clock_row(check: str, inside: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    missing = inside is None or low is None or high is None
    return {"subject": DEFAULT, "check": check, "inside": math.nan if inside is None else inside,
            "host_low": math.nan if low is None else low, "host_high": math.nan if high is None else high,
            "within": (not missing) and low <= inside <= high}  # type: ignore[operator]


def run_clock(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> ClockResult:
    """The default container's time namespaces against the host's, and its wall clock (s since the epoch) and
    time since boot (s) read inside, each between two readings of the host's. Under `memory_limit_mib` MiB,
    32 pids and half a core."""
    images.validate_base(base)
    limits = limits_for(lab, memory_limit_mib)
    if (missing := lab.unrecorded("clock")) is not None:
        return ClockResult(missing)
    lab.require_root("reading a container's /proc/<pid>/ns/time")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        with lab.scope() as scope, containers.running(client, scope, image, SLEEP_ARGV, stem="clock",
                                                      limits=limits) as container:
            pid = containers.host_pid(client, container.id)
            host_ns = procfs.namespaces("self").get("time")
            host_children = procfs.namespace_for_children("time", "self")
            rows = [_clock_row(TIME_NAMESPACE, procfs.namespaces(pid).get("time"), host_ns, host_ns),
                    _clock_row(TIME_FOR_CHILDREN, procfs.namespace_for_children("time", pid), host_children,
                               host_children)]
            before = time.time()
            wall = float(containers.exec_text(container, ["date", "+%s"]))
            rows.append(_clock_row(REALTIME, wall, math.floor(before), time.time()))  # date prints whole seconds
            before = time.clock_gettime(time.CLOCK_BOOTTIME)
            since_boot = float(containers.exec_text(container, ["cat", "/proc/uptime"]).split()[0])
            after = time.clock_gettime(time.CLOCK_BOOTTIME)
            rows.append(_clock_row(BOOTTIME, since_boot, math.floor(before * 100) / 100, after))  # 1/100 s
        return pd.DataFrame(rows)

    return ClockResult(lab.measure("clock", experiment, base=base, **limits.record()))
