"""`labkit doctor`: what each notebook needs, what this host has, and the command that fixes each gap.

Host-wide checks (the machine, disk, loopback) come first; then one check per requirement any lab declares
(:mod:`labkit.core.lab`), and per notebook whether this host can run it live, or why not and the fix.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from labkit import paths
from labkit.core.lab import Lab, Requirement
from labkit.errors import EngineUnavailable, HostUnsupported
from labkit.instruments import engine, undo
from labkit.instruments.checks import Check

MIN_FREE_DISK_BYTES = 5 * 2**30


@dataclass(frozen=True)
class Report:
    """Host-wide checks, one check per requirement, and per notebook the requirements it lacks."""

    host: list[Check]
    requirements: dict[Requirement, Check]
    notebooks: dict[str, list[Check]]

    @property
    def all_runnable(self) -> bool:
        return all(c.ok or not c.required for c in self.host) and not any(self.notebooks.values())


def _engine(requirement: Requirement) -> Check:
    try:
        client = engine.connect(timeout_s=5)
    except EngineUnavailable as exc:
        return Check("Docker Engine", False, f"nothing answers at {engine.engine_address()}",
                     "make lab   (Debian as root: installs docker.io and starts dockerd); see: "
                     + str(exc).splitlines()[1].strip(" -"))
    details = engine.info(client)
    if requirement.name:  # the cgroup drivers a lab can use (07: cgroupfs groups or systemd slices), by name
        drivers = requirement.name.split()
        return Check("engine cgroup driver", details.cgroup_driver in drivers,
                     f"{details.cgroup_driver}; {' or '.join(drivers)} is needed for {requirement.purpose}",
                     f"on a test machine, run dockerd with `--exec-opt native.cgroupdriver={drivers[0]}`; "
                     "or replay the recorded results")
    seccomp = any("seccomp" in o for o in details.security_options)
    return Check("Docker Engine", True, f"{details.version} (API {details.api_version}) at "
                 f"{engine.engine_address()}; storage {details.storage_driver}; seccomp {'on' if seccomp else 'off'}")


def _root(requirement: Requirement) -> Check:
    uid = os.geteuid()
    return Check("root", uid == 0, f"uid {uid}", f"run as root (sudo): {requirement.purpose}")


def _cgroup(requirement: Requirement) -> Check:
    from labkit.instruments import cgroups

    try:
        layout = cgroups.CgroupLayout.from_system()
        where = layout.hierarchy(requirement.name)
    except HostUnsupported as exc:
        return Check(f"cgroup {requirement.name}", False, exc.message, exc.hint or "enable the controller")
    return Check(f"cgroup {requirement.name}", True, f"cgroup {where.version} at {where.path}")


def _program(requirement: Requirement) -> Check:
    found = shutil.which(requirement.name)
    return Check(requirement.name, found is not None, found or f"missing ({requirement.purpose})",
                 f"apt-get install {' '.join(requirement.packages)}", requirement.required)


def _binfmt(requirement: Requirement) -> Check:
    from labkit.instruments import arch

    platform = next(p for p, entry in arch.ENTRY_OF_PLATFORM.items() if entry == requirement.name)
    try:
        check = arch.check_emulation(platform)
    except HostUnsupported as exc:
        return Check(f"binfmt {requirement.name}", False, exc.message, exc.hint, requirement.required)
    left = [c for c in undo.orphans() if c.undo.endswith(":restore_entry") and c.detail["name"] == requirement.name]
    if left and not check.ok:
        return Check(f"binfmt {requirement.name}", False, f"{check.detail}: labkit left it so (pid {left[0].pid} "
                     "disabled it and was killed before restoring it)", UNDO_FIX, requirement.required)
    return replace(check, name=f"binfmt {requirement.name}", required=requirement.required)


def _kvm(requirement: Requirement) -> Check:
    from labkit.instruments import vm

    accel = vm.accelerator()
    return Check("/dev/kvm", accel == "kvm", "usable: VMs boot with KVM" if accel == "kvm"
                 else "not usable at hardware speed: VMs boot under software emulation (slower, still measured)",
                 "give this user rw access to /dev/kvm, or enable nested virtualisation", requirement.required)


def _registry(requirement: Requirement) -> Check:
    found = shutil.which("docker-registry")
    return Check("local registry", found is not None, found or "docker-registry is not installed",
                 "apt-get install docker-registry", requirement.required)


CHECKERS = {"engine": _engine, "root": _root, "cgroup": _cgroup, "program": _program, "binfmt": _binfmt,
            "kvm": _kvm, "registry": _registry}


def _disk() -> Check:
    folder = paths.cache_dir()
    probe = folder if folder.exists() else Path.home()
    free = shutil.disk_usage(probe).free
    return Check("free disk", free >= MIN_FREE_DISK_BYTES, f"{free / 2**30:.1f} GiB free at {probe}",
                 f"free at least {MIN_FREE_DISK_BYTES / 2**30:.0f} GiB (or set LABKIT_CACHE elsewhere)")


UNDO_FIX = "labkit clean   (or any labkit run or setup) undoes it"


def _left_behind() -> Check:
    """Host-wide changes (binfmt entries, throttled processes) whose labkit process died before undoing them."""
    left = undo.orphans()
    detail = "; ".join(f"{c.what} by pid {c.pid}" for c in left)
    return Check("host changes undone", not left, detail or "none left behind by a killed labkit process", UNDO_FIX)


def _loopback_bind() -> Check:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    except OSError as exc:
        return Check("bind 127.0.0.1", False, str(exc), "allow binding loopback ports (networking notebook)")
    return Check("bind 127.0.0.1", True, f"bound port {port} and released it")


def _machine() -> Check:
    from labkit.instruments import host

    cores = os.cpu_count() or 0
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Check("host", True, f"{platform.system()} {platform.release()} {platform.machine()}, {cores} cores, "
                 f"{memory / 2**30:.1f} GiB; {host.facts().describe()}")


def diagnose(labs: list[Lab]) -> Report:
    """Check the host, every requirement the `labs` declare (each once), and which labs can run live."""
    requirements = list(dict.fromkeys(r for lab in labs for r in lab.requirements))
    checks = {r: CHECKERS[r.kind](r) for r in requirements}
    lacking = {lab.stem: [checks[r] for r in lab.requirements if r.required and not checks[r].ok] for lab in labs}
    return Report([_machine(), _disk(), _loopback_bind(), _left_behind()], checks, lacking)


def _line(c: Check) -> list[str]:
    mark = "ok  " if c.ok else ("MISS" if c.required else "warn")
    lines = [f"[{mark}] {c.name:22} {c.detail}"]
    if not c.ok:
        lines.append(f"       fix: {c.fix}")
    return lines


def format_report(report: Report) -> str:
    lines = [line for c in report.host for line in _line(c)]
    lines += [line for c in report.requirements.values() for line in _line(c)]
    lines.append("")
    for stem, missing in report.notebooks.items():
        if missing:
            lines.append(f"{stem}: cannot run live — missing {', '.join(c.name for c in missing)} "
                         "(it replays the recorded results instead)")
        else:
            lines.append(f"{stem}: can run live")
    missing_all = sorted({c.name for cs in report.notebooks.values() for c in cs})
    lines.append("all required items present" if not missing_all else f"missing (required): {', '.join(missing_all)}")
    return "\n".join(lines)
