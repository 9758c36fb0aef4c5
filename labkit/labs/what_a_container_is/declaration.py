"""The lab's declaration: its notebook, tables, requirements, and the budget every container runs under."""

from __future__ import annotations

from typing import Any

import docker

from labkit.core.lab import Lab
from labkit.core.session import LabSession
from labkit.instruments import images, space, vm
from labkit.instruments.limits import Limits
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


def prepare(client: docker.DockerClient) -> list[str]:
    """The from-scratch root filesystems and the VM's kernel and initramfs (bases are made by setup)."""
    assets = vm.prepare_vm_assets(cache_dir() / "vm")
    return [f"rootfs busybox: {images.rootfs_dir('busybox')}",
            f"rootfs debian-minbase: {images.rootfs_dir('debian-minbase')}",
            f"vm kernel: {assets.kernel_release} ({assets.kernel})"]


LAB = Lab(
    stem=STEM,
    topic="What a container actually is",
    bases=("busybox",),
    tables={
        "namespaces": ("subject", "kind", "inode", "host_inode", "shared"),
        "inside": ("subject", "check", "inside", "host", "same"),
        "ancestry": ("subject", "depth", "pid", "name", "command"),
        "clock": ("subject", "check", "inside", "host_low", "host_high", "within"),
        "capabilities": ("subject", "capability", "effective", "host_effective", "seccomp_mode", "bounding"),
        "confinement": ("subject", "apparmor_enabled", "apparmor_fs", "active_modules", "label",
                        "engine_security_options"),
        "scratch_cgroup": ("memory_limit_bytes", "pids_limit", "cpus", "memory_limit_read_bytes", "cgroup",
                           "pid_in_cgroup", "cleaned", "cgroup_version", "effective_capabilities", "seccomp_mode",
                           "hog_exit_code", "hog_raw_exit", "hog_oom_kills"),
        "scratch_namespaces": ("subject", "kind", "inode", "host_inode", "shared"),
        "scratch_inside": ("subject", "check", "inside", "host", "same"),
        "startup": ("method", "repeat", "position", "wall_s", "memory_limit_bytes", "pids_limit", "cpus",
                    "static_binary"),
        "vm_boot": ("repeat", "wall_s", "marker_seen", "timed_out", "timeout_s", "accelerator", "kernel_release",
                    "kvm_probe"),
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


def listed(names: list[str] | set[str]) -> str:
    """`names` sorted and comma-separated, for the prose ("none" when there are none)."""
    return ", ".join(sorted(names)) or "none"


def short_caps(capabilities: set[str]) -> str:
    """Capabilities without their ``CAP_`` prefix, joined as :func:`listed` joins them."""
    return listed({c.removeprefix("CAP_") for c in capabilities})
