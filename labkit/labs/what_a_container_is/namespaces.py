"""Section 1: namespaces, read from /proc, on the host, in a default container and with ``--X host``."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

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
        return table.loc[order, [k for k in procfs.NAMESPACE_KINDS if k in table.columns]]

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
        rows = self.inside[(self.inside["subject"] == subject) & (self.inside["check"] == check)]
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
             "shared": found[kind] == host[kind]} for kind in procfs.NAMESPACE_KINDS]


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
