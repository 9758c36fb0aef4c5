"""Read an ELF file's headers: whether a program is statically linked.

Used by :mod:`labkit.instruments.vm` (its initramfs needs a static busybox) for notebook 01. Reads only the ELF
header and the program header table (a few hundred bytes); never runs the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

from labkit.errors import BadParameter

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ELF64_HEADER_BYTES = 64
_ELF64_PROGRAM_HEADER_BYTES = 56
_PT_INTERP = 3
"""Program header type of the segment naming the dynamic loader (e.g. /lib64/ld-linux-x86-64.so.2)."""


def is_static_elf(path: Path) -> bool:
    """Whether `path`, a 64-bit little-endian ELF file, has no program interpreter (is statically linked).

    Raises :class:`~labkit.errors.BadParameter` when the file is not such an ELF file (a script, a 32-bit or
    big-endian binary, a truncated file).
    """
    with path.open("rb") as f:
        header = f.read(_ELF64_HEADER_BYTES)
        if (
            len(header) < _ELF64_HEADER_BYTES
            or header[:4] != _ELF_MAGIC
            or header[4] != _ELFCLASS64
            or header[5] != _ELFDATA2LSB
        ):
            raise BadParameter(f"{path} is not a 64-bit little-endian ELF file")
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    if (phnum and phentsize < _ELF64_PROGRAM_HEADER_BYTES) or len(table) < phentsize * phnum:
        raise BadParameter(f"{path}: malformed or truncated ELF program header table")
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum))
