"""The guest's initramfs: the host's static busybox and an `/init` that prints :data:`MARKER`, as a newc cpio archive.

The archive is written by :func:`write_newc` (no `cpio` program needed) from :func:`initramfs_entries`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import BadParameter
from labkit.instruments.elf import is_static_elf
from labkit.instruments.vm.kernel import VmAssetError

MARKER = "LABKIT-VM-READY"
"""The line /init prints once user space runs; it is followed by ``release=<uname -r>``."""

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "{MARKER} release=$(/bin/busybox uname -r)"
/bin/busybox poweroff -f
"""
"""The guest's /init: mounts proc and sysfs, prints the marker line, powers the VM off."""

BUSYBOX_HINT = "Install the static build: `apt-get install busybox-static` (package `busybox` is dynamic)."

_TRAILER = "TRAILER!!!"
_FILE_TYPE_BITS = 0o170000
_DIRECTORY = 0o040000


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc cpio archive; `mode` includes the file type bits (``0o100755``, ``0o040755``).

    `data` is the file content, or the link target for a symlink; `rdev` is (major, minor) for device nodes.
    """

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def write_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Return an uncompressed "newc" (SVR4, no CRC) cpio archive of `entries`, the kernel's initramfs format.

    Owners are root (uid/gid 0) and mtimes are 0, so the same entries always give the same bytes.
    Directories must come before their contents.
    """
    out = bytearray()
    all_entries = [*entries, CpioEntry(_TRAILER, 0)]
    for ino, entry in enumerate(all_entries, start=1):
        name = entry.name.lstrip("/").encode() + b"\0"
        is_trailer = entry.name == _TRAILER
        nlink = 2 if entry.mode & _FILE_TYPE_BITS == _DIRECTORY else 1
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


def initramfs_entries(busybox: Path) -> list[CpioEntry]:
    """The initramfs members: dirs, /dev/console, the static `busybox` as /bin/busybox (+ /bin/sh) and /init.

    Raises VmAssetError, hinting `apt-get install busybox-static`, when `busybox` is not a statically linked
    64-bit ELF program.
    """
    try:
        static = is_static_elf(busybox)
    except BadParameter as exc:
        raise VmAssetError(f"the initramfs needs a static busybox: {exc.message}", BUSYBOX_HINT) from exc
    if not static:
        raise VmAssetError(f"{busybox} is dynamically linked; the initramfs needs a static busybox", BUSYBOX_HINT)
    directory = 0o040755
    return [
        *(CpioEntry(d, directory) for d in ("bin", "dev", "proc", "sys", "tmp", "root")),
        CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        CpioEntry("dev/null", 0o020666, rdev=(1, 3)),
        CpioEntry("bin/busybox", 0o100755, busybox.read_bytes()),
        CpioEntry("bin/sh", 0o120777, b"busybox"),
        CpioEntry("init", 0o100755, INIT_SCRIPT.encode()),
    ]
