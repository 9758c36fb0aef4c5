"""`labkit doctor`: what the labs need, what this host has, and the command that fixes each gap."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labkit import paths
from labkit.instruments import engine
from labkit.instruments.shell import DEBIAN_PACKAGE

MIN_FREE_DISK_BYTES = 5 * 2**30


@dataclass(frozen=True)
class Check:
    """One line of the report; `fix` is the command to run when `ok` is False."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _engine() -> list[Check]:
    try:
        client = engine.connect(timeout_s=5)
    except engine.EngineUnavailable as exc:
        return [Check("Docker Engine", False, f"nothing answers at {engine.engine_address()}",
                      "make lab   (Debian as root: installs docker.io and starts dockerd); see: "
                      + str(exc).splitlines()[1].strip(" -"))]
    details = engine.info(client)
    return [
        Check("Docker Engine", True, f"{details.version} (API {details.api_version}) at {engine.engine_address()}"),
        Check("storage driver", details.storage_driver in ("overlay2", "overlayfs"), details.storage_driver,
              "configure dockerd with \"storage-driver\": \"overlay2\" (notebook 02 reads overlayfs layers)",
              required=False),
        Check("seccomp in the engine", any("seccomp" in o for o in details.security_options),
              ", ".join(details.security_options) or "none", "a dockerd built with seccomp (Debian's docker.io is)",
              required=False),
    ]


def _cgroups() -> list[Check]:
    from labkit.instruments import cgroups

    try:
        layout = cgroups.CgroupLayout.from_system()
    except cgroups.CgroupUnavailable as exc:
        return [Check("memory cgroup", False, str(exc).splitlines()[0], str(exc).splitlines()[-1])]
    return [Check("memory cgroup", True, f"cgroup {layout.version}; memory controller at {layout.memory.path}")]


def _program(name: str, purpose: str, required: bool = True) -> Check:
    found = shutil.which(name)
    return Check(name, found is not None, found or f"missing ({purpose})",
                 f"apt-get install {DEBIAN_PACKAGE.get(name, name)}", required)


def _binfmt() -> Check:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if entry.exists():
        state = entry.read_text().splitlines()[0]
        return Check("binfmt qemu-aarch64", state == "enabled", state,
                     "echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64", required=False)
    mounted = Path("/proc/sys/fs/binfmt_misc/status").exists()
    return Check("binfmt qemu-aarch64", False, "not registered" if mounted else "binfmt_misc not mounted",
                 "apt-get install qemu-user-static binfmt-support && mount -t binfmt_misc binfmt_misc "
                 "/proc/sys/fs/binfmt_misc && update-binfmts --enable qemu-aarch64   (arm64 notebook)",
                 required=False)


def _kvm() -> Check:
    from labkit.instruments import vm

    accel = vm.accelerator()
    return Check("/dev/kvm", accel == "kvm", "usable: VMs boot with KVM" if accel == "kvm"
                 else "not usable: VMs boot under software emulation (slower, still measured)",
                 "give this user rw access to /dev/kvm, or enable nested virtualisation", required=False)


def _disk() -> Check:
    folder = paths.cache_dir()
    probe = folder if folder.exists() else Path.home()
    free = shutil.disk_usage(probe).free
    return Check("free disk", free >= MIN_FREE_DISK_BYTES, f"{free / 2**30:.1f} GiB free at {probe}",
                 f"free at least {MIN_FREE_DISK_BYTES / 2**30:.0f} GiB (or set LABKIT_CACHE elsewhere)")


def _loopback_bind() -> Check:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    except OSError as exc:
        return Check("bind 127.0.0.1", False, str(exc), "allow binding loopback ports (networking notebook)")
    return Check("bind 127.0.0.1", True, f"bound port {port} and released it")


def _host() -> list[Check]:
    cores = os.cpu_count() or 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    root = os.geteuid() == 0
    return [
        Check("host", True, f"{platform.system()} {platform.release()} {platform.machine()}, {cores} cores, "
              f"{memory / 2**30:.1f} GiB"),
        Check("root", root, "uid 0" if root else f"uid {os.geteuid()}",
              "run as root: the from-scratch container needs unshare, pivot_root and cgroup writes"),
    ]


CHECKS: tuple[Callable[[], list[Check]], ...] = (
    _host,
    _engine,
    _cgroups,
    lambda: [_program("unshare", "from-scratch container"),
             _program("nsenter", "reading inside namespaces"),
             _program("debootstrap", "Debian minbase rootfs"),
             _program("busybox", "busybox base image and initramfs"),
             _program("qemu-system-x86_64", "VM boot comparison"),
             _program("qemu-aarch64-static", "arm64 emulation", required=False)],
    lambda: [_binfmt(), _kvm(), _disk(), _loopback_bind()],
)


def diagnose() -> list[Check]:
    return [check for group in CHECKS for check in group()]


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        mark = "ok  " if c.ok else ("MISS" if c.required else "warn")
        lines.append(f"[{mark}] {c.name:22} {c.detail}")
        if not c.ok:
            lines.append(f"       fix: {c.fix}")
    missing = [c.name for c in checks if c.required and not c.ok]
    lines.append("all required items present" if not missing else f"missing (required): {', '.join(missing)}")
    return "\n".join(lines)

