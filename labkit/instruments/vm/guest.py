"""The lab machine: a Debian 12 guest with systemd as PID 1, cgroup v2 and Docker, made by labkit and booted under QEMU.

:func:`ensure_guest` makes its disk once per recipe (debootstrap with the packages below, then 01's kernel package
installed with apt, the disk written by ``mke2fs -d`` without mounting anything) and keeps it in the cache folder
with the kernel and initramfs beside it. :func:`run_job` boots it with a shell script to run once the default
target is reached and the guest's engine answers; the guest powers off when the script ends. The disk is opened
with ``-snapshot`` (QEMU keeps the writes in a temporary file, in the run's own folder), so every boot starts from
the same disk. The run's folder is shared into the guest over 9p (``/labkit``): the script and its inputs go in,
what it writes to ``/labkit/out`` comes back. QEMU dies with labkit (PR_SET_PDEATHSIG); :func:`sweep` removes a
run folder a SIGKILL left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from labkit import paths
from labkit.errors import BadParameter
from labkit.instruments import daemons, images, shell
from labkit.instruments.vm.boot import ACCELERATORS, read_console
from labkit.instruments.vm.kernel import VmAssetError, ensure_kernel
from labkit.instruments.vm.kvm import KVM_CPU_MODELS, QEMU, probe_kvm

PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "kmod", "procps", "iproute2", "initramfs-tools",
            "docker.io", "apparmor", "python3", "busybox-static", "qemu-system-x86")
"""What debootstrap puts in the guest besides minbase: an init system, the engine with the AppArmor parser it
needs on a kernel with AppArmor (as Debian installs it: docker.io recommends apparmor), python3 for the probe,
and QEMU for notebook 01's VM boot when 01 runs in the guest (:mod:`labkit.app.guest_run`)."""
DISK_BYTES = 6 << 30
"""Size of the guest's disk (sparse: it takes what the files take, about 1.1 GB)."""
MAKING_MIB = 3072
"""Disk (MiB) making the guest takes at its peak: the unpacked root (about 1.3 GB) and the disk written from it."""
BOOT_MIB = 512
"""Disk (MiB) one boot may write beside the cache: QEMU's snapshot file of the guest's writes."""
MIN_MEMORY_MIB = 1024
"""Smallest guest memory (MiB) :func:`run_job` accepts: systemd, dockerd and a 64 MiB container fit in it."""
SHARE_TAG = "labkit"
MARK_RE = re.compile(r"LABKIT mark (\S+) ([0-9.]+)")
"""A line the job prints on the serial console: a mark's name and the guest's uptime (s) when it printed it."""
CONSOLE_MARKS = {"kernel": re.compile(r"Linux version \d"), "systemd": re.compile(r"systemd\[1\]: systemd \d+")}
"""Marks read from the guest's own console lines: the kernel's first message, systemd starting as PID 1."""
SECURITY_MIRROR_HINT = ("The guest's kernel comes from Debian's security archive; set LABKIT_DEBIAN_SECURITY_MIRROR "
                        "to one you can reach.")
RUN_PARENT = "guests"  # below labkit's state folder: one folder per boot, ``<run>-<id>``
_UNIT = """[Unit]
Description=labkit's job (the script in the 9p share), run once the default target is reached
After=multi-user.target docker.service
Wants=docker.service

[Service]
Type=oneshot
ExecStart=/bin/sh /labkit/job.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
"""
NINE_P_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144"
"""How the guest mounts a 9p share (the boot's own, in its fstab; a job's read-only ones add ``ro``)."""
_FSTAB = f"""/dev/vda / ext4 defaults 0 1
{SHARE_TAG} /labkit 9p {NINE_P_OPTIONS},nofail 0 0
"""
GUEST_ADDRESS = "10.0.2.15"
"""The guest's address on QEMU's user-mode network (its default), where a forwarded port arrives."""
NETWORK_UP = f"""dev=$(for nic in /sys/class/net/*; do [ -e "$nic/device" ] && echo "${{nic##*/}}"; done | head -n 1)
ip link set lo up && ip link set "$dev" up && ip addr add {GUEST_ADDRESS}/24 dev "$dev"
"""
"""Shell lines that bring up the guest's one network card (a job's, when the boot forwards a port): the one
interface with a device behind it (not Docker's bridge), its address only and no route out (the network lets
the guest reach nothing anyway)."""
MARK_FUNCTION = """mark() { echo "LABKIT mark $1 $(cut -d' ' -f1 /proc/uptime)"; }
"""
"""The shell function that prints a mark (:data:`MARK_RE`); a job's script may define it too, to add its own."""
_JOB_HEAD = """#!/bin/sh
""" + MARK_FUNCTION + """mark default-target
i=0
until docker version >/dev/null 2>&1 || [ $i -ge 600 ]; do i=$((i+1)); sleep 0.1; done
mark docker-ready
mkdir -p /labkit/out
cd /labkit
"""
_JOB_TAIL = """
echo $? > /labkit/out/status
mark job-done
systemctl poweroff
"""


def _security_mirror() -> str:
    return os.environ.get("LABKIT_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")


@dataclass(frozen=True)
class GuestImage:
    """A made guest, in its cache folder: `disk` (raw ext4), `kernel`, `initramfs`, and `manifest` (how it was
    made: ``recipe``, ``kernel_package``, ``kernel_release``, ``made_utc``, seconds per phase ``debootstrap_s``,
    ``kernel_s``, ``disk_s``, ``disk_used_bytes``, and the versions of ``docker.io``, ``systemd``, ``python3``)."""

    folder: Path
    disk: Path
    kernel: Path
    initramfs: Path
    manifest: dict[str, object]

    @property
    def kernel_release(self) -> str:
        return str(self.manifest["kernel_release"])


def recipe(kernel_package: str) -> dict[str, object]:
    """What decides the guest's content; its hash names the cache folder."""
    return {"suite": images.DEBIAN_SUITE, "packages": PACKAGES, "kernel_package": kernel_package,
            "unit": _UNIT, "fstab": _FSTAB, "disk_bytes": DISK_BYTES}


def recipe_hash(kernel_package: str) -> str:
    return hashlib.sha256(json.dumps(recipe(kernel_package), sort_keys=True).encode()).hexdigest()[:16]


def guest_parent() -> Path:
    return paths.cache_dir() / "guest"


def _kernel_package() -> str:
    return str(ensure_kernel(paths.cache_dir() / "vm")["package"])


def is_made() -> bool:
    """Whether the cache holds the guest of the current recipe (then :func:`ensure_guest` makes nothing)."""
    return (guest_parent() / recipe_hash(_kernel_package()) / "guest.json").is_file()


def ensure_guest() -> GuestImage:
    """The guest for 01's kernel (:func:`~labkit.instruments.vm.kernel.ensure_kernel`), made first when the cache
    has none for this recipe (about 2 minutes and 400 MB of downloads, once)."""
    kernel_package = _kernel_package()
    folder = guest_parent() / recipe_hash(kernel_package)
    if not (folder / "guest.json").is_file():
        _make(folder, kernel_package)
    manifest = json.loads((folder / "guest.json").read_text())
    return GuestImage(folder, folder / "disk.img", folder / str(manifest["kernel"]),
                      folder / str(manifest["initramfs"]), manifest)


def _timed(argv: list[str], timeout: float, **kwargs: object) -> float:
    started = time.perf_counter()
    shell.run(argv, timeout, **kwargs)  # type: ignore[arg-type]
    return round(time.perf_counter() - started, 3)


def _make(folder: Path, kernel_package: str) -> None:
    """Make the guest into `folder` from a staging folder beside it, removed whatever happens."""
    for program in ("debootstrap", "chroot", "mke2fs"):
        shell.require_program(program)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f"staging-{folder.name}-{os.getpid()}"
    root = staging / "root"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        root.mkdir(parents=True)
        phases = {"debootstrap_s": _timed(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             f"--cache-dir={images.deb_cache('amd64')}", images.DEBIAN_SUITE, str(root), images.mirror()],
            1800, hint=images.MIRROR_HINT)}
        suite = images.DEBIAN_SUITE
        (root / "etc/apt/sources.list").write_text(
            f"deb {images.mirror()} {suite} main\ndeb {images.mirror()} {suite}-updates main\n"
            f"deb {_security_mirror()} {suite}-security main\n")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        started = time.perf_counter()
        shell.run(["chroot", str(root), "apt-get", "update", "-q"], 600, hint=SECURITY_MIRROR_HINT)
        shell.run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", kernel_package],
                  1800, env=apt_env, hint=SECURITY_MIRROR_HINT)
        phases["kernel_s"] = round(time.perf_counter() - started, 3)
        versions = {name: shell.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Version}", name], 60).stdout
                    for name in ("docker.io", "systemd", "python3")}
        _configure(root)
        release = kernel_package.removeprefix("linux-image-")
        staging_boot = staging / "boot"
        staging_boot.mkdir()
        for name in (f"vmlinuz-{release}", f"initrd.img-{release}"):
            if not (root / "boot" / name).is_file():
                raise VmAssetError(f"{kernel_package} left no /boot/{name} in the guest",
                                   "Delete the guest's cache folder and run again.")
            shutil.copy2(root / "boot" / name, staging_boot / name)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # downloads are not part of the disk
            for entry in (root / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        phases["disk_s"] = _timed(["mke2fs", "-q", "-t", "ext4", "-d", str(root), "-L", "labkit-guest",
                                   str(staging / "disk.img"), str(DISK_BYTES // 1024) + "k"], 900)
        shutil.rmtree(root)
        manifest = {"recipe": recipe_hash(kernel_package), "kernel_package": kernel_package,
                    "kernel_release": release, "kernel": f"boot/vmlinuz-{release}",
                    "initramfs": f"boot/initrd.img-{release}", "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime()),
                    **phases, "disk_used_bytes": (staging / "disk.img").stat().st_blocks * 512, "versions": versions}
        (staging / "guest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _configure(root: Path) -> None:
    """The guest's own files: its disk and share in fstab, a name, multi-user as the default target, the job unit."""
    (root / "etc/fstab").write_text(_FSTAB)
    (root / "etc/hostname").write_text("labkit-guest\n")
    (root / "labkit").mkdir(exist_ok=True)
    systemd = root / "etc/systemd/system"
    (systemd / "labkit-job.service").write_text(_UNIT)
    wants = systemd / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "labkit-job.service").symlink_to("/etc/systemd/system/labkit-job.service")
    default = systemd / "default.target"
    default.unlink(missing_ok=True)
    default.symlink_to("/lib/systemd/system/multi-user.target")


@dataclass(frozen=True)
class GuestRun:
    """One boot that ran one job.

    `marks`: seconds from just before QEMU started until each mark's line reached the serial console: ``kernel``
    (the kernel's first message), ``systemd`` (systemd started as PID 1), ``default-target`` (multi-user.target
    reached: the job started), ``docker-ready`` (the guest's engine answered), ``job-done``, and ``off`` (QEMU
    exited). `uptimes`: the guest's own uptime (s) at the marks the job printed. `completed`: the job ended and the
    guest powered off before the timeout. `status`: the job's exit status (None when it did not end).
    `outputs`: the files the job wrote below /labkit/out, by their path there (``sys/fs/cgroup/...``).
    `console`: every console line of this boot, for the record. `stalls`: boots before it that stalled (see
    :func:`run_job`'s `ready`), or every boot, the last one included, when none reached the mark.
    """

    accelerator: str
    marks: dict[str, float]
    uptimes: dict[str, float]
    completed: bool
    status: int | None
    outputs: dict[str, bytes]
    console: tuple[str, ...]
    stalls: int = 0

    def job_lines(self) -> list[str]:
        """The console lines between the engine answering and the job's end: what the job printed (systemd's own
        lines may be interleaved)."""
        starts = [i for i, line in enumerate(self.console) if "LABKIT mark docker-ready" in line]
        ends = [i for i, line in enumerate(self.console) if "LABKIT mark job-done" in line]
        return list(self.console[starts[0] + 1 if starts else 0:ends[0] if ends else len(self.console)])


def validate_run(accel: str, memory_mib: int, cpus: int, timeout_s: float) -> None:
    """BadParameter naming the parameter when a boot could not start with these settings."""
    if accel not in ACCELERATORS:
        raise BadParameter(f"accel must be one of {', '.join(repr(a) for a in ACCELERATORS)}, got {accel!r}")
    if memory_mib < MIN_MEMORY_MIB:
        raise BadParameter(f"memory_mib must be >= {MIN_MEMORY_MIB} (MiB) for systemd and dockerd, got {memory_mib}")
    if not 1 <= cpus <= (os.cpu_count() or 1):
        raise BadParameter(f"cpus must be between 1 and this host's {os.cpu_count()} CPUs, got {cpus}")
    if not timeout_s > 0:
        raise BadParameter(f"timeout_s must be > 0 (seconds), got {timeout_s}")


TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"
"""The CPU emulated without KVM: QEMU's default plus x86-64-v2, the baseline numpy's wheels are built for. Not
``max``: its AVX2 sends numpy down code paths where this QEMU's emulation faulted (a general protection fault in
numpy's ufuncs, killing 07's kernel in the guest)."""


def qemu_argv(guest: GuestImage, share: Path, accel: str, memory_mib: int, cpus: int,
              read_only: Mapping[str, Path] | None = None, read_write: Mapping[str, Path] | None = None,
              forward: tuple[int, int] | None = None) -> list[str]:
    """QEMU's command line: the guest's disk behind ``-snapshot``, the share as 9p, the console on stdout;
    `read_only` and `read_write`: more host folders shared, by their 9p tag. No network, unless `forward`
    (host port, guest port): then a user-mode network that forwards 127.0.0.1:host port to the guest's
    :data:`GUEST_ADDRESS`:guest port and lets the guest reach nothing, neither the host nor beyond (``restrict``)."""
    accel_args = (["-enable-kvm", "-cpu", probe_kvm().cpu_model or KVM_CPU_MODELS[0]] if accel == "kvm"
                  else ["-accel", "tcg", "-cpu", TCG_CPU])
    return [
        QEMU, *accel_args, "-smp", str(cpus), "-m", str(memory_mib),
        "-kernel", str(guest.kernel), "-initrd", str(guest.initramfs),
        # No KVM inside: under TCG the emulated CPU offers SVM, and a VM booted in the guest (01's) would take a
        # "KVM" that runs at emulated speed; without it, it runs under emulation and says so.
        "-append", "console=ttyS0 root=/dev/vda rw panic=-1 modprobe.blacklist=kvm,kvm_amd,kvm_intel",
        "-drive", f"file={guest.disk},if=virtio,format=raw", "-snapshot",
        "-virtfs", f"local,path={share},mount_tag={SHARE_TAG},security_model=none",
        *[arg for tag, path in (read_only or {}).items()
          for arg in ("-virtfs", f"local,path={path},mount_tag={tag},security_model=none,readonly=on")],
        *[arg for tag, path in (read_write or {}).items()
          for arg in ("-virtfs", f"local,path={path},mount_tag={tag},security_model=none")],
        "-nographic", "-no-reboot",
        "-nic", ("none" if forward is None else
                 f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{forward[0]}-:{forward[1]}"),
    ]  # fmt: skip


def runs_parent() -> Path:
    return paths.state_dir() / RUN_PARENT


STALL_BOOTS = 2
"""Boots :func:`run_job` makes at most when the guest stalls before its `ready` mark (TCG on a virtualised host
has stalled a boot, rarely, with the console silent); `GuestRun.stalls` counts the stalled ones."""


def run_job(guest: GuestImage, script: str, files: Mapping[str, bytes], *, run_id: str, accel: str,
            memory_mib: int = 2048, cpus: int = 2, timeout_s: float = 900,
            read_only: Mapping[str, Path] | None = None, read_write: Mapping[str, Path] | None = None,
            forward: tuple[int, int] | None = None, ready: tuple[str, float] | None = None,
            on_mark: Callable[[str, float], None] | None = None, console_log: Path | None = None) -> GuestRun:
    """Boot `guest` and run `script` (sh) in it once its default target is reached and its engine answers, with
    `files` beside it in /labkit; return the timeline and what the script wrote to /labkit/out.

    `memory_mib`: guest memory (MiB); `cpus`: virtual CPUs; `timeout_s`: seconds until QEMU is killed. A job that
    runs past the timeout is data (``completed=False``), not an error. `read_only`: host folders the job may
    mount read-only (``mount -t 9p -o trans=virtio,ro TAG DIR``), by their 9p tag (at most 31 characters);
    `read_write`: the same, writable. `forward`: (host port, guest port) over a user-mode network (see
    :func:`qemu_argv`; the job brings the guest's interface up with :data:`NETWORK_UP`). `ready` (mark, seconds):
    a boot whose mark has not arrived so many seconds after QEMU's start has stalled: it is ended and the guest
    booted again, :data:`STALL_BOOTS` boots at most (the last one stalled: ``completed=False``, the mark
    missing). `on_mark(name, s)`: called as each mark arrives, with its seconds from QEMU's start, and with
    ``stalled`` before a boot again; what it raises ends the boot. `console_log`: a file that gets each console
    line as it arrives, after its seconds from QEMU's start (replaced at the start; every boot's lines), for a
    reader to follow a boot or find where one stalled. QEMU never outlives the call, and each boot's folder
    (share, snapshot file) is removed when it ends.
    """
    validate_run(accel, memory_mib, cpus, timeout_s)
    if ready is not None and not 0 < ready[1] <= timeout_s:
        raise BadParameter(f"ready: {ready[1]} s for mark {ready[0]!r} must be > 0 and within timeout_s "
                           f"({timeout_s} s)")
    with contextlib.ExitStack() as closing:
        log = None if console_log is None else closing.enter_context(console_log.open("w", encoding="utf-8",
                                                                                     buffering=1))
        stalls = 0
        while True:
            run = _boot(lambda share: qemu_argv(guest, share, accel, memory_mib, cpus, read_only, read_write,
                                                forward), script, files, run_id=run_id, accel=accel,
                        timeout_s=timeout_s, ready=ready, on_mark=on_mark, log=log)
            if ready is None or ready[0] in run.marks or "off" in run.marks:
                return dataclasses.replace(run, stalls=stalls)
            stalls += 1
            if stalls == STALL_BOOTS:
                return dataclasses.replace(run, stalls=stalls)
            if log is not None:
                log.write(f"-- stalled: no {ready[0]} {ready[1]:g} s after QEMU started; the guest is booted again\n")
            if on_mark is not None:
                on_mark("stalled", ready[1])


def _boot(argv_for: Callable[[Path], list[str]], script: str, files: Mapping[str, bytes], *, run_id: str,
          accel: str, timeout_s: float, ready: tuple[str, float] | None,
          on_mark: Callable[[str, float], None] | None, log: TextIO | None) -> GuestRun:
    """One boot of :func:`run_job` in its own folder, QEMU started as `argv_for(share)`; ended at `ready`'s bound
    when its mark has not come."""
    folder = runs_parent() / f"{run_id}-{secrets.token_hex(4)}"
    share, scratch = folder / "share", folder / "tmp"
    marks: dict[str, float] = {}
    uptimes: dict[str, float] = {}
    lines: list[str] = []
    try:
        (share / "out").mkdir(parents=True)
        scratch.mkdir()
        for name, content in files.items():
            (share / name).write_bytes(content)
        (share / "job.sh").write_text(_JOB_HEAD + f"timeout {timeout_s:.0f} sh -c {shlex.quote(script)}" + _JOB_TAIL)
        argv = argv_for(share)
        started_ns = time.perf_counter_ns()
        proc = shell.spawn(argv, stdin=shell.DEVNULL, stdout=shell.PIPE, stderr=shell.PIPE,
                           env={**os.environ, "TMPDIR": str(scratch)}, preexec_fn=shell.dies_with_parent())
        deadline_ns = started_ns + int(timeout_s * 1e9)

        def on_line(now: int, stream: str, line: str) -> int | None:
            lines.append(line)
            if log is not None:
                log.write(f"{(now - started_ns) / 1e9:8.2f} {line}\n")
            match = MARK_RE.search(line) if stream == "out" else None
            if match and match.group(1) not in marks:
                marks[match.group(1)] = (now - started_ns) / 1e9
                uptimes[match.group(1)] = float(match.group(2))
                if on_mark is not None:
                    on_mark(match.group(1), marks[match.group(1)])
            for name, pattern in CONSOLE_MARKS.items():
                if name not in marks and pattern.search(line):
                    marks[name] = (now - started_ns) / 1e9
            return deadline_ns if ready is not None and ready[0] in marks else None

        try:
            closed = read_console(proc, started_ns + int(ready[1] * 1e9) if ready else deadline_ns, on_line)
        finally:
            _end(proc)
        if closed:
            marks["off"] = (time.perf_counter_ns() - started_ns) / 1e9
        out = share / "out"
        outputs = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        status_text = outputs.pop("status", b"").decode().strip()
        return GuestRun(accel, marks, uptimes, closed and "job-done" in marks,
                        int(status_text) if status_text.isdigit() else None, outputs, tuple(lines))
    finally:
        remove_run(folder)


def _end(proc: shell.Process[str]) -> None:
    """QEMU gone: it exits by itself once the guest powered off (closed pipes); otherwise it is killed."""
    try:
        try:
            proc.wait(timeout=5)
        except shell.TimeoutExpired:
            proc.kill()
        proc.wait(timeout=30)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def remove_run(folder: Path) -> None:
    """End any process naming the run's folder (a QEMU whose maker died) and remove the folder (idempotent)."""
    daemons.end_processes([str(folder)])
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        raise OSError(f"could not remove {folder}: remove it by hand, then run `labkit clean`.")
    with_parent = runs_parent()
    if with_parent.is_dir() and not any(with_parent.iterdir()):
        with_parent.rmdir()


def sweep(run_id: str | None = None) -> list[str]:
    """Remove the guest runs of run `run_id` (every run when None) that a killed maker left; what went."""
    parent = runs_parent()
    if not parent.is_dir():
        return []
    removed = []
    for folder in sorted(parent.glob(f"{run_id}-*" if run_id else "*")):
        remove_run(folder)
        removed.append(f"lab machine run {folder}")
    return removed
