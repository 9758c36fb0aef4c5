"""Notebook 01, what a container actually is: namespaces, privileges, a container from scratch, start-up cost.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results, computed from the frames.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, Verdict, verdict
from labkit.core.lab import ENGINE, ROOT, Lab, Requirement
from labkit.core.session import LabSession
from labkit.instruments import containers, elf, images, measure, procfs, scratch, space, vm
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run
from labkit.paths import cache_dir

STEM = "01-what-a-container-is"
ISOLATED_KINDS = ("pid", "net", "mnt", "uts", "ipc")
CHAPTER_KINDS = (*ISOLATED_KINDS, "user")  # the six kinds of namespace the chapter names
HOST = "host"
DEFAULT = "docker run (default)"
HOST_NETWORK = "--network host"
FROM_SCRATCH = "from scratch (unshare)"
CAP_DROP_ALL = "--cap-drop ALL"
CAP_ADD = "--cap-add NET_ADMIN"
UNCONFINED = "--security-opt seccomp=unconfined"

# docker run flags whose namespace is the host's, as SDK keyword arguments.
SHARED_NAMESPACE_VARIANTS: dict[str, dict[str, str]] = {
    DEFAULT: {},
    "--pid host": {"pid_mode": "host"},
    HOST_NETWORK: {"network_mode": "host"},
    "--ipc host": {"ipc_mode": "host"},
    "--uts host": {"uts_mode": "host"},
}

# docker run flags that change privileges, as SDK keyword arguments; the single --cap-add is not a default one.
PRIVILEGE_VARIANTS: dict[str, dict[str, Any]] = {
    DEFAULT: {},
    CAP_DROP_ALL: {"cap_drop": ["ALL"]},
    CAP_ADD: {"cap_add": ["NET_ADMIN"]},
    UNCONFINED: {"security_opt": ["seccomp=unconfined"]},
}

# Capabilities whose loss is what makes root in a container less dangerous (module loading, mounts and most of
# the kernel's admin interface, raw devices, tracing other processes, the network stack, the clock, reboot).
DANGEROUS_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_NET_ADMIN",
                          "CAP_SYS_TIME", "CAP_SYS_BOOT", "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_MAC_ADMIN")
NET_RAW = "CAP_NET_RAW"  # raw sockets (ping): the chapter's example of a capability a container need not get

FORK_EXEC = "fork/exec"
SCRATCH_START = "from scratch"
DOCKER_SDK = "docker SDK"
DOCKER_CLI = "docker CLI"
STARTUP_METHODS = (FORK_EXEC, SCRATCH_START, DOCKER_SDK, DOCKER_CLI)
PIDS_LIMIT = 32
CPUS = 0.5  # half a core
LIMIT_NAMES = ("memory_limit_mib", "pids_limit", "cpus")
SLEEP_ARGV = ["/bin/sleep", "300"]
BUSYBOX_TRUE = ["/bin/busybox", "true"]
# A string that doubles until the memory limit stops it: the OOM killer ends the shell (exit 128 + SIGKILL).
MEMORY_HOG_ARGV = ["/bin/sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]
MINUTE_S = 60.0

# The chapter's sections these claims come from, as it spells them.
SECTION_WHAT = "What a Container Actually Is"
SECTION_NETWORKING = "Networking — How Containers Talk"


def prepare(client: docker.DockerClient) -> list[str]:
    """The from-scratch root filesystems and the VM's kernel and initramfs (bases are made by setup)."""
    assets = vm.prepare_vm_assets(cache_dir() / "vm")
    return [f"rootfs busybox: {images.rootfs_dir('busybox')}",
            f"rootfs debian-minbase: {images.rootfs_dir('debian-minbase')}",
            f"vm kernel: {assets.kernel_release} ({assets.kernel})"]


LAB = Lab(
    stem=STEM,
    topic="What a container actually is",
    requirements=(
        ENGINE, ROOT,
        Requirement("cgroup", "memory", "the from-scratch container's memory limit"),
        Requirement("cgroup", "pids", "the from-scratch container's pids limit"),
        Requirement("cgroup", "cpu", "the from-scratch container's CPU limit"),
        Requirement("program", "unshare", "the from-scratch container"),
        Requirement("program", "nsenter", "reading inside the from-scratch container"),
        Requirement("program", "debootstrap", "the Debian minbase root filesystem"),
        Requirement("program", "busybox", "the busybox base, rootfs and initramfs"),
        Requirement("program", "qemu-system-x86_64", "the VM boot comparison"),
        Requirement("kvm", purpose="VM boots at hardware speed", required=False),
    ),
    bases=("busybox",),
    tables={
        "namespaces": ("subject", "kind", "inode", "host_inode", "shared"),
        "inside": ("subject", "check", "inside", "host", "same"),
        "ancestry": ("subject", "depth", "pid", "name", "command"),
        "capabilities": ("subject", "capability", "effective", "host_effective", "seccomp_mode", "bounding"),
        "scratch_cgroup": ("memory_limit_bytes", "pids_limit", "cpus", "memory_limit_read_bytes", "cgroup",
                           "pid_in_cgroup", "cleaned", "cgroup_version", "effective_capabilities", "seccomp_mode",
                           "hog_exit_code", "hog_raw_exit", "hog_oom_kills"),
        "scratch_namespaces": ("subject", "kind", "inode", "host_inode", "shared"),
        "scratch_inside": ("subject", "check", "inside", "host", "same"),
        "startup": ("method", "repeat", "position", "wall_s", "memory_limit_bytes", "pids_limit", "cpus",
                    "static_binary"),
        "vm_boot": ("repeat", "wall_s", "marker_seen", "timed_out", "timeout_s", "accelerator", "kernel_release",
                    "kvm_probe"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
    headline="startup.milliseconds",
)


def limits_for(lab: LabSession, memory_limit_mib: int) -> Limits:
    """The budget every container of this notebook runs under: `memory_limit_mib` MiB, 32 pids, half a core.
    Live, a limit more than the host's free memory can give is refused too: a container may fill its limit (the
    from-scratch memory hog does)."""
    limits = Limits.of(memory_mib=memory_limit_mib, pids=PIDS_LIMIT, cpus=CPUS, names=LIMIT_NAMES)
    if lab.live:
        space.require_memory({space.Size(LIMIT_NAMES[0], memory_limit_mib): 1})
    return limits


def _join(names: list[str] | set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _short(capabilities: set[str]) -> str:
    return _join({c.removeprefix("CAP_") for c in capabilities})


# ---------------------------------------------------------------- namespaces


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
        flags = "; ".join(f"`{subject}` shares {_join(self.shared_kinds(subject))}"
                          for subject in SHARED_NAMESPACE_VARIANTS if subject != DEFAULT)
        text = (f"**What we measured.** A default container gets new **{', '.join(new)}** namespaces and keeps the "
                f"host's **{_join(shared)}**. {flags}.")
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


def _namespace_rows(subject: str, pid: int | str, host: dict[str, int]) -> list[dict[str, Any]]:
    found = procfs.namespaces(pid)
    return [{"subject": subject, "kind": kind, "inode": found[kind], "host_inode": host[kind],
             "shared": found[kind] == host[kind]} for kind in procfs.NAMESPACE_KINDS]


def _inside_rows(subject: str, pid: int, inside_argv: Callable[[list[str]], str]) -> list[dict[str, Any]]:
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
        rows = _namespace_rows(HOST, "self", host)
        with lab.scope() as scope:
            for subject, options in SHARED_NAMESPACE_VARIANTS.items():
                with containers.running(client, scope, image, SLEEP_ARGV, stem=_variant_stem(subject),
                                        limits=limits, **options) as container:
                    rows += _namespace_rows(subject, containers.host_pid(client, container.id), host)
            with containers.running(client, scope, image, SLEEP_ARGV, stem="inside", limits=limits) as container:
                pid = containers.host_pid(client, container.id)
                inside = _inside_rows(DEFAULT, pid, lambda argv: containers.exec_text(container, argv))
                chain = [{"subject": DEFAULT, "depth": depth, "pid": a.pid, "name": a.name, "command": a.command}
                         for depth, a in enumerate(procfs.ancestry(pid))]
        return {"namespaces": pd.DataFrame(rows), "inside": pd.DataFrame(inside), "ancestry": pd.DataFrame(chain)}

    tables = lab.record("namespaces", ("namespaces", "inside", "ancestry"), experiment, base=base, **limits.record())
    return NamespaceResult(tables["namespaces"], tables["inside"], tables["ancestry"])


# ---------------------------------------------------------------- privileges


@dataclass(frozen=True)
class PrivilegeResult:
    """`capabilities`: subject, capability, effective, host_effective, seccomp_mode, bounding (one row per
    subject × capability; seccomp_mode 0 disabled, 2 filter)."""

    capabilities: pd.DataFrame

    def effective(self, subject: str) -> set[str]:
        rows = self.capabilities[(self.capabilities["subject"] == subject) & self.capabilities["effective"]]
        return set(rows["capability"])

    def seccomp_mode(self, subject: str) -> int:
        return int(self.capabilities.loc[self.capabilities["subject"] == subject, "seccomp_mode"].iloc[0])

    @cached_property
    def seccomp(self) -> pd.DataFrame:
        """Per subject: seccomp_mode, effective_count, bounding_count."""
        return self.capabilities.groupby("subject", sort=False).agg(
            seccomp_mode=("seccomp_mode", "first"), effective_count=("effective", "sum"),
            bounding_count=("bounding", "sum")).reset_index()

    def matrix(self) -> pd.DataFrame:
        """capability × subject of ✓/· for the capabilities any subject holds."""
        table = self.capabilities.pivot(index="capability", columns="subject", values="effective")
        table = table.loc[table.any(axis=1), list(dict.fromkeys(self.capabilities["subject"]))]
        return table.map(lambda held: "✓" if held else "·")

    @property
    def dangerous_lacking(self) -> set[str]:
        """The dangerous capabilities host root holds and a default container's root does not."""
        return (self.effective(HOST) - self.effective(DEFAULT)) & set(DANGEROUS_CAPABILITIES)

    def conclusion(self) -> str:
        host_caps, default_caps = self.effective(HOST), self.effective(DEFAULT)
        added = self.effective(CAP_ADD) - default_caps
        return (f"**What we measured.** Root on this host holds {len(host_caps)} effective capabilities; root in a "
                f"default container holds {len(default_caps)}: {_short(default_caps)}. Among those it lacks are "
                f"the dangerous ones: **{_short(self.dangerous_lacking)}**. `{CAP_DROP_ALL}` leaves "
                f"{len(self.effective(CAP_DROP_ALL))}; `{CAP_ADD}` adds {_short(added)}. Seccomp mode is "
                f"{self.seccomp_mode(DEFAULT)} (filter) by default and {self.seccomp_mode(UNCONFINED)} with "
                "`seccomp=unconfined`.")


def run_privileges(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> PrivilegeResult:
    """Effective capabilities and seccomp mode of this lab's root process and of containers with privilege flags."""
    images.validate_base(base)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/status")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        statuses = {HOST: procfs.read_status("self")}
        with lab.scope() as scope:
            for index, (subject, options) in enumerate(PRIVILEGE_VARIANTS.items()):
                with containers.running(client, scope, image, SLEEP_ARGV, stem=f"priv-{index}", limits=limits,
                                        **options) as container:
                    statuses[subject] = procfs.read_status(containers.host_pid(client, container.id))
        host_effective = statuses[HOST].effective
        names = sorted(set().union(*(s.effective | s.bounding for s in statuses.values())))
        return pd.DataFrame([
            {"subject": subject, "capability": name, "effective": name in status.effective,
             "host_effective": name in host_effective, "seccomp_mode": status.seccomp,
             "bounding": name in status.bounding}
            for subject, status in statuses.items() for name in names])

    return PrivilegeResult(lab.measure("capabilities", experiment, base=base, **limits.record()))


# ---------------------------------------------------------------- a container from scratch


@dataclass(frozen=True)
class ScratchResult:
    """`namespaces`/`inside` as in :class:`NamespaceResult`, for the unshare container.

    `cgroup`: one row — the limits requested (memory_limit_bytes, pids_limit, cpus) and the memory limit read
    back, the cgroup path, whether its processes and cgroup were gone after it stopped (`cleaned`), the
    effective capability count and seccomp mode of its PID 1, and what a memory hog under the same limits did:
    `hog_exit_code` as a shell reports it, `hog_raw_exit` as the process really ended, `hog_oom_kills` from the
    cgroup's memory events.
    """

    namespaces: pd.DataFrame
    inside: pd.DataFrame
    cgroup: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.cgroup.iloc[0]

    @property
    def new_kinds(self) -> list[str]:
        return list(self.namespaces.loc[~self.namespaces["shared"], "kind"])

    @property
    def limit_enforced(self) -> bool:
        return bool(self.record["pid_in_cgroup"]) and int(self.record["hog_oom_kills"]) >= 1

    def beside_docker(self, docker_run: NamespaceResult) -> NamespaceResult:
        """The host and default-container rows of `docker_run` with this container's rows below them."""
        keep = docker_run.namespaces["subject"].isin([HOST, DEFAULT])
        return NamespaceResult(pd.concat([docker_run.namespaces[keep], self.namespaces], ignore_index=True),
                               self.inside, docker_run.ancestry)

    def fact(self, check: str) -> str:
        return str(self.inside.set_index("check").loc[check, "inside"])

    def conclusion(self, docker_run: NamespaceResult, privileges: PrivilegeResult) -> str:
        r = self.record
        same = sorted(self.new_kinds) == sorted(docker_run.new_kinds(DEFAULT))
        gone = "gone" if bool(r["cleaned"]) else "STILL THERE"
        enforced = ("the kernel's OOM killer enforced the limit, as it does for `docker run --memory`."
                    if self.limit_enforced else "the limit did not stop it.")
        return (f"**What we measured.** The from-scratch process has new **{_join(self.new_kinds)}** namespaces; "
                f"the Docker container has new {_join(docker_run.new_kinds(DEFAULT))} "
                f"({'the same kinds' if same else 'not the same kinds'}). Inside it, PID 1 runs "
                f"`{self.fact('command of its PID 1')}` and the hostname is `{self.fact('hostname')}`; `uname -r` "
                f"still says {self.fact('kernel release (uname -r)')}. Its cgroup `{r['cgroup']}` (cgroup "
                f"{r['cgroup_version']}) read back a limit of {r['memory_limit_read_bytes'] / 2**20:.0f} MiB, with "
                f"{r['pids_limit']} pids and {r['cpus']:g} CPU; after it stopped, its processes and cgroup were "
                f"{gone}. The memory hog under the same limits ended as `{r['hog_raw_exit']}` — reported as "
                f"{r['hog_exit_code']}, like Docker's 128 + SIGKILL — and the cgroup counted {r['hog_oom_kills']} "
                f"OOM kill(s): {enforced} **What it lacks:** its PID 1 keeps {r['effective_capabilities']} effective "
                f"capabilities (a default container: {len(privileges.effective(DEFAULT))}) and seccomp mode "
                f"{r['seccomp_mode']} (a default container: {privileges.seccomp_mode(DEFAULT)}): namespaces and a "
                "cgroup isolate and limit it, but they do not take root's privileges away.")


def _nsenter(pid: int) -> Callable[[list[str]], str]:
    def inside_argv(argv: list[str]) -> str:
        # Enter only the UTS namespace: the host's binaries, the container's hostname and kernel view.
        return run(["nsenter", "--target", str(pid), "--uts", "--", *argv], 10).stdout.strip()

    return inside_argv


def run_from_scratch(lab: LabSession, memory_limit_mib: int = 64) -> ScratchResult:
    """A process in new pid/mnt/uts/net/ipc namespaces, pivot_root'ed into the Debian minbase rootfs, in a
    cgroup limited to `memory_limit_mib` MiB, 32 pids and half a core — made by labkit with unshare, no Docker.
    Then a memory hog under the same limits."""
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("the from-scratch container (unshare, pivot_root, cgroup writes)")

    def experiment() -> dict[str, pd.DataFrame]:
        rootfs = images.rootfs_dir("debian-minbase")
        host = procfs.namespaces("self")
        with scratch.ScratchContainer(rootfs, SLEEP_ARGV, run_id=lab.run_id, name="anatomy",
                                      hostname="from-scratch", limits=limits) as box:
            pid = box.host_pid
            namespaces = pd.DataFrame(_namespace_rows(FROM_SCRATCH, pid, host))
            inside = pd.DataFrame(_inside_rows(FROM_SCRATCH, pid, _nsenter(pid)))
            status = procfs.read_status(pid)
            group = box.cgroup
            limit_read = group.memory_max_bytes()
            in_cgroup = pid in group.pids()
        cleaned = not Path(f"/proc/{pid}").exists() and not group.exists()
        with scratch.ScratchContainer(rootfs, MEMORY_HOG_ARGV, run_id=lab.run_id, name="anatomy-hog",
                                      hostname="from-scratch", limits=limits) as hog:
            hog_exit_code = hog.wait(timeout_s=120)
            hog_raw_exit = hog.raw_exit
            hog_oom_kills = hog.cgroup.memory_events().get("oom_kill", 0)
        row = {**limits.record(), "memory_limit_read_bytes": limit_read, "cgroup": group.relpath,
               "pid_in_cgroup": in_cgroup, "cleaned": cleaned, "cgroup_version": group.layout.version,
               "effective_capabilities": len(status.effective), "seccomp_mode": status.seccomp,
               "hog_exit_code": hog_exit_code, "hog_raw_exit": hog_raw_exit, "hog_oom_kills": hog_oom_kills}
        return {"scratch_cgroup": pd.DataFrame([row]), "scratch_namespaces": namespaces, "scratch_inside": inside}

    tables = lab.record("from_scratch", ("scratch_cgroup", "scratch_namespaces", "scratch_inside"), experiment,
                        **limits.record())
    return ScratchResult(tables["scratch_namespaces"], tables["scratch_inside"], tables["scratch_cgroup"])


# ---------------------------------------------------------------- start-up cost


@dataclass(frozen=True)
class StartupResult:
    """`samples`: method, repeat, position (place in its interleaved round), wall_s — one row per start of
    `/bin/busybox true` — and the limits the containers ran under and whether the binary is static."""

    samples: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per method: n, median, q1, q3, ci_low, ci_high (seconds), coverage of that interval, and the median's
        ratio to fork/exec (`ratio_to_floor`)."""
        return measure.summary_table(self.samples, floor=FORK_EXEC)

    def median_s(self, method: str) -> float:
        return float(self.summary.loc[method, "median"])

    def ms(self, method: str, column: str = "median") -> float:
        return float(self.summary.loc[method, column]) * 1e3

    def ratio(self, method: str) -> float:
        return float(self.summary.loc[method, "ratio_to_floor"])

    @property
    def n(self) -> int:
        return int(self.summary["n"].min())

    @property
    def coverage(self) -> float:
        return float(self.summary["coverage"].min())

    @property
    def conditions(self) -> pd.Series:
        """What every start ran under: memory_limit_bytes, pids_limit, cpus, and whether the binary is static."""
        return self.samples[["memory_limit_bytes", "pids_limit", "cpus", "static_binary"]].iloc[0]

    def summary_ms(self) -> pd.DataFrame:
        """:attr:`summary` with times in milliseconds, rounded for display."""
        times = ["median", "q1", "q3", "ci_low", "ci_high"]
        table = self.summary[["n", *times, "coverage", "ratio_to_floor"]].copy()
        table[times] = table[times] * 1e3
        return table.rename(columns={c: f"{c}_ms" for c in times}).round(3)

    def conclusion(self) -> str:
        lim = self.conditions
        binary = "a static binary" if bool(lim["static_binary"]) else "a DYNAMIC binary (not what we meant to time)"
        return (f"**What we measured** (n = {self.n} per method, interleaved; median with an order-statistic "
                f"interval that holds the true median with probability {self.coverage:.1%}; {binary}; both "
                f"containers under {lim['memory_limit_bytes'] / 2**20:.0f} MiB, {lim['pids_limit']} pids and "
                f"{lim['cpus']:g} CPU). fork/exec: {self.ms(FORK_EXEC):.2f} ms. From scratch: "
                f"{self.ms(SCRATCH_START):.1f} ms ({self.ratio(SCRATCH_START):.0f}×). docker SDK: "
                f"{self.ms(DOCKER_SDK):.0f} ms [{self.ms(DOCKER_SDK, 'ci_low'):.0f}, "
                f"{self.ms(DOCKER_SDK, 'ci_high'):.0f}] ({self.ratio(DOCKER_SDK):.0f}×); docker CLI: "
                f"{self.ms(DOCKER_CLI):.0f} ms ({self.ratio(DOCKER_CLI):.0f}×). Namespaces, `pivot_root` and a "
                f"cgroup add {self.ms(SCRATCH_START) - self.ms(FORK_EXEC):.1f} ms to a fork/exec; `docker run` adds "
                f"{self.ms(DOCKER_SDK) - self.ms(SCRATCH_START):.0f} ms more: the engine's work around the same "
                "kernel features (the container's filesystem layers, a network namespace wired to a bridge, "
                "containerd and runc).")


def run_startup(lab: LabSession, repeats: int = 20, warmup: int = 2, memory_limit_mib: int = 64) -> StartupResult:
    """Wall time (s) to start and finish `/bin/busybox true`: fork/exec on the host, in a from-scratch
    container, with `docker run --rm` through the SDK and through the CLI — the same static binary each time,
    both containers under the same limits, the methods interleaved round by round."""
    measure.validate_repeats(repeats, warmup)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("timing the from-scratch container")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, "busybox").tag
        rootfs = images.rootfs_dir("busybox")
        static = elf.is_static_elf(images.BUSYBOX_BINARY)

        def from_scratch() -> None:
            exit_code = scratch.run_scratch_once(rootfs, BUSYBOX_TRUE, run_id=lab.run_id, name="startup",
                                                 timeout_s=30, limits=limits)
            if exit_code != 0:
                raise RuntimeError(f"`busybox true` in the from-scratch container exited {exit_code}")

        with lab.scope() as scope:
            cli_argv = containers.cli_run_argv(scope, image, BUSYBOX_TRUE, limits=limits)
            starters: dict[str, Callable[[], object]] = {
                FORK_EXEC: lambda: run([str(images.BUSYBOX_BINARY), "true"], 30),
                SCRATCH_START: from_scratch,
                DOCKER_SDK: lambda: containers.run_once(client, scope, image, BUSYBOX_TRUE, limits=limits),
                DOCKER_CLI: lambda: run(cli_argv, 60),
            }
            samples = measure.compare(starters, repeats, warmup)
        return samples.assign(**limits.record(), static_binary=static)

    return StartupResult(lab.measure("startup", experiment, repeats=repeats, warmup=warmup, **limits.record()))


# ---------------------------------------------------------------- a VM for comparison


@dataclass(frozen=True)
class VmBootResult:
    """`boots`: repeat, wall_s, marker_seen, timed_out, timeout_s, accelerator, kernel_release, kvm_probe.

    `wall_s` runs from QEMU's start until `/init` printed the marker: kernel and initramfs only, no services,
    so it is a lower bound of any real VM's boot. A boot that never printed it counts as at least its timeout.
    """

    boots: pd.DataFrame

    @property
    def accelerator(self) -> str:
        return str(self.boots["accelerator"].iloc[0])

    @property
    def emulated(self) -> bool:
        """Booted under TCG (software emulation), which makes a boot slower than a VM with KVM would be."""
        return self.accelerator != "kvm"

    @property
    def kvm_probe(self) -> str:
        return str(self.boots["kvm_probe"].iloc[0])

    @property
    def kernel_release(self) -> str:
        return str(self.boots["kernel_release"].iloc[0])

    @property
    def reached(self) -> int:
        return int(self.boots["marker_seen"].sum())

    @property
    def tried(self) -> int:
        return len(self.boots)

    @property
    def lower_bound_s(self) -> pd.Series:
        """Per boot, seconds it took at least: the time to the marker, or the timeout for a boot that timed out;
        NaN for a boot QEMU ended early without the marker (a failure says nothing of how long a boot takes)."""
        at_least = self.boots["wall_s"].where(self.boots["marker_seen"])
        return at_least.where(~self.boots["timed_out"].astype(bool), self.boots["timeout_s"])

    @property
    def median_s(self) -> float:
        """Median of :attr:`lower_bound_s` over the boots that reached the marker or timed out."""
        return float(self.lower_bound_s.median())

    def beside(self, startup: StartupResult) -> pd.DataFrame:
        """method, wall_s: the start-up samples with the VM boots (as lower bounds) as one more method."""
        boots = pd.DataFrame({"wall_s": self.lower_bound_s, "method": f"VM boot ({self.accelerator})"})
        return pd.concat([startup.samples[["method", "wall_s"]], boots], ignore_index=True)

    def conclusion(self, startup: StartupResult) -> str:
        how = "software emulation (TCG)" if self.emulated else "KVM (hardware virtualisation)"
        return (f"**What we measured.** Kernel {self.kernel_release} reached `/init` in a median of at least "
                f"**{self.median_s:.2f} s**; {self.reached} of {self.tried} boot(s) reached the marker, under {how} "
                f"— the KVM probe said: {self.kvm_probe}. That is {self.median_s / startup.median_s(DOCKER_SDK):.0f}× "
                f"a `docker run` and {self.median_s / startup.median_s(FORK_EXEC):.0f}× a fork/exec. It is a lower "
                "bound of a real VM's boot: only the kernel and a one-line `/init` ran, no init system and no "
                "services." + (" Under emulation every instruction is translated, so a VM with KVM would boot "
                               "faster than this." if self.emulated else ""))


def run_vm_boot(lab: LabSession, repeats: int = 3, memory_mib: int = 256, timeout_s: float = 300) -> VmBootResult:
    """Boot Debian's kernel with a busybox initramfs under QEMU until init prints a marker; wall time (s).

    Each VM gets `memory_mib` MiB and waits at most `timeout_s` seconds for the marker."""
    measure.validate_repeats(repeats)
    vm.validate_boot("tcg", memory_mib, timeout_s)
    if lab.live:  # one VM at a time; its guest may touch all of its memory
        space.require_memory({space.Size("memory_mib", memory_mib): 1})

    def experiment() -> pd.DataFrame:
        assets = vm.prepare_vm_assets(cache_dir() / "vm")
        accel = vm.accelerator()
        probe = vm.probe_kvm().detail
        rows = []
        for i in range(repeats):
            boot = vm.boot_once(assets, accel, memory_mib=memory_mib, timeout_s=timeout_s)
            rows.append({"repeat": i, "wall_s": boot.wall_s, "marker_seen": boot.marker_seen,
                         "timed_out": boot.timed_out, "timeout_s": timeout_s, "accelerator": boot.accelerator,
                         "kernel_release": boot.kernel_release, "kvm_probe": probe})
        return pd.DataFrame(rows)

    return VmBootResult(lab.measure("vm_boot", experiment, repeats=repeats, memory_mib=memory_mib,
                                    timeout_s=timeout_s))


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, ns: NamespaceResult, privileges: PrivilegeResult, from_scratch: ScratchResult,
                 startup: StartupResult, boot: VmBootResult) -> None:
    """The chapter's claims about what a container is, each with a criterion and a verdict computed from this
    notebook's measurements."""
    pid = ns.fact("its PID")
    ordinary = str(pid["inside"]) == "1" and str(pid["host"]) != "1" and "shim" in ns.parent_name
    ledger.check(
        "process.ordinary", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="A container is an ordinary process on the host",
        value=float(pid["host"]), unit="host PID",
        measured=f"host PID {pid['host']}, PID {pid['inside']} in its own pid namespace; parent chain "
                 f"{ns.parent_chain}",
        criterion="PID 1 inside its pid namespace, another PID on the host, and its parent on the host is the "
                  "container runtime's shim (not a VM monitor)",
        verdict=verdict(ordinary), tables=("inside", "ancestry"))

    boot_id = ns.fact("kernel boot id")
    ledger.check(
        "kernel.shared", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Every container runs on the host's own kernel",
        value=float(ns.same_kernel), unit="1 = same kernel",
        measured=f"boot id {boot_id['inside']} inside and {boot_id['host']} on the host; uname -r "
                 f"{ns.fact('kernel release (uname -r)')['inside']} both",
        criterion="the same /proc/sys/kernel/random/boot_id (drawn once per boot) and the same uname -r inside "
                  "and outside",
        verdict=verdict(ns.same_kernel), tables=("inside",))

    new, shared = ns.new_kinds(DEFAULT), ns.shared_kinds(DEFAULT)
    ledger.check(
        "namespaces.own", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="A container sees its own processes, network, mounts, hostname and IPC objects",
        value=len(set(ISOLATED_KINDS) & set(new)), unit=f"of {len(ISOLATED_KINDS)} namespaces new",
        measured=f"new: {_join(new)}; shared with the host: {_join(shared)}",
        criterion=f"a default container's {', '.join(ISOLATED_KINDS)} namespaces are all new (not the host's)",
        verdict=verdict(set(ISOLATED_KINDS) <= set(new)), tables=("namespaces",))

    own_kinds = [k for k in CHAPTER_KINDS if k in new]
    hosts_kinds = [k for k in CHAPTER_KINDS if k not in new]
    ledger.check(
        "namespaces.six_kinds", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Six kinds of namespace isolate a container, its user ids among them",
        value=len(own_kinds), unit=f"of the {len(CHAPTER_KINDS)} kinds new in a default container",
        measured=f"its own: {_join(own_kinds)}; the host's: {_join(hosts_kinds)}",
        criterion=f"a default container has a namespace of its own of each kind: {', '.join(CHAPTER_KINDS)}; one "
                  "it shares with the host fails it",
        verdict=verdict(not hosts_kinds),
        caveat=f"the host's {_join(hosts_kinds)} namespace: uid 0 inside is uid 0 on the host; Docker makes a user "
               "namespace only when its daemon runs with userns-remap (not measured)" if "user" in hosts_kinds
        else "", tables=("namespaces",))

    beyond_default = sorted(set(ns.shared_kinds(HOST_NETWORK)) - set(shared))
    kept_own = ns.new_kinds(HOST_NETWORK)
    ledger.check(
        "namespaces.host_network", source=Source.CHAPTER, section=SECTION_NETWORKING,
        claim="A container on the host's network (--network host) is left out of namespaces altogether",
        value=len(kept_own), unit="namespaces of its own",
        measured=f"{HOST_NETWORK} shares {_join(beyond_default)} with the host beyond what a default container "
                 f"shares ({_join(shared)}); its own: {_join(kept_own)}",
        criterion=f"a container run with {HOST_NETWORK} shares every namespace with the host",
        verdict=verdict(not kept_own),
        caveat=f"only the network is the host's: the flag leaves it its own {_join(kept_own)}" if kept_own
        and beyond_default == ["net"] else "", tables=("namespaces",))

    scratch_caps = int(from_scratch.record["effective_capabilities"])
    scratch_seccomp = int(from_scratch.record["seccomp_mode"])
    same_isolation = set(ISOLATED_KINDS) <= set(from_scratch.new_kinds) and from_scratch.limit_enforced
    keeps_privileges = scratch_caps > len(privileges.effective(DEFAULT)) or scratch_seccomp != 2
    ledger.check(
        "scratch.same_isolation", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Docker adds no magic: unshare, pivot_root and a cgroup set up by hand isolate and limit a process "
              "the same way",
        value=len(from_scratch.new_kinds), unit="new namespaces",
        measured=f"new {_join(from_scratch.new_kinds)}; a memory hog under its "
                 f"{from_scratch.record['memory_limit_read_bytes'] / 2**20:.0f} MiB limit ended "
                 f"{from_scratch.record['hog_raw_exit']} after {from_scratch.record['hog_oom_kills']} OOM kill(s)",
        criterion=f"new {', '.join(ISOLATED_KINDS)} namespaces, its PID 1 in the cgroup, and ≥ 1 OOM kill of a hog "
                  "under the limit; privileges kept beyond a default container's are a caveat",
        verdict=verdict(same_isolation, caveat=keeps_privileges),
        caveat=f"its PID 1 keeps {scratch_caps} capabilities and seccomp mode {scratch_seccomp}: Docker also drops "
               "capabilities and applies a seccomp filter, which this box does not" if keeps_privileges else "",
        tables=("scratch_namespaces", "scratch_cgroup"))

    default_caps, host_caps = privileges.effective(DEFAULT), privileges.effective(HOST)
    weaker = default_caps < host_caps and privileges.seccomp_mode(DEFAULT) == 2
    ledger.check(
        "privileges.less_than_host_root", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Root in a container holds fewer privileges than root on the host",
        value=len(default_caps), unit="effective capabilities",
        measured=f"{len(default_caps)} effective capabilities against {len(host_caps)} for host root, lacking "
                 f"{_short(privileges.dangerous_lacking)}; seccomp mode {privileges.seccomp_mode(DEFAULT)}",
        criterion="the container's effective set is a strict subset of host root's, and seccomp is in filter mode (2)",
        verdict=verdict(weaker), tables=("capabilities",))

    keeps_net_raw = NET_RAW in default_caps
    ledger.check(
        "capabilities.net_raw", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="A container is not given capabilities it does not need, CAP_NET_RAW for one",
        value=float(keeps_net_raw), unit="1 = a default container holds CAP_NET_RAW",
        measured=f"a default container running `{' '.join(SLEEP_ARGV)}` (no raw sockets) holds "
                 f"{'CAP_NET_RAW' if keeps_net_raw else 'no CAP_NET_RAW'}; with {CAP_DROP_ALL} it holds "
                 f"{'CAP_NET_RAW' if NET_RAW in privileges.effective(CAP_DROP_ALL) else 'none'}",
        criterion="a default container whose program opens no raw socket lacks CAP_NET_RAW in its effective set",
        verdict=verdict(not keeps_net_raw),
        caveat="Docker's default set keeps CAP_NET_RAW whatever the program needs (ping uses it); it goes only "
               "when the run drops it (--cap-drop NET_RAW or ALL)" if keeps_net_raw else "",
        tables=("capabilities",))

    docker_ms = startup.ms(DOCKER_SDK)
    fast, bearable = docker_ms < 100, docker_ms < 1000
    ledger.check(
        "startup.milliseconds", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Starting a container takes milliseconds, not seconds",
        value=docker_ms, unit="ms (median, docker run through the SDK)",
        measured=f"docker run median {docker_ms:.0f} ms ({startup.ratio(DOCKER_SDK):.0f}× fork/exec); from "
                 f"scratch {startup.ms(SCRATCH_START):.1f} ms",
        criterion="holds below 100 ms; holds with caveat below 1000 ms; does not hold above",
        verdict=verdict(bearable, caveat=not fast),
        caveat="hundreds of milliseconds through the engine; the kernel's part (from scratch) costs "
               f"{startup.ms(SCRATCH_START):.0f} ms" if bearable and not fast else "",
        tables=("startup",))

    ratio = boot.median_s / startup.median_s(DOCKER_SDK)
    ledger.check(
        "vm.slower_than_container", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="A VM takes far longer to start than a container",
        value=ratio, unit="× docker run (lower bound)",
        measured=f"a VM reached /init in at least {boot.median_s:.1f} s ({boot.accelerator}) against "
                 f"{startup.ms(DOCKER_SDK):.0f} ms for docker run",
        criterion="the VM's lower-bound boot is ≥ 10× docker run's median; booted under emulation it is a caveat "
                  "(KVM would narrow the gap)",
        verdict=verdict(ratio >= 10, caveat=boot.emulated),
        caveat="booted under software emulation (TCG): with KVM the VM would start faster" if boot.emulated
        and ratio >= 10 else "", tables=("vm_boot", "startup"))

    minutes = boot.median_s >= MINUTE_S
    if minutes and boot.emulated:
        vm_verdict, vm_caveat = Verdict.INCONCLUSIVE, "it took minutes under emulation, which KVM would shorten"
    elif minutes:
        vm_verdict, vm_caveat = Verdict.HOLDS, ""
    else:
        vm_verdict = Verdict.FAILS
        vm_caveat = ("a minimal kernel + initramfs, no init system: a full distribution adds its services' start-up "
                     "(not measured)")
    ledger.check(
        "vm.minutes", source=Source.CHAPTER, section=SECTION_WHAT, claim="A VM takes minutes to boot",
        value=boot.median_s, unit="s (median, lower bound)",
        measured=f"{boot.reached} of {boot.tried} boot(s) reached /init; median at least {boot.median_s:.1f} s "
                 f"with {boot.accelerator}",
        criterion="holds if even the lower bound is ≥ 60 s with KVM; ≥ 60 s only under emulation is inconclusive; "
                  "below 60 s it does not hold for this minimal VM (emulation only makes it slower)",
        verdict=vm_verdict, caveat=vm_caveat, tables=("vm_boot",))
