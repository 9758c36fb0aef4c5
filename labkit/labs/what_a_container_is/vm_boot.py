"""Section 5: a VM for comparison, booted under QEMU."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import measure, space, vm
from labkit.labs.what_a_container_is.declaration import DOCKER_SDK, FORK_EXEC
from labkit.labs.what_a_container_is.startup import StartupResult
from labkit.paths import cache_dir


@dataclass(frozen=True)
class VmBootResult:
    """`boots`: repeat, wall_s, marker_seen, timed_out, timeout_s, accelerator, kernel_release, kvm_probe.

    `wall_s` runs from QEMU's start until `/init` printed the marker: kernel and initramfs only, no services,
    so it is a lower bound of any real VM's boot. A boot that never printed it counts as at least its timeout.
    """

    boots: pd.DataFrame

    @property
    def accelerator(self) -> str:
        return str(self.boots["accelerator"].iloc[0])

    @property
    def emulated(self) -> bool:
        """Booted under TCG (software emulation), which makes a boot slower than a VM with KVM would be."""
        return self.accelerator != "kvm"

    @property
    def kvm_probe(self) -> str:
        return str(self.boots["kvm_probe"].iloc[0])

    @property
    def kernel_release(self) -> str:
        return str(self.boots["kernel_release"].iloc[0])

    @property
    def reached(self) -> int:
        return int(self.boots["marker_seen"].sum())

    @property
    def tried(self) -> int:
        return len(self.boots)

    @property
    def lower_bound_s(self) -> pd.Series:
        """Per boot, seconds it took at least: the time to the marker, or the timeout for a boot that timed out;
        NaN for a boot QEMU ended early without the marker (a failure says nothing of how long a boot takes)."""
        at_least = self.boots["wall_s"].where(self.boots["marker_seen"])
        return at_least.where(~self.boots["timed_out"].astype(bool), self.boots["timeout_s"])

    @property
    def median_s(self) -> float:
        """Median of :attr:`lower_bound_s` over the boots that reached the marker or timed out."""
        return float(self.lower_bound_s.median())

    def beside(self, startup: StartupResult) -> pd.DataFrame:
        """method, wall_s: the start-up samples with the VM boots (as lower bounds) as one more method."""
        boots = pd.DataFrame({"wall_s": self.lower_bound_s, "method": f"VM boot ({self.accelerator})"})
        return pd.concat([startup.samples[["method", "wall_s"]], boots], ignore_index=True)

    def conclusion(self, startup: StartupResult) -> str:
        how = "software emulation (TCG)" if self.emulated else "KVM (hardware virtualisation)"
        return (f"**What we measured.** Kernel {self.kernel_release} reached `/init` in a median of at least "
                f"**{self.median_s:.2f} s**; {self.reached} of {self.tried} boot(s) reached the marker, under {how} "
                f"— the KVM probe said: {self.kvm_probe}. That is {self.median_s / startup.median_s(DOCKER_SDK):.0f}× "
                f"a `docker run` and {self.median_s / startup.median_s(FORK_EXEC):.0f}× a fork/exec. It is a lower "
                "bound of a real VM's boot: only the kernel and a one-line `/init` ran, no init system and no "
                "services." + (" Under emulation every instruction is translated, so a VM with KVM would boot "
                               "faster than this." if self.emulated else ""))


def run_vm_boot(lab: LabSession, repeats: int = 3, memory_mib: int = 256, timeout_s: float = 300) -> VmBootResult:
    """Boot Debian's kernel with a busybox initramfs under QEMU until init prints a marker; wall time (s).

    Each VM gets `memory_mib` MiB and waits at most `timeout_s` seconds for the marker."""
    measure.validate_repeats(repeats)
    vm.validate_boot("tcg", memory_mib, timeout_s)
    if lab.live:  # one VM at a time; its guest may touch all of its memory
        space.require_memory({space.Size("memory_mib", memory_mib): 1})

    def experiment() -> pd.DataFrame:
        assets = vm.prepare_vm_assets(cache_dir() / "vm")
        accel = vm.accelerator()
        probe = vm.probe_kvm().detail
        rows = []
        for i in range(repeats):
            boot = vm.boot_once(assets, accel, memory_mib=memory_mib, timeout_s=timeout_s)
            rows.append({"repeat": i, "wall_s": boot.wall_s, "marker_seen": boot.marker_seen,
                         "timed_out": boot.timed_out, "timeout_s": timeout_s, "accelerator": boot.accelerator,
                         "kernel_release": boot.kernel_release, "kvm_probe": probe})
        return pd.DataFrame(rows)

    return VmBootResult(lab.measure("vm_boot", experiment, repeats=repeats, memory_mib=memory_mib,
                                    timeout_s=timeout_s))
