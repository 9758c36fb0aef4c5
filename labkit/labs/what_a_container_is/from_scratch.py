"""Section 3: a container from scratch (unshare, pivot_root, a cgroup), no engine involved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import images, procfs, scratch
from labkit.instruments.scratch.status import why_code
from labkit.instruments.shell import run
from labkit.labs.what_a_container_is.declaration import (
    DEFAULT,
    FROM_SCRATCH,
    HOST,
    MEMORY_HOG_ARGV,
    SLEEP_ARGV,
    limits_for,
    listed,
)
from labkit.labs.what_a_container_is.namespaces import NamespaceResult, inside_rows, namespace_rows
from labkit.labs.what_a_container_is.privileges import PrivilegeResult


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
        return (f"**What we measured.** The from-scratch process has new **{listed(self.new_kinds)}** namespaces; "
                f"the Docker container has new {listed(docker_run.new_kinds(DEFAULT))} "
                f"({'the same kinds' if same else 'not the same kinds'}). Inside it, PID 1 runs "
                f"`{self.fact('command of its PID 1')}` and the hostname is `{self.fact('hostname')}`; `uname -r` "
                f"still says {self.fact('kernel release (uname -r)')}. Its cgroup `{r['cgroup']}` (cgroup "
                f"{r['cgroup_version']}) read back a limit of {r['memory_limit_read_bytes'] / 2**20:.0f} MiB, with "
                f"{r['pids_limit']} pids and {r['cpus']:g} CPU; after it stopped, its processes and cgroup were "
                f"{gone}. The memory hog under the same limits ended as `{r['hog_raw_exit']}`: "
                f"{why_code(r['hog_raw_exit'], int(r['hog_exit_code']))} — and the cgroup counted "
                f"{r['hog_oom_kills']} OOM kill(s): {enforced} **What it lacks:** its PID 1 keeps "
                f"{r['effective_capabilities']} effective capabilities (a default container: "
                f"{len(privileges.effective(DEFAULT))}) and seccomp mode {r['seccomp_mode']} (a default container: "
                f"{privileges.seccomp_mode(DEFAULT)}): namespaces and a cgroup isolate and limit it, but they do "
                "not take root's privileges away.")


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
            namespaces = pd.DataFrame(namespace_rows(FROM_SCRATCH, pid, host))
            inside = pd.DataFrame(inside_rows(FROM_SCRATCH, pid, _nsenter(pid)))
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
