"""Boot a real Debian kernel under QEMU and time it: the "a VM boots in minutes" instrument.

Used by notebook 01 (what a container is), start-up comparison: fork/exec vs container vs a VM boot.

The guest is the kernel Debian ships (the package `linux-image-amd64` depends on, fetched with
`apt-get download` and unpacked with `dpkg -x`, never installed on the host) plus a tiny initramfs: the host's
static busybox and an `/init` script that mounts /proc, prints :data:`MARKER` on the serial console and powers
off. A boot is timed from just before QEMU starts until the marker line arrives on the serial console.
The guest has no network (`-nic none`).

Nothing happens at import. Files are written only under the `cache_dir` given to :func:`prepare_vm_assets`.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import re
import selectors
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.instruments.shell import CommandError, require_program, run, spawn

MARKER = "LABKIT-VM-READY"
"""The line /init prints once user space runs; it is followed by ``release=<uname -r>``."""

ACCELERATORS = ("kvm", "tcg")
"""Accelerators :func:`boot_once` accepts: the kernel's KVM or QEMU's instruction translator (TCG)."""

MIN_MEMORY_MIB = 64
"""Smallest guest memory (MiB) :func:`boot_once` accepts; Debian's kernel and the initramfs fit in it."""

KERNEL_METAPACKAGE = "linux-image-amd64"
QEMU = "qemu-system-x86_64"
KERNEL_CMDLINE = "console=ttyS0 panic=-1 rdinit=/init"
"""Kernel command line: console on the first serial port; on a panic reboot at once (so QEMU exits)."""

KVM_CPU_MODELS = ("host", "host,-arch-capabilities")
"""CPU models tried with KVM, best first. Under some nested hypervisors QEMU 7.2 aborts with
"failed to set MSR 0x10a" (IA32_ARCH_CAPABILITIES) for `-cpu host`; hiding that one feature works
(seen on our machines and in asterinas/asterinas#2980)."""

KVM_PROBE_TIMEOUT_S = 3.0
"""Seconds the KVM speed probe may take, QEMU start-up included (hardware KVM: about 0.1 s)."""

BUSYBOX_HINT = "Install the static build: `apt-get install busybox-static` (package `busybox` is dynamic)."

_APT_TIMEOUT_S = 60.0
_DOWNLOAD_TIMEOUT_S = 900.0
_EXTRACT_TIMEOUT_S = 300.0
_POWEROFF_GRACE_S = 10.0
_EXIT_WAIT_S = 5.0
_TAIL_LINES = 25
_RELEASE_RE = re.compile(re.escape(MARKER) + r" release=(\S+)")
_KERNEL_DEP_RE = re.compile(r"^\s*\|?Depends:\s*<?(linux-image-\d[^\s>]*)>?\s*$", re.MULTILINE)

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "{MARKER} release=$(/bin/busybox uname -r)"
/bin/busybox poweroff -f
"""
"""The guest's /init: mounts proc and sysfs, prints the marker line, powers the VM off."""


class VmAssetError(RuntimeError):
    """The kernel or initramfs cannot be prepared; the message says what to do about it."""


@dataclass(frozen=True)
class VmAssets:
    """What a boot needs, all inside the cache folder.

    `kernel`: the bzImage (``vmlinuz-<release>``); `initramfs`: an uncompressed newc cpio archive;
    `kernel_package`: the Debian package it came from, e.g. ``linux-image-6.1.0-56-amd64``;
    `kernel_release`: the release the kernel reports (``uname -r``), e.g. ``6.1.0-56-amd64``.
    """

    kernel: Path
    initramfs: Path
    kernel_package: str
    kernel_release: str


@dataclass(frozen=True)
class BootResult:
    """One timed boot.

    `wall_s`: seconds from just before QEMU started until the marker line arrived on the serial console;
    when the marker never came, the seconds until we gave up (timeout or QEMU exit).
    `accelerator`: "kvm" or "tcg". `marker_seen`: whether user space printed the marker.
    `kernel_release`: the release the guest printed next to the marker (the asset's release when the marker
    was not seen). `console_tail`: the last lines of the serial console (and QEMU's own messages).
    """

    wall_s: float
    accelerator: str
    marker_seen: bool
    kernel_release: str
    console_tail: str


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc cpio archive; `mode` includes the file type bits (``0o100755``, ``0o040755``).

    `data` is the file content, or the link target for a symlink; `rdev` is (major, minor) for device nodes.
    """

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


# ---------------------------------------------------------------------------------------------- cpio (newc)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Return an uncompressed "newc" (SVR4, no CRC) cpio archive of `entries`, the kernel's initramfs format.

    Owners are root (uid/gid 0) and mtimes are 0, so the same entries always give the same bytes.
    Directories must come before their contents.
    """
    out = bytearray()
    all_entries = [*entries, CpioEntry("TRAILER!!!", 0)]
    for ino, entry in enumerate(all_entries, start=1):
        name = entry.name.lstrip("/").encode() + b"\0"
        is_trailer = entry.name == "TRAILER!!!"
        nlink = 2 if entry.mode & 0o170000 == 0o040000 else 1
        fields = (
            0 if is_trailer else ino,
            entry.mode,
            0,  # uid
            0,  # gid
            nlink,
            0,  # mtime
            len(entry.data),
            0,  # devmajor
            0,  # devminor
            entry.rdev[0],
            entry.rdev[1],
            len(name),
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += entry.data + _pad4(len(entry.data))
    return bytes(out)


# ---------------------------------------------------------------------------------------------- initramfs


def is_static_elf(path: Path) -> bool:
    """Whether `path`, a 64-bit little-endian ELF file, has no program interpreter (is statically linked).

    Raises VmAssetError when the file is not such an ELF file.
    """
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise VmAssetError(f"{path} is not a 64-bit little-endian ELF executable")
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    if len(table) < phentsize * phnum:
        raise VmAssetError(f"{path}: truncated ELF program header table")
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def initramfs_entries(busybox: Path) -> list[CpioEntry]:
    """The initramfs members: dirs, /dev/console, the static `busybox` as /bin/busybox (+ /bin/sh) and /init.

    Raises VmAssetError, naming `apt-get install busybox-static`, when `busybox` is not statically linked.
    """
    if not is_static_elf(busybox):
        raise VmAssetError(
            f"{busybox} is dynamically linked; the initramfs needs a static busybox.\n{BUSYBOX_HINT}"
        )
    directory = 0o040755
    return [
        *(CpioEntry(d, directory) for d in ("bin", "dev", "proc", "sys", "tmp", "root")),
        CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        CpioEntry("dev/null", 0o020666, rdev=(1, 3)),
        CpioEntry("bin/busybox", 0o100755, busybox.read_bytes()),
        CpioEntry("bin/sh", 0o120777, b"busybox"),
        CpioEntry("init", 0o100755, INIT_SCRIPT.encode()),
    ]


def _host_busybox() -> Path:
    """The host's busybox (MissingProgram naming busybox-static when there is none)."""
    return Path(require_program("busybox"))


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- kernel


def kernel_package_from_depends(apt_cache_depends: str) -> str:
    """The versioned kernel package named in `apt-cache depends linux-image-amd64` output.

    E.g. ``  Depends: linux-image-6.1.0-56-amd64`` gives ``linux-image-6.1.0-56-amd64``.
    Raises VmAssetError when the output names none.
    """
    match = _KERNEL_DEP_RE.search(apt_cache_depends)
    if match is None:
        raise VmAssetError(
            f"`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image-<version> package:\n"
            f"{apt_cache_depends.strip()}\nRun `apt-get update` and try again."
        )
    return match.group(1)


def _manifest_path(cache_dir: Path) -> Path:
    return cache_dir / "kernel.json"


def _cached_kernel(cache_dir: Path) -> dict[str, object] | None:
    manifest = _manifest_path(cache_dir)
    if not manifest.exists():
        return None
    info: dict[str, object] = json.loads(manifest.read_text())
    if not (cache_dir / str(info["kernel"])).is_file():
        return None
    return info


def _download_kernel(cache_dir: Path) -> dict[str, object]:
    """Download and unpack the kernel once; keep only boot/vmlinuz-* and a manifest (kernel.json)."""
    require_program("apt-get")
    require_program("dpkg")
    depends = run(["apt-cache", "depends", KERNEL_METAPACKAGE], _APT_TIMEOUT_S).stdout
    package = kernel_package_from_depends(depends)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter_ns()
        # apt-get download writes into the working directory; `env -C` sets it without a shell.
        run(
            ["env", "-C", str(tmp), "apt-get", "download", package],
            _DOWNLOAD_TIMEOUT_S,
            hint="Check that the Debian mirror in /etc/apt/sources.list is reachable, then `apt-get update`.",
        )
        download_s = (time.perf_counter_ns() - started) / 1e9
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise VmAssetError(f"`apt-get download {package}` left {len(debs)} .deb files, expected 1")
        deb = debs[0]
        version = run(["dpkg-deb", "-f", str(deb), "Version"], _APT_TIMEOUT_S).stdout.strip()
        root = tmp / "root"
        run(["dpkg", "-x", str(deb), str(root)], _EXTRACT_TIMEOUT_S)
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise VmAssetError(f"{deb.name} holds {len(kernels)} boot/vmlinuz-* files, expected 1")
        release = kernels[0].name.removeprefix("vmlinuz-")
        kernel_dir = cache_dir / "kernel"
        kernel_dir.mkdir(exist_ok=True)
        os.replace(kernels[0], kernel_dir / kernels[0].name)
        info: dict[str, object] = {
            "package": package,
            "version": version,
            "release": release,
            "kernel": f"kernel/{kernels[0].name}",
            "deb_bytes": deb.stat().st_size,
            "download_s": round(download_s, 3),
        }
    manifest = _manifest_path(cache_dir)
    tmp_manifest = manifest.with_name(manifest.name + ".tmp")
    tmp_manifest.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_manifest, manifest)
    return info


def prepare_vm_assets(cache_dir: Path) -> VmAssets:
    """Make sure `cache_dir` holds a Debian kernel and a busybox initramfs, and return their paths.

    The first call downloads the kernel package (about 70 MB) with `apt-get download` and keeps only its
    ``boot/vmlinuz-*`` (about 8 MB) plus ``kernel.json`` (package, version, release, .deb size in bytes,
    download time in seconds). Later calls reuse that kernel and do not touch apt: delete `cache_dir` to fetch
    a newer one. The initramfs (``initramfs.cpio``, about 2 MB) is rebuilt from the host's static busybox and
    rewritten only when its bytes changed.
    """
    busybox = _host_busybox()
    entries = initramfs_entries(busybox)  # fails before any download when busybox is not static
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    info = _cached_kernel(cache_dir) or _download_kernel(cache_dir)
    initramfs = cache_dir / "initramfs.cpio"
    _write_if_changed(initramfs, write_newc(entries))
    return VmAssets(
        kernel=cache_dir / str(info["kernel"]),
        initramfs=initramfs,
        kernel_package=str(info["package"]),
        kernel_release=str(info["release"]),
    )


# ---------------------------------------------------------------------------------------------- booting


def kvm_probe_firmware(iterations: int = 1 << 24) -> bytes:
    """A 64 KiB BIOS image that counts down `iterations` (two instructions each) and then exits QEMU.

    It starts at the reset vector in real mode, loops, then writes 0x10 to an ``isa-debug-exit`` device at
    port 0xf4, which makes QEMU exit with status 33 (``0x10 << 1 | 1``). Used by :func:`probe_kvm`.
    """
    if not 0 < iterations < 1 << 32:
        raise ValueError(f"iterations must be in 1..{(1 << 32) - 1}, got {iterations}")
    code = (
        b"\x66\xb9" + struct.pack("<I", iterations)  # mov ecx, iterations
        + b"\x66\x49"  # loop: dec ecx
        + b"\x75\xfc"  # jnz loop
        + b"\xb0\x10"  # mov al, 0x10
        + b"\xe6\xf4"  # out 0xf4, al  (isa-debug-exit)
        + b"\xf4\xeb\xfd"  # hlt; jmp hlt
    )  # fmt: skip
    image = bytearray(b"\xf4" * 0x10000)
    image[: len(code)] = code
    image[0xFFF0:0xFFF5] = b"\xea\x00\x00\x00\xf0"  # reset vector: jmp far f000:0000
    return bytes(image)


_PROBE_EXIT = 33


def _run_probe(cpu: str, firmware: Path) -> tuple[str, str]:
    """Run the probe firmware under KVM with CPU model `cpu`: ("ok" | "slow" | "failed", QEMU's message)."""
    argv = [
        QEMU, "-accel", "kvm", "-cpu", cpu, "-M", "pc", "-m", "16", "-bios", str(firmware),
        "-display", "none", "-nodefaults", "-no-user-config",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip
    try:
        probe = run(argv, KVM_PROBE_TIMEOUT_S, check=False)
    except CommandError as exc:
        if exc.exit_code is None:
            return "slow", ""
        raise
    last = (probe.stderr.strip().splitlines() or [f"exit status {probe.exit_code}"])[0]
    return ("ok" if probe.exit_code == _PROBE_EXIT else "failed"), last


@dataclass(frozen=True)
class KvmProbe:
    """What KVM can do here.

    `cpu_model`: the first of :data:`KVM_CPU_MODELS` QEMU starts a KVM guest with (None: none, or /dev/kvm
    unusable); `fast`: that guest ran the probe loop at hardware speed; `detail`: the verdict in words.
    """

    cpu_model: str | None
    fast: bool
    detail: str


@functools.cache
def probe_kvm() -> KvmProbe:
    """Probe KVM once per process (hardware KVM answers in about 0.1 s; at most a few seconds otherwise).

    The probe runs :func:`kvm_probe_firmware` (32 million instructions) with each of :data:`KVM_CPU_MODELS`
    until QEMU starts; it is fast when it finishes within :data:`KVM_PROBE_TIMEOUT_S` seconds. Some sandboxes
    offer a /dev/kvm without hardware virtualisation underneath (e.g. the `kvm_pvm` module) that emulates an
    ordinary guest kernel instruction by instruction (about 2 million per second): QEMU starts, but a stock
    kernel does not boot in any useful time.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmProbe(None, False, f"/dev/kvm cannot be opened read-write: {exc.strerror}")
    os.close(fd)
    require_program(QEMU)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="labkit-kvm-probe-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(kvm_probe_firmware())
        for cpu in KVM_CPU_MODELS:
            outcome, last = _run_probe(cpu, firmware)
            if outcome == "ok":
                return KvmProbe(cpu, True, "KVM runs guest code at hardware speed")
            if outcome == "slow":
                too_slow = f"KVM runs guest code too slowly (probe not done after {KVM_PROBE_TIMEOUT_S:g} s)"
                return KvmProbe(cpu, False, too_slow)
            failures.append(f"-cpu {cpu}: {last}")
    return KvmProbe(None, False, "QEMU cannot start a KVM guest: " + "; ".join(failures))


def accelerator() -> str:
    """The accelerator to use: "kvm" if QEMU runs guest code with it at hardware speed, else "tcg"."""
    probe = probe_kvm()
    return "kvm" if probe.cpu_model is not None and probe.fast else "tcg"


def validate_boot(accel: str, memory_mib: int, timeout_s: float) -> None:
    """ValueError naming the parameter when a boot could not start with these settings."""
    if accel not in ACCELERATORS:
        raise ValueError(f"accel must be one of {', '.join(repr(a) for a in ACCELERATORS)}, got {accel!r}")
    if memory_mib < MIN_MEMORY_MIB:
        raise ValueError(f"memory_mib must be >= {MIN_MEMORY_MIB} (MiB), got {memory_mib}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 (seconds), got {timeout_s}")


def qemu_argv(assets: VmAssets, accel: str, memory_mib: int, kvm_cpu: str = "host") -> list[str]:
    """The QEMU command line for one boot: serial console on stdout, no network, no reboot, `memory_mib` MiB.

    `kvm_cpu` is the CPU model used with "kvm" (TCG uses QEMU's default model).
    """
    accel_args = ["-enable-kvm", "-cpu", kvm_cpu] if accel == "kvm" else ["-accel", "tcg"]
    return [
        QEMU,
        *accel_args,
        "-m", str(memory_mib),
        "-kernel", str(assets.kernel),
        "-initrd", str(assets.initramfs),
        "-append", KERNEL_CMDLINE,
        "-nographic",
        "-no-reboot",
        "-nic", "none",
    ]  # fmt: skip


@dataclass
class _Console:
    """Serial console and QEMU stderr lines; `marker_ns`: perf_counter_ns when the marker line arrived."""

    lines: list[str]
    stderr: str = ""
    marker_ns: int | None = None
    release: str | None = None
    closed: bool = False  # QEMU closed stdout and stderr (it is exiting)


def _watch(proc: subprocess.Popen[str], deadline_ns: int) -> _Console:
    """Read QEMU's stdout (serial console) and stderr until both close or `deadline_ns` (perf_counter_ns).

    After the marker line, keep reading for at most the power-off grace period.
    """
    console = _Console(lines=[])
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    decoders = {fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in streams}
    partial = {fd: "" for fd in streams}
    stderr_parts: list[str] = []
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining_s = (deadline_ns - time.perf_counter_ns()) / 1e9
            if remaining_s <= 0:
                break
            for key, _ in selector.select(timeout=remaining_s):
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                now = time.perf_counter_ns()
                if not chunk:
                    selector.unregister(fd)
                    text = partial[fd] + decoders[fd].decode(b"", final=True)
                    partial[fd] = ""
                    if text:
                        _take_lines(console, stderr_parts, streams[fd], [text], now)
                    continue
                text = partial[fd] + decoders[fd].decode(chunk)
                *complete, partial[fd] = text.split("\n")
                was_seen = console.marker_ns is not None
                _take_lines(console, stderr_parts, streams[fd], complete, now)
                if not was_seen and console.marker_ns is not None:
                    deadline_ns = min(deadline_ns, now + int(_POWEROFF_GRACE_S * 1e9))
        console.closed = not selector.get_map()
    console.lines.extend(p for p in partial.values() if p)
    console.stderr = "".join(stderr_parts)
    return console


def _take_lines(
    console: _Console, stderr_parts: list[str], stream: str, lines: Sequence[str], now: int
) -> None:
    for raw in lines:
        line = raw.rstrip("\r")
        if stream == "err":
            stderr_parts.append(line + "\n")
            console.lines.append(line)
            continue
        console.lines.append(line)
        match = _RELEASE_RE.search(line)
        if console.marker_ns is None and (match or MARKER in line):
            console.marker_ns = now
            console.release = match.group(1) if match else None


def _stop(proc: subprocess.Popen[str], exit_wait_s: float) -> bool:
    """Make sure QEMU has exited: wait `exit_wait_s` seconds, then kill it; reap it. True if we killed it."""
    killed = False
    try:
        try:
            proc.wait(timeout=exit_wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            killed = True
        proc.wait(timeout=30)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return killed


def boot_once(assets: VmAssets, accel: str, memory_mib: int = 256, timeout_s: float = 300) -> BootResult:
    """Boot the kernel + initramfs once under QEMU and time it until /init prints the marker line.

    `accel`: "kvm" (``-enable-kvm -cpu host``, or the model :func:`probe_kvm` found) or "tcg" (QEMU
    translates the guest's instructions); :func:`accelerator` picks the one that works here.
    `memory_mib`: guest memory in MiB (>= 64). `timeout_s`: seconds to wait for the marker before giving up.
    A boot that times out, or a guest that stops without printing the marker, is data (``marker_seen=False``),
    not an error. QEMU failing to start (exit status not 0, e.g. KVM unusable) raises CommandError.
    QEMU never outlives the call: it is killed in a ``finally``, also on KeyboardInterrupt.
    """
    validate_boot(accel, memory_mib, timeout_s)
    for path in (assets.kernel, assets.initramfs):
        if not path.is_file():
            raise VmAssetError(f"{path} is missing: call prepare_vm_assets() first")
    kvm_cpu = (probe_kvm().cpu_model or KVM_CPU_MODELS[0]) if accel == "kvm" else ""
    argv = qemu_argv(assets, accel, memory_mib, kvm_cpu)
    started_ns = time.perf_counter_ns()
    proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console: _Console | None = None
    try:
        console = _watch(proc, started_ns + int(timeout_s * 1e9))
    finally:
        # closed pipes mean QEMU is exiting: let it finish so its exit status is its own, not our SIGKILL
        killed = _stop(proc, _EXIT_WAIT_S if console is not None and console.closed else 0.0)
    gave_up_ns = time.perf_counter_ns()
    seen = console.marker_ns is not None
    if not seen and not killed and proc.returncode != 0:
        raise CommandError(
            argv,
            proc.returncode,
            "\n".join(console.lines[-_TAIL_LINES:]),
            console.stderr,
            hint="If KVM is unusable here, use accel='tcg' (labkit.vm.accelerator() picks a working one).",
        )
    end_ns = console.marker_ns if console.marker_ns is not None else gave_up_ns
    return BootResult(
        wall_s=(end_ns - started_ns) / 1e9,
        accelerator=accel,
        marker_seen=seen,
        kernel_release=console.release or assets.kernel_release,
        console_tail="\n".join(console.lines[-_TAIL_LINES:]),
    )
