"""What kind of machine the numbers come from: bare metal or a virtual machine, and what that hides.

A host that is itself a VM (this project's CI is a Firecracker microVM) shapes what a notebook can show: its
PID 1 may not expose /proc/1/ns, /dev/kvm may be nested and slow, and root's capability bounding set may be
smaller than the kernel's full list. :func:`facts` reads each of these from the kernel so the banner and the
fingerprint can say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.instruments import procfs

# Modules that provide /dev/kvm; kvm_pvm is the nested "pagetable virtual machine" used inside some microVMs.
KVM_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")


@dataclass(frozen=True)
class HostFacts:
    """`virtualised`: the CPU reports a hypervisor (the x86 ``hypervisor`` flag in /proc/cpuinfo);
    `pid1_ns_readable`: /proc/1/ns/* can be read (false when PID 1 hides them, so labs compare namespaces with
    their own process instead); `kvm_modules`: which KVM modules are loaded (``kvm_pvm`` = nested);
    `bounding_capabilities`: how many capabilities root's bounding set holds here."""

    virtualised: bool
    pid1_ns_readable: bool
    kvm_modules: tuple[str, ...]
    bounding_capabilities: int

    @property
    def nested_kvm(self) -> bool:
        return "kvm_pvm" in self.kvm_modules

    def describe(self) -> str:
        """One sentence for the banner."""
        parts = ["a virtual machine (the CPU reports a hypervisor)" if self.virtualised else "not virtualised"]
        if not self.pid1_ns_readable:
            parts.append("its PID 1 does not expose /proc/1/ns, so namespaces are compared with this process's")
        if self.nested_kvm:
            parts.append("/dev/kvm is nested (kvm_pvm)")
        parts.append(f"root's bounding set holds {self.bounding_capabilities} capabilities")
        return "; ".join(parts)

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "kvm_modules": list(self.kvm_modules)}


def facts(proc_root: Path = procfs.PROC, sys_root: Path = Path("/sys")) -> HostFacts:
    """Read :class:`HostFacts` from ``proc_root`` and ``sys_root`` (the live /proc and /sys by default)."""
    flags = procfs.parse_cpu_flags(_read(proc_root / "cpuinfo"))
    try:
        procfs.namespaces(1, proc_root)
        pid1_readable = True
    except (OSError, LookupError, ValueError):
        pid1_readable = False
    return HostFacts(
        virtualised="hypervisor" in flags,
        pid1_ns_readable=pid1_readable,
        kvm_modules=tuple(m for m in KVM_MODULES if (sys_root / "module" / m).is_dir()),
        bounding_capabilities=len(procfs.read_status("self", proc_root).bounding),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
