"""Boot the kernel and initramfs once under QEMU and time it until /init prints :data:`MARKER`.

QEMU's serial console is read from its stdout; the guest has no network (``-nic none``) and QEMU exits when
the guest powers off (``-no-reboot``). QEMU never outlives :func:`boot_once`.
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labkit.errors import BadParameter
from labkit.instruments import shell
from labkit.instruments.shell import CommandError, spawn
from labkit.instruments.vm.initramfs import MARKER
from labkit.instruments.vm.kernel import VmAssetError, VmAssets
from labkit.instruments.vm.kvm import KVM_CPU_MODELS, QEMU, probe_kvm

ACCELERATORS = ("kvm", "tcg")
"""Accelerators :func:`boot_once` accepts: the kernel's KVM or QEMU's instruction translator (TCG)."""

MIN_MEMORY_MIB = 64
"""Smallest guest memory (MiB) :func:`boot_once` accepts; Debian's kernel and the initramfs fit in it."""

KERNEL_CMDLINE = "console=ttyS0 panic=-1 rdinit=/init"
"""Kernel command line: console on the first serial port; on a panic reboot at once (so QEMU exits)."""

_POWEROFF_GRACE_S = 10.0
"""Seconds we keep reading the console after the marker, for the guest to power off."""
_EXIT_WAIT_S = 5.0
"""Seconds we let QEMU exit by itself once it closed its output, before killing it."""
_TAIL_LINES = 25
_RELEASE_RE = re.compile(re.escape(MARKER) + r" release=(\S+)")


@dataclass(frozen=True)
class BootResult:
    """One timed boot.

    `wall_s`: seconds from just before QEMU started until the marker line arrived on the serial console. Even
    then it is a lower bound of what booting a real VM takes: it covers QEMU, the firmware and the kernel up to
    running /init, not a distribution's init system or services.
    When the marker never came (`marker_seen` is False), `wall_s` is the seconds until we stopped waiting: the
    boot took at least that long, so `wall_s` is only a lower bound (count it as "more than wall_s", never as a
    boot time). `timed_out`: we stopped waiting at `timeout_s` with QEMU still running (False when the marker
    came, or when the guest stopped by itself without printing it, e.g. a kernel panic).
    `accelerator`: "kvm" or "tcg". `marker_seen`: whether user space printed the marker.
    `kernel_release`: the release the guest printed next to the marker (the asset's release when the marker
    was not seen). `console_tail`: the last lines of the serial console (and QEMU's own messages).
    """

    wall_s: float
    accelerator: str
    marker_seen: bool
    timed_out: bool
    kernel_release: str
    console_tail: str


def validate_boot(accel: str, memory_mib: int, timeout_s: float) -> None:
    """BadParameter (a ValueError) naming the parameter when a boot could not start with these settings."""
    if accel not in ACCELERATORS:
        raise BadParameter(f"accel must be one of {', '.join(repr(a) for a in ACCELERATORS)}, got {accel!r}")
    if memory_mib < MIN_MEMORY_MIB:
        raise BadParameter(f"memory_mib must be >= {MIN_MEMORY_MIB} (MiB), got {memory_mib}")
    if not timeout_s > 0:
        raise BadParameter(f"timeout_s must be > 0 (seconds), got {timeout_s}")


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


def read_console(proc: shell.Process[str], deadline_ns: int,
                 on_line: Callable[[int, str, str], int | None]) -> bool:
    """Read QEMU's stdout (the serial console) and stderr line by line until both close or `deadline_ns`
    (perf_counter_ns). ``on_line(arrived_ns, stream, line)`` gets each line (`stream` "out" or "err", the line
    without its end) and may return a new deadline, sooner or later. True when both streams closed (QEMU is
    exiting)."""
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    decoders = {fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in streams}
    partial = {fd: "" for fd in streams}

    def take(fd: int, lines: Sequence[str], now: int) -> None:
        nonlocal deadline_ns
        for raw in lines:
            moved = on_line(now, streams[fd], raw.rstrip("\r"))
            if moved is not None:
                deadline_ns = moved

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
                    take(fd, [text] if text else [], now)
                    continue
                *complete, partial[fd] = (partial[fd] + decoders[fd].decode(chunk)).split("\n")
                take(fd, complete, now)
        closed = not selector.get_map()
    take_last = [(fd, text) for fd, text in partial.items() if text]
    for fd, text in take_last:
        take(fd, [text], time.perf_counter_ns())
    return closed


def _watch(proc: shell.Process[str], deadline_ns: int) -> _Console:
    """The console of one boot until both streams close or `deadline_ns` (perf_counter_ns); after the marker
    line, at most the power-off grace period more."""
    console = _Console(lines=[])
    stderr_parts: list[str] = []

    def on_line(now: int, stream: str, line: str) -> int | None:
        console.lines.append(line)
        if stream == "err":
            stderr_parts.append(line + "\n")
            return None
        match = _RELEASE_RE.search(line)
        if console.marker_ns is None and (match or MARKER in line):
            console.marker_ns = now
            console.release = match.group(1) if match else None
            return min(deadline_ns, now + int(_POWEROFF_GRACE_S * 1e9))
        return None

    console.closed = read_console(proc, deadline_ns, on_line)
    console.stderr = "".join(stderr_parts)
    return console


def _stop(proc: shell.Process[str], exit_wait_s: float) -> bool:
    """Make sure QEMU has exited: wait `exit_wait_s` seconds, then kill it; reap it. True if we killed it."""
    killed = False
    try:
        try:
            proc.wait(timeout=exit_wait_s)
        except shell.TimeoutExpired:
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
    translates the guest's instructions); :func:`~labkit.instruments.vm.accelerator` picks the one that works
    here. `memory_mib`: guest memory in MiB (>= 64). `timeout_s`: seconds to wait for the marker before giving up.
    A boot that times out, or a guest that stops without printing the marker, is data (``marker_seen=False``,
    `wall_s` a lower bound; see :class:`BootResult`), not an error. Bad parameters raise BadParameter before
    anything starts; missing assets raise VmAssetError; QEMU failing to start (exit status not 0, e.g. KVM
    unusable) raises CommandError. QEMU never outlives the call: it is killed in a ``finally``, also on
    KeyboardInterrupt.
    """
    validate_boot(accel, memory_mib, timeout_s)
    for path in (assets.kernel, assets.initramfs):
        if not path.is_file():
            raise VmAssetError(
                f"{path} is missing", "Call prepare_vm_assets() first: it makes the kernel and initramfs."
            )
    kvm_cpu = (probe_kvm().cpu_model or KVM_CPU_MODELS[0]) if accel == "kvm" else ""
    argv = qemu_argv(assets, accel, memory_mib, kvm_cpu)
    started_ns = time.perf_counter_ns()
    proc = spawn(argv, stdin=shell.DEVNULL, stdout=shell.PIPE, stderr=shell.PIPE)
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
            hint="If KVM is unusable here, use accel='tcg' (labkit.instruments.vm.accelerator() picks a working one).",
        )
    end_ns = console.marker_ns if console.marker_ns is not None else gave_up_ns
    return BootResult(
        wall_s=(end_ns - started_ns) / 1e9,
        accelerator=accel,
        marker_seen=seen,
        timed_out=not seen and not console.closed,
        kernel_release=console.release or assets.kernel_release,
        console_tail="\n".join(console.lines[-_TAIL_LINES:]),
    )
