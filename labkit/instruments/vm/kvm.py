"""Whether KVM runs guest code at hardware speed here, and so which accelerator a boot should use.

The probe boots a tiny firmware (:func:`kvm_probe_firmware`) under KVM and times it; :func:`kvm_verdict` turns
the probe runs into a :class:`KvmProbe` without touching the host, so the decision is testable anywhere.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from labkit.errors import BadParameter
from labkit.instruments import undo
from labkit.instruments.shell import CommandError, require_program, run

QEMU = "qemu-system-x86_64"

KVM_CPU_MODELS = ("host", "host,-arch-capabilities")
"""CPU models tried with KVM, best first. Under some nested hypervisors QEMU 7.2 aborts with
"failed to set MSR 0x10a" (IA32_ARCH_CAPABILITIES) for `-cpu host`; hiding that one feature works
(seen on our machines and in asterinas/asterinas#2980)."""

KVM_PROBE_TIMEOUT_S = 3.0
"""Seconds the KVM speed probe may take, QEMU start-up included (hardware KVM: about 0.1 s)."""

_KVM_DEVICE = "/dev/kvm"
_PROBE_EXIT = 33
"""QEMU's exit status when the probe firmware writes 0x10 to isa-debug-exit (``0x10 << 1 | 1``)."""

ProbeOutcome = Literal["ok", "slow", "failed"]
"""How one probe run ended: finished in time ("ok"), still running at the time limit ("slow"), or QEMU could
not start the guest ("failed")."""


def kvm_probe_firmware(iterations: int = 1 << 24) -> bytes:
    """A 64 KiB BIOS image that counts down `iterations` (two instructions each) and then exits QEMU.

    It starts at the reset vector in real mode, loops, then writes 0x10 to an ``isa-debug-exit`` device at
    port 0xf4, which makes QEMU exit with status 33 (``0x10 << 1 | 1``). Used by :func:`probe_kvm`.
    """
    if not 0 < iterations < 1 << 32:
        raise BadParameter(f"iterations must be in 1..{(1 << 32) - 1}, got {iterations}")
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


@dataclass(frozen=True)
class ProbeRun:
    """One run of the probe firmware under KVM with CPU model `cpu_model`.

    `outcome`: see :data:`ProbeOutcome`; `message`: QEMU's first line on stderr (or its exit status) when it failed.
    """

    cpu_model: str
    outcome: ProbeOutcome
    message: str = ""


@dataclass(frozen=True)
class KvmProbe:
    """What KVM can do here.

    `cpu_model`: the first of :data:`KVM_CPU_MODELS` QEMU starts a KVM guest with (None: none, or /dev/kvm
    unusable); `fast`: that guest ran the probe loop at hardware speed; `detail`: the verdict in words.
    """

    cpu_model: str | None
    fast: bool
    detail: str

    @property
    def accelerator(self) -> str:
        """The accelerator to use: "kvm" when KVM runs guest code at hardware speed, else "tcg" (QEMU translates)."""
        return "kvm" if self.fast else "tcg"


def kvm_verdict(device_error: str | None, runs: Iterable[ProbeRun]) -> KvmProbe:
    """Decide what KVM can do from the probe's observations; pure, so recorded outcomes can be fed in.

    `device_error`: why /dev/kvm cannot be opened read-write (None: it can). `runs`: probe runs in the order of
    :data:`KVM_CPU_MODELS`; they are consumed lazily and only until the first that started a guest, so a
    generator that runs QEMU runs it no more often than needed.
    """
    if device_error is not None:
        return KvmProbe(None, False, f"{_KVM_DEVICE} cannot be opened read-write: {device_error}")
    failures: list[str] = []
    for probe_run in runs:
        if probe_run.outcome == "ok":
            return KvmProbe(probe_run.cpu_model, True, "KVM runs guest code at hardware speed")
        if probe_run.outcome == "slow":
            too_slow = f"KVM runs guest code too slowly (probe not done after {KVM_PROBE_TIMEOUT_S:g} s)"
            return KvmProbe(probe_run.cpu_model, False, too_slow)
        failures.append(f"-cpu {probe_run.cpu_model}: {probe_run.message}")
    return KvmProbe(None, False, "QEMU cannot start a KVM guest: " + "; ".join(failures))


def _run_probe(cpu: str, firmware: Path) -> ProbeRun:
    """Run the probe firmware under KVM with CPU model `cpu`, for at most :data:`KVM_PROBE_TIMEOUT_S` seconds."""
    argv = [
        QEMU, "-accel", "kvm", "-cpu", cpu, "-M", "pc", "-m", "16", "-bios", str(firmware),
        "-display", "none", "-nodefaults", "-no-user-config",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]  # fmt: skip
    try:
        probe = run(argv, KVM_PROBE_TIMEOUT_S, check=False)
    except CommandError as exc:
        if exc.exit_code is None:
            return ProbeRun(cpu, "slow")
        raise
    if probe.exit_code == _PROBE_EXIT:
        return ProbeRun(cpu, "ok")
    return ProbeRun(cpu, "failed", (probe.stderr.strip().splitlines() or [f"exit status {probe.exit_code}"])[0])


def _device_error() -> str | None:
    """Why /dev/kvm cannot be opened read-write, or None when it can."""
    try:
        fd = os.open(_KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return None


@functools.cache
def probe_kvm() -> KvmProbe:
    """Probe KVM once per process (hardware KVM answers in about 0.1 s; at most a few seconds otherwise).

    The probe runs :func:`kvm_probe_firmware` (32 million instructions) with each of :data:`KVM_CPU_MODELS`
    until QEMU starts; it is fast when it finishes within :data:`KVM_PROBE_TIMEOUT_S` seconds. Some sandboxes
    offer a /dev/kvm without hardware virtualisation underneath (e.g. the `kvm_pvm` module) that emulates an
    ordinary guest kernel instruction by instruction (about 2 million per second): QEMU starts, but a stock
    kernel does not boot in any useful time.
    """
    device_error = _device_error()
    if device_error is not None:
        return kvm_verdict(device_error, ())
    require_program(QEMU)
    with undo.temporary_folder("labkit-kvm-probe-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(kvm_probe_firmware())
        return kvm_verdict(None, (_run_probe(cpu, firmware) for cpu in KVM_CPU_MODELS))


def accelerator() -> str:
    """The accelerator to use: "kvm" if QEMU runs guest code with it at hardware speed, else "tcg"."""
    return probe_kvm().accelerator
