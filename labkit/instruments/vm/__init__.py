"""Boot a real Debian kernel under QEMU and time it: the "a VM boots in minutes" instrument.

Used by notebook 01 (what a container is), start-up comparison: fork/exec vs container vs a VM boot.

The guest is the kernel Debian ships (:mod:`.kernel`: the package `linux-image-amd64` depends on, fetched with
`apt-get download` and unpacked with `dpkg -x`, never installed on the host) plus a tiny initramfs
(:mod:`.initramfs`: the host's static busybox and an `/init` script that mounts /proc, prints :data:`MARKER` on
the serial console and powers off). :mod:`.kvm` decides whether KVM is worth using here; :mod:`.boot` runs QEMU
and times a boot from just before QEMU starts until the marker line arrives on the serial console.

Nothing happens at import. Files are written only under the `cache_dir` given to :func:`prepare_vm_assets`.
"""

from __future__ import annotations

from pathlib import Path

from labkit.instruments.shell import require_program
from labkit.instruments.vm.boot import (
    ACCELERATORS,
    KERNEL_CMDLINE,
    MIN_MEMORY_MIB,
    BootResult,
    boot_once,
    qemu_argv,
    validate_boot,
)
from labkit.instruments.vm.initramfs import (
    BUSYBOX_HINT,
    INIT_SCRIPT,
    MARKER,
    CpioEntry,
    initramfs_entries,
    write_newc,
)
from labkit.instruments.vm.kernel import (
    KERNEL_METAPACKAGE,
    VmAssetError,
    VmAssets,
    _write_if_changed,
    ensure_kernel,
    kernel_package_from_depends,
)
from labkit.instruments.vm.kvm import (
    KVM_CPU_MODELS,
    KVM_PROBE_TIMEOUT_S,
    QEMU,
    KvmProbe,
    ProbeRun,
    accelerator,
    kvm_probe_firmware,
    kvm_verdict,
    probe_kvm,
)

__all__ = [
    "ACCELERATORS",
    "BUSYBOX_HINT",
    "INIT_SCRIPT",
    "KERNEL_CMDLINE",
    "KERNEL_METAPACKAGE",
    "KVM_CPU_MODELS",
    "KVM_PROBE_TIMEOUT_S",
    "MARKER",
    "MIN_MEMORY_MIB",
    "QEMU",
    "BootResult",
    "CpioEntry",
    "KvmProbe",
    "ProbeRun",
    "VmAssetError",
    "VmAssets",
    "accelerator",
    "boot_once",
    "ensure_kernel",
    "initramfs_entries",
    "kernel_package_from_depends",
    "kvm_probe_firmware",
    "kvm_verdict",
    "prepare_vm_assets",
    "probe_kvm",
    "qemu_argv",
    "validate_boot",
    "write_newc",
]


def prepare_vm_assets(cache_dir: Path) -> VmAssets:
    """Make sure `cache_dir` holds a Debian kernel and a busybox initramfs, and return their paths.

    The first call downloads the kernel package (about 70 MB) with `apt-get download` and keeps only its
    ``boot/vmlinuz-*`` (about 8 MB) plus ``kernel.json`` (package, version, release, .deb size in bytes,
    download time in seconds). Later calls reuse that kernel and do not touch apt: delete `cache_dir` to fetch
    a newer one. The initramfs (``initramfs.cpio``, about 2 MB) is rebuilt from the host's static busybox and
    rewritten only when its bytes changed. Raises VmAssetError (with what to do) when busybox is not static.
    """
    busybox = Path(require_program("busybox"))
    entries = initramfs_entries(busybox)  # fails before any download when busybox is not static
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    info = ensure_kernel(cache_dir)
    initramfs = cache_dir / "initramfs.cpio"
    _write_if_changed(initramfs, write_newc(entries))
    return VmAssets(
        kernel=cache_dir / str(info["kernel"]),
        initramfs=initramfs,
        kernel_package=str(info["package"]),
        kernel_release=str(info["release"]),
    )
