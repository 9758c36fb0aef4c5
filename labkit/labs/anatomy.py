"""Notebook 01, what a container actually is: namespaces, privileges, a container from scratch, start-up cost.

Every ``run_*`` takes the notebook's :class:`~labkit.session.LabSession`, measures live (or replays the
recorded table) and returns a frozen result holding a tidy DataFrame; the numbers the notebook quotes are
properties computed from that frame.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.app.claims import ClaimLedger, Verdict
from labkit.app.session import LabSession
from labkit.instruments import cgroups, images, measure, procfs, scratch, vm
from labkit.instruments.engine import Scope, container_pid, docker_cli, validate_memory_limit
from labkit.instruments.shell import run
from labkit.paths import cache_dir

TOPIC = "01-what-a-container-is"
ISOLATED_KINDS = ("pid", "net", "mnt", "uts", "ipc")
HOST = "host"
DEFAULT = "docker run (default)"
FROM_SCRATCH = "from scratch (unshare)"

# docker run flags whose namespace is the host's, as SDK keyword arguments.
SHARED_NAMESPACE_VARIANTS: dict[str, dict[str, str]] = {
    DEFAULT: {},
    "--pid host": {"pid_mode": "host"},
    "--network host": {"network_mode": "host"},
    "--ipc host": {"ipc_mode": "host"},
    "--uts host": {"uts_mode": "host"},
}

# docker run flags that change privileges, as SDK keyword arguments; the single --cap-add is not a default one.
PRIVILEGE_VARIANTS: dict[str, dict[str, Any]] = {
    DEFAULT: {},
    "--cap-drop ALL": {"cap_drop": ["ALL"]},
    "--cap-add NET_ADMIN": {"cap_add": ["NET_ADMIN"]},
    "--security-opt seccomp=unconfined": {"security_opt": ["seccomp=unconfined"]},
}

STARTUP_METHODS = ("fork/exec", "from scratch", "docker SDK", "docker CLI")
PIDS_LIMIT = 32
NANO_CPUS = 500_000_000  # half a core
SLEEP_ARGV = ["/bin/sleep", "300"]
# A string that doubles until the memory limit stops it: the OOM killer ends the shell (exit 128 + SIGKILL).
MEMORY_HOG_ARGV = ["/bin/sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]


# ---------------------------------------------------------------- namespaces


@dataclass(frozen=True)
class NamespaceResult:
    """`namespaces`: subject, kind, inode, host_inode, shared (with the host).

    `inside`: subject, check, inside, host, same — what a process in the subject sees against the host.
    """

    namespaces: pd.DataFrame
    inside: pd.DataFrame

    def verdicts(self) -> pd.DataFrame:
        """subject × kind table of 'shared' / 'new'."""
        labels = self.namespaces.assign(verdict=self.namespaces["shared"].map({True: "shared", False: "new"}))
        table = labels.pivot(index="subject", columns="kind", values="verdict")
        order = list(dict.fromkeys(self.namespaces["subject"]))
        return table.loc[order, [k for k in procfs.NAMESPACE_KINDS if k in table.columns]]

    def new_kinds(self, subject: str) -> list[str]:
        rows = self.namespaces[(self.namespaces["subject"] == subject) & ~self.namespaces["shared"]]
        return list(rows["kind"])

    def shared_kinds(self, subject: str) -> list[str]:
        rows = self.namespaces[(self.namespaces["subject"] == subject) & self.namespaces["shared"]]
        return list(rows["kind"])

    def fact(self, subject: str, check: str) -> pd.Series:
        rows = self.inside[(self.inside["subject"] == subject) & (self.inside["check"] == check)]
        if rows.empty:
            raise KeyError(f"no check {check!r} for {subject!r}")
        return rows.iloc[0]


def _namespace_rows(subject: str, pid: int | str, host: dict[str, int]) -> list[dict[str, Any]]:
    found = procfs.namespaces(pid)
    return [{"subject": subject, "kind": kind, "inode": found[kind], "host_inode": host[kind],
             "shared": found[kind] == host[kind]} for kind in procfs.NAMESPACE_KINDS]


def _inside_rows(subject: str, pid: int, inside_argv: Callable[[list[str]], str]) -> list[dict[str, Any]]:
    """What the process `pid` sees, read from the host's /proc and by running commands in its namespaces."""
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
    ]
    return [{"subject": subject, "check": check, "inside": inside, "host": host, "same": inside == host}
            for check, inside, host in checks]


@contextmanager
def _sleeping_container(client: docker.DockerClient, scope: Scope, image: str, stem: str, memory_bytes: int,
                        **options: Any) -> Iterator[Any]:
    """A detached `sleep` under memory, pids and CPU limits, with no usable DNS; removed on exit."""
    container = client.containers.run(image, SLEEP_ARGV, detach=True, labels=scope.labels, name=scope.name(stem),
                                      dns=["127.0.0.1"], mem_limit=memory_bytes, pids_limit=PIDS_LIMIT,
                                      nano_cpus=NANO_CPUS, **options)
    try:
        yield container
    finally:
        container.remove(force=True)


def run_namespaces(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> NamespaceResult:
    """Namespace inodes of the host, a default container and one container per `--X host` flag.

    Each container runs under `memory_limit_mib` MiB, 32 pids and half a core.
    """
    images.validate_base(base)
    memory_bytes = validate_memory_limit(memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/ns links")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        host = procfs.namespaces("self")
        rows = _namespace_rows(HOST, "self", host)
        with lab.scope() as scope:
            for subject, options in SHARED_NAMESPACE_VARIANTS.items():
                stem = "ns-" + subject.strip("-").replace(" ", "-").replace("(", "").replace(")", "")
                with _sleeping_container(client, scope, image, stem, memory_bytes, **options) as container:
                    rows += _namespace_rows(subject, container_pid(client, container.id), host)
        return pd.DataFrame(rows)

    def inside_experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        with lab.scope() as scope, _sleeping_container(client, scope, image, "inside", memory_bytes) as container:

            def inside_argv(argv: list[str]) -> str:
                exit_code, output = container.exec_run(argv)
                if exit_code != 0:
                    raise RuntimeError(f"{argv} in the container exited {exit_code}: {output!r}")
                return str(output.decode().strip())

            return pd.DataFrame(_inside_rows(DEFAULT, container_pid(client, container.id), inside_argv))

    namespaces = lab.measure("namespaces", experiment, base=base, memory_limit_mib=memory_limit_mib)
    inside = lab.measure("inside", inside_experiment, base=base, memory_limit_mib=memory_limit_mib)
    return NamespaceResult(namespaces, inside)


# ---------------------------------------------------------------- privileges


@dataclass(frozen=True)
class PrivilegeResult:
    """`capabilities`: subject, capability, effective, host_effective (one row per subject × capability).

    `seccomp`: subject, seccomp_mode (0 disabled, 2 filter), effective_count, bounding_count.
    """

    capabilities: pd.DataFrame
    seccomp: pd.DataFrame

    def effective(self, subject: str) -> set[str]:
        rows = self.capabilities[(self.capabilities["subject"] == subject) & self.capabilities["effective"]]
        return set(rows["capability"])

    def seccomp_mode(self, subject: str) -> int:
        return int(self.seccomp.set_index("subject").loc[subject, "seccomp_mode"])

    def matrix(self) -> pd.DataFrame:
        """capability × subject of ✓/· for the capabilities any subject holds."""
        table = self.capabilities.pivot(index="capability", columns="subject", values="effective")
        table = table.loc[table.any(axis=1), list(dict.fromkeys(self.capabilities["subject"]))]
        return table.map(lambda held: "✓" if held else "·")


def run_privileges(lab: LabSession, base: str = "busybox", memory_limit_mib: int = 64) -> PrivilegeResult:
    """Effective capabilities and seccomp mode of host root and of containers with privilege flags."""
    images.validate_base(base)
    memory_bytes = validate_memory_limit(memory_limit_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, base).tag
        statuses = {HOST: procfs.read_status("self")}
        with lab.scope() as scope:
            for subject, options in PRIVILEGE_VARIANTS.items():
                stem = "priv-" + str(len(statuses))
                with _sleeping_container(client, scope, image, stem, memory_bytes, **options) as container:
                    statuses[subject] = procfs.read_status(container_pid(client, container.id))
        host_effective = statuses[HOST].effective
        names = sorted(set().union(*(s.effective | s.bounding for s in statuses.values())))
        return pd.DataFrame([
            {"subject": subject, "capability": name, "effective": name in status.effective,
             "host_effective": name in host_effective, "seccomp_mode": status.seccomp,
             "bounding": name in status.bounding}
            for subject, status in statuses.items() for name in names])

    frame = lab.measure("capabilities", experiment, base=base, memory_limit_mib=memory_limit_mib)
    per_subject = frame.groupby("subject", sort=False).agg(
        seccomp_mode=("seccomp_mode", "first"), effective_count=("effective", "sum"),
        bounding_count=("bounding", "sum")).reset_index()
    return PrivilegeResult(frame[["subject", "capability", "effective", "host_effective"]], per_subject)


# ---------------------------------------------------------------- a container from scratch


@dataclass(frozen=True)
class ScratchResult:
    """`namespaces`/`inside` as in :class:`NamespaceResult`, for the unshare container.

    `cgroup`: one row — memory_limit_bytes requested and read back, the cgroup path, whether its
    processes and cgroup were gone after the container stopped (`cleaned`), and what happened to a memory
    hog under the same limit (`hog_exit_code`, `hog_oom_kills` from the cgroup's memory events).
    """

    namespaces: pd.DataFrame
    inside: pd.DataFrame
    cgroup: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.cgroup.iloc[0]

    def beside_docker(self, docker_run: NamespaceResult) -> NamespaceResult:
        """The host and default-container rows of `docker_run` with this container's rows below them."""
        keep = docker_run.namespaces["subject"].isin([HOST, DEFAULT])
        return NamespaceResult(pd.concat([docker_run.namespaces[keep], self.namespaces], ignore_index=True),
                               self.inside)

    def fact(self, check: str) -> str:
        return str(self.inside.set_index("check").loc[check, "inside"])


def _nsenter(pid: int) -> Callable[[list[str]], str]:
    def inside_argv(argv: list[str]) -> str:
        # Enter only the UTS namespace: the host's binaries, the container's hostname and kernel view.
        return run(["nsenter", "--target", str(pid), "--uts", "--", *argv], 10).stdout.strip()

    return inside_argv


def run_from_scratch(lab: LabSession, memory_limit_mib: int = 64) -> ScratchResult:
    """A process in new pid/mnt/uts/net/ipc namespaces, pivot_root'ed into the Debian minbase rootfs,
    under a memory cgroup limit of `memory_limit_mib` MiB — made by labkit with unshare, no Docker."""
    limit_bytes = memory_limit_mib * 2**20
    cgroups.validate_limits(limit_bytes, None)
    lab.require_root("the from-scratch container (unshare, pivot_root, cgroup writes)")
    captured: dict[str, pd.DataFrame] = {}

    def experiment() -> pd.DataFrame:
        rootfs = images.rootfs_dir("debian-minbase")
        host = procfs.namespaces("self")
        with scratch.ScratchContainer(rootfs, SLEEP_ARGV, run_id=lab.run_id, name="anatomy",
                                      hostname="from-scratch", memory_max_bytes=limit_bytes) as box:
            pid = box.host_pid
            captured["namespaces"] = pd.DataFrame(_namespace_rows(FROM_SCRATCH, pid, host))
            captured["inside"] = pd.DataFrame(_inside_rows(FROM_SCRATCH, pid, _nsenter(pid)))
            group = box.cgroup
            limit_read = group.memory_max_bytes()
            in_cgroup = pid in group.pids()
        cleaned = not Path(f"/proc/{pid}").exists() and not group.exists()
        with scratch.ScratchContainer(rootfs, MEMORY_HOG_ARGV, run_id=lab.run_id, name="anatomy-hog",
                                      hostname="from-scratch", memory_max_bytes=limit_bytes) as hog:
            hog_exit_code = hog.wait(timeout_s=120)
            hog_oom_kills = hog.cgroup.memory_events().get("oom_kill", 0)
        return pd.DataFrame([{"memory_limit_bytes": limit_bytes, "memory_limit_read_bytes": limit_read,
                              "cgroup": group.relpath, "pid_in_cgroup": in_cgroup, "cleaned": cleaned,
                              "cgroup_version": group.layout.version, "hog_exit_code": hog_exit_code,
                              "hog_oom_kills": hog_oom_kills}])

    cgroup = lab.measure("scratch_cgroup", experiment, memory_limit_mib=memory_limit_mib)
    namespaces = lab.measure("scratch_namespaces", lambda: captured["namespaces"])
    inside = lab.measure("scratch_inside", lambda: captured["inside"])
    return ScratchResult(namespaces, inside, cgroup)


# ---------------------------------------------------------------- start-up cost


@dataclass(frozen=True)
class StartupResult:
    """`samples`: method, repeat, wall_s — one row per start of `/bin/busybox true`."""

    samples: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per method: n, median, q1, q3, ci_low, ci_high (seconds) and the median's ratio to fork/exec."""
        rows = [measure.summary_row(group["wall_s"].tolist(), method=method)
                for method, group in self.samples.groupby("method", sort=False)]
        table = pd.DataFrame(rows).set_index("method")
        table["ratio_to_fork_exec"] = table["median"] / table.loc["fork/exec", "median"]
        return table

    def median_s(self, method: str) -> float:
        return float(self.summary.loc[method, "median"])

    def summary_ms(self) -> pd.DataFrame:
        """:attr:`summary` with times in milliseconds, rounded for display."""
        times = ["median", "q1", "q3", "ci_low", "ci_high"]
        table = self.summary[["n", *times, "ratio_to_fork_exec"]].copy()
        table[times] = table[times] * 1e3
        return table.rename(columns={c: f"{c}_ms" for c in times}).round(2)


def run_startup(lab: LabSession, repeats: int = 20, warmup: int = 2, memory_limit_mib: int = 64) -> StartupResult:
    """Wall time (s) to start and finish `/bin/busybox true`: fork/exec on the host, in a from-scratch
    container, with `docker run --rm` through the SDK and through the CLI. The same static binary each time."""
    measure.validate_repeats(repeats, warmup)
    memory_bytes = validate_memory_limit(memory_limit_mib)
    lab.require_root("timing the from-scratch container")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, "busybox").tag
        rootfs = images.rootfs_dir("busybox")
        argv = ["/bin/busybox", "true"]

        def from_scratch() -> None:
            exit_code = scratch.run_scratch_once(rootfs, argv, run_id=lab.run_id, name="startup", timeout_s=30)
            if exit_code != 0:
                raise RuntimeError(f"`busybox true` in the from-scratch container exited {exit_code}")

        with lab.scope() as scope:
            starters: dict[str, Callable[[], object]] = {
                "fork/exec": lambda: run([str(images.BUSYBOX_BINARY), "true"], 30),
                "from scratch": from_scratch,
                "docker SDK": lambda: client.containers.run(image, argv, remove=True, labels=scope.labels,
                                                            dns=["127.0.0.1"], pids_limit=PIDS_LIMIT,
                                                            mem_limit=memory_bytes, nano_cpus=NANO_CPUS),
                "docker CLI": lambda: run([docker_cli(), "run", "--rm", "--pull=never", *scope.label_args(),
                                           "--dns", "127.0.0.1", "--pids-limit", str(PIDS_LIMIT),
                                           "--memory", f"{memory_bytes}b", "--cpus", str(NANO_CPUS / 1e9),
                                           image, *argv], 60),
            }
            rows = []
            for method in STARTUP_METHODS:
                samples = measure.time_calls(starters[method], repeats, warmup)
                rows += [{"method": method, "repeat": i, "wall_s": s} for i, s in enumerate(samples)]
        return pd.DataFrame(rows)

    return StartupResult(lab.measure("startup", experiment, repeats=repeats, warmup=warmup,
                                     memory_limit_mib=memory_limit_mib))


# ---------------------------------------------------------------- a VM for comparison


@dataclass(frozen=True)
class VmBootResult:
    """`boots`: repeat, wall_s (until init printed the marker), marker_seen, accelerator, kernel_release,
    kvm_probe (why KVM was or was not used)."""

    boots: pd.DataFrame

    @property
    def accelerator(self) -> str:
        return str(self.boots["accelerator"].iloc[0])

    @property
    def kvm_probe(self) -> str:
        return str(self.boots["kvm_probe"].iloc[0])

    @property
    def kernel_release(self) -> str:
        return str(self.boots["kernel_release"].iloc[0])

    @property
    def median_s(self) -> float:
        return float(self.boots.loc[self.boots["marker_seen"], "wall_s"].median())

    def beside(self, startup: StartupResult) -> pd.DataFrame:
        """method, wall_s: the start-up samples with the VM boots that reached init as one more method."""
        boots = self.boots.loc[self.boots["marker_seen"], ["wall_s"]].assign(method=f"VM boot ({self.accelerator})")
        return pd.concat([startup.samples[["method", "wall_s"]], boots], ignore_index=True)


def run_vm_boot(lab: LabSession, repeats: int = 3, memory_mib: int = 256, timeout_s: float = 300) -> VmBootResult:
    """Boot Debian's kernel with a busybox initramfs under qemu until init prints a marker; wall time (s).

    Each VM gets `memory_mib` MiB and waits at most `timeout_s` seconds for the marker.
    """
    measure.validate_repeats(repeats)
    vm.validate_boot("tcg", memory_mib, timeout_s)

    def experiment() -> pd.DataFrame:
        assets = vm.prepare_vm_assets(cache_dir() / "vm")
        accel = vm.accelerator()
        probe = vm.probe_kvm().detail
        rows = []
        for i in range(repeats):
            boot = vm.boot_once(assets, accel, memory_mib=memory_mib, timeout_s=timeout_s)
            rows.append({"repeat": i, "wall_s": boot.wall_s, "marker_seen": boot.marker_seen,
                         "accelerator": boot.accelerator, "kernel_release": boot.kernel_release,
                         "kvm_probe": probe})
        return pd.DataFrame(rows)

    result = VmBootResult(lab.measure("vm_boot", experiment, repeats=repeats, memory_mib=memory_mib,
                                      timeout_s=timeout_s))
    if not result.boots["marker_seen"].any():
        raise RuntimeError(f"no VM boot reached init (accelerator {result.accelerator}); the boots are recorded "
                           "in vm_boot.csv. Check `labkit doctor` (qemu-system-x86_64, /dev/kvm).")
    return result


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, ns: NamespaceResult, privileges: PrivilegeResult, scratch_run: ScratchResult,
                 startup: StartupResult, boot: VmBootResult) -> None:
    """The chapter's claims, each with a verdict computed from this notebook's measurements."""
    pid = ns.fact(DEFAULT, "its PID")
    ledger.check("A container is an ordinary process on the host",
                 f"the container's main process is host PID {pid['host']}, numbered {pid['inside']} in its own "
                 "pid namespace",
                 Verdict.HOLDS if str(pid["inside"]) == "1" and str(pid["host"]) != "1" else Verdict.FAILS)

    kernel = ns.fact(DEFAULT, "kernel release (uname -r)")
    ledger.check("Containers share the host's kernel",
                 f"uname -r inside: {kernel['inside']}; on the host: {kernel['host']}",
                 Verdict.HOLDS if bool(kernel["same"]) else Verdict.FAILS)

    new = ns.new_kinds(DEFAULT)
    shared = ns.shared_kinds(DEFAULT)
    all_isolated = set(ISOLATED_KINDS) <= set(new)
    ledger.check("A container gets its own namespaces", f"{len(new)} new ({', '.join(new)}); {len(shared)} shared "
                 f"with the host ({', '.join(shared) or 'none'})",
                 (Verdict.CAVEAT if shared else Verdict.HOLDS) if all_isolated else Verdict.FAILS,
                 caveat=f"the {', '.join(shared)} namespace{'s are' if len(shared) > 1 else ' is'} the host's"
                 if shared else "")

    scratch_new = set(scratch_run.namespaces.loc[~scratch_run.namespaces["shared"], "kind"])
    ledger.check("Docker is not magic: unshare + pivot_root + a cgroup make the same isolation",
                 f"from-scratch process: new {', '.join(sorted(scratch_new))}; a memory hog under its "
                 f"{scratch_run.record['memory_limit_read_bytes'] / 2**20:.0f} MiB limit exited "
                 f"{scratch_run.record['hog_exit_code']} after {scratch_run.record['hog_oom_kills']} OOM kill(s)",
                 Verdict.HOLDS if set(ISOLATED_KINDS) <= scratch_new and bool(scratch_run.record["pid_in_cgroup"])
                 and scratch_run.record["hog_oom_kills"] >= 1 else Verdict.FAILS)

    default_caps = privileges.effective(DEFAULT)
    host_caps = privileges.effective(HOST)
    ledger.check("Root in a container is less powerful than root on the host",
                 f"{len(default_caps)} effective capabilities against {len(host_caps)} for host root; "
                 f"seccomp mode {privileges.seccomp_mode(DEFAULT)}",
                 Verdict.HOLDS if default_caps < host_caps and privileges.seccomp_mode(DEFAULT) == 2
                 else Verdict.FAILS)

    docker_s = startup.median_s("docker SDK")
    floor_s = startup.median_s("fork/exec")
    ledger.check("Containers start in milliseconds",
                 f"docker run median {docker_s * 1e3:.0f} ms ({docker_s / floor_s:.0f}× fork/exec); "
                 f"from scratch {startup.median_s('from scratch') * 1e3:.1f} ms",
                 Verdict.HOLDS if docker_s < 0.1 else Verdict.CAVEAT if docker_s < 1.0 else Verdict.FAILS,
                 caveat="hundreds of milliseconds through the engine; the namespaces themselves cost far less"
                 if 0.1 <= docker_s < 1.0 else "")

    vm_s = boot.median_s
    ledger.check("A VM boots in minutes",
                 f"a Debian kernel + busybox initramfs reached init in {vm_s:.1f} s ({boot.accelerator}), "
                 f"{vm_s / docker_s:.0f}× docker run",
                 Verdict.HOLDS if vm_s >= 60 else Verdict.FAILS,
                 caveat="" if vm_s >= 60 else "measured for a minimal kernel + initramfs; a full distribution adds "
                 "its own services' start-up on top (not measured here)")
