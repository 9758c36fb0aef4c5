"""The host's CPU architecture and binfmt_misc: which foreign executables the kernel hands to which emulator.

A binary built for another architecture runs only if binfmt_misc is mounted and an entry whose magic matches
its ELF header names an interpreter (Debian's qemu-user-static registers ``qemu-aarch64`` on amd64 hosts and
``qemu-x86_64`` on arm64 hosts). Without one, ``execve`` fails with ENOEXEC: "exec format error".

Parsers are pure and tested on recorded fixtures (``tests/fixtures/arch/``); readers take the binfmt_misc
folder and the machine name as parameters so that an arm64 host's entries can be read on an amd64 one.
Used by notebook 11 and by ``labkit doctor``. Nothing happens at import.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from labkit.errors import BadParameter, HostUnsupported, NeedsRoot
from labkit.instruments import undo
from labkit.instruments.checks import Check
from labkit.instruments.shell import run

log = logging.getLogger("labkit.arch")

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
AMD64 = "linux/amd64"
ARM64 = "linux/arm64"
PLATFORMS = (AMD64, ARM64)
# `uname -m` → the OCI platform the engine records for images of that machine.
PLATFORM_OF_MACHINE = {"x86_64": AMD64, "amd64": AMD64, "aarch64": ARM64, "arm64": ARM64}
# The binfmt_misc entry Debian's qemu-user-static registers for executables of each platform.
ENTRY_OF_PLATFORM = {AMD64: "qemu-x86_64", ARM64: "qemu-aarch64"}
# The name Debian's package architecture and `uname -m` give each platform.
DEBIAN_ARCH = {AMD64: "amd64", ARM64: "arm64"}
UNAME_MACHINE = {AMD64: "x86_64", ARM64: "aarch64"}
EMULATOR_PACKAGES = ("qemu-user-static", "binfmt-support")


def validate_platform(platform: str) -> str:
    """`platform` if labkit knows it; BadParameter naming the known platforms otherwise."""
    if platform not in PLATFORMS:
        raise BadParameter(f"platform={platform!r} is not a platform labkit can build or run.",
                           f"Choose one of {list(PLATFORMS)}.")
    return platform


def host_platform(machine: str | None = None) -> str:
    """The OCI platform of this host (or of a host whose `uname -m` is `machine`), e.g. ``linux/amd64``."""
    machine = machine or os.uname().machine
    if machine not in PLATFORM_OF_MACHINE:
        raise HostUnsupported(f"this host's machine is {machine!r}; labkit compares {list(PLATFORMS)} only.",
                              "Run notebook 11 on an x86_64 or an aarch64 host (or replay its results).")
    return PLATFORM_OF_MACHINE[machine]


def foreign_platform(machine: str | None = None) -> str:
    """The platform this host has to emulate: arm64 on an amd64 host, amd64 on an arm64 host."""
    native = host_platform(machine)
    return next(p for p in PLATFORMS if p != native)


def emulator_entry(machine: str | None = None) -> str:
    """The binfmt_misc entry that runs the foreign platform's executables here (``qemu-aarch64`` on amd64).

    An unknown machine gets the amd64 host's answer: doctor reports the machine itself as unsupported."""
    known = machine or os.uname().machine
    return ENTRY_OF_PLATFORM[foreign_platform(known if known in PLATFORM_OF_MACHINE else "x86_64")]


# ---------------------------------------------------------------- parsing binfmt_misc


@dataclass(frozen=True)
class BinfmtEntry:
    """One registered binfmt_misc entry: ``/proc/sys/fs/binfmt_misc/<name>``.

    `flags` are the kernel's letters: F (fix-binary: the interpreter is opened once at registration, so it
    works inside containers and chroots that lack it), P (preserve argv[0]), O (open-binary), C (credentials).
    `magic` and `mask` are hex strings (empty for an extension entry).
    """

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: str
    mask: str

    @property
    def fix_binary(self) -> bool:
        return "F" in self.flags

    @property
    def elf_machine(self) -> int | None:
        """The ELF e_machine this entry matches (bytes 18–19 of the header, little-endian), if it is an ELF magic."""
        raw = bytes.fromhex(self.magic) if self.magic else b""
        if self.offset != 0 or len(raw) < 20 or raw[:4] != b"\x7fELF":
            return None
        return int.from_bytes(raw[18:20], "little")


def parse_entry(name: str, text: str) -> BinfmtEntry:
    """An entry from the text of its binfmt_misc file (first line ``enabled``/``disabled``, then key value lines)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() not in ("enabled", "disabled"):
        raise ValueError(f"binfmt_misc entry {name!r} does not start with enabled/disabled: {text[:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return BinfmtEntry(name=name, enabled=lines[0].strip() == "enabled", interpreter=fields.get("interpreter", ""),
                       flags=fields.get("flags", ""), offset=int(fields.get("offset", "0")),
                       magic=fields.get("magic", fields.get("extension", "")), mask=fields.get("mask", ""))


@dataclass(frozen=True)
class BinfmtState:
    """binfmt_misc as one host sees it: mounted, globally enabled (its ``status`` file), and the entries."""

    mounted: bool
    enabled: bool
    entries: dict[str, BinfmtEntry] = field(default_factory=dict)

    def entry(self, name: str) -> BinfmtEntry | None:
        return self.entries.get(name)

    def runs(self, name: str) -> bool:
        """Whether executables matching entry `name` run through its interpreter now."""
        found = self.entries.get(name)
        return self.mounted and self.enabled and found is not None and found.enabled


NOT_ENTRIES = ("register", "status")


def read_binfmt(root: Path = BINFMT_MISC) -> BinfmtState:
    """binfmt_misc under `root` (the real mount, or a recorded fixture folder)."""
    status = root / "status"
    if not status.exists():
        return BinfmtState(mounted=False, enabled=False)
    entries = {path.name: parse_entry(path.name, path.read_text())
               for path in sorted(root.iterdir()) if path.name not in NOT_ENTRIES and path.is_file()}
    return BinfmtState(mounted=True, enabled=status.read_text().strip() == "enabled", entries=entries)


# ---------------------------------------------------------------- what is missing, and the fix


def check_emulation(platform: str, root: Path = BINFMT_MISC, machine: str | None = None) -> Check:
    """Can this host run `platform`'s executables (the check's name)? Native ones always; foreign ones through an
    enabled entry. The detail says how (native, or which entry), the fix what to run when they cannot."""
    validate_platform(platform)
    if host_platform(machine) == platform:
        return Check(platform, True, f"native ({UNAME_MACHINE[platform]})")
    name = ENTRY_OF_PLATFORM[platform]
    state = read_binfmt(root)
    install = f"apt-get install {' '.join(EMULATOR_PACKAGES)}"
    if not state.mounted:
        return Check(platform, False, f"binfmt_misc is not mounted at {root}",
                              f"mount -t binfmt_misc binfmt_misc {root} && update-binfmts --enable {name} "
                              f"(needs {install}; `labkit setup 11` does all three)")
    if not state.enabled:
        return Check(platform, False, "binfmt_misc is mounted but disabled as a whole",
                              f"echo 1 > {root / 'status'}")
    entry = state.entry(name)
    if entry is None:
        return Check(platform, False, f"no {name} entry is registered",
                              f"{install} && update-binfmts --enable {name}")
    if not entry.enabled:
        return Check(platform, False, f"{name} is registered but disabled",
                              f"update-binfmts --enable {name}   (or: echo 1 > {root / name})")
    return Check(platform, True, f"emulated by {entry.interpreter} (flags {entry.flags or 'none'}"
                          f"{'; fix-binary: works in containers' if entry.fix_binary else ''})")


# ---------------------------------------------------------------- changing binfmt_misc (root)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NeedsRoot(f"{what} needs root (this is uid {os.geteuid()}).", "Run it as root, e.g. `sudo make lab`.")


def enable_emulation(platform: str, root: Path = BINFMT_MISC) -> Check:
    """Make `platform`'s executables run here: mount binfmt_misc and enable its qemu entry (needs the packages)."""
    check = check_emulation(platform, root)
    if check.ok:
        return check
    _require_root("enabling binfmt_misc emulation")
    name = ENTRY_OF_PLATFORM[platform]
    if not read_binfmt(root).mounted:
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], 30)
    if not read_binfmt(root).enabled:
        (root / "status").write_text("1")
    entry = read_binfmt(root).entry(name)
    if entry is None:
        run(["update-binfmts", "--enable", name], 60,
            hint=f"Install the emulators: `apt-get install {' '.join(EMULATOR_PACKAGES)}` (or `labkit setup 11`).")
    elif not entry.enabled:
        _write_entry(root, name, enabled=True)
    return check_emulation(platform, root)


def _write_entry(root: Path, name: str, *, enabled: bool) -> None:
    # The kernel takes "1" / "0" written to an entry's file as enable / disable.
    (root / name).write_text("1" if enabled else "0")


class TerminatedWhileDisabled(BaseException):
    """SIGTERM arrived while a binfmt entry was disabled; raised so that the restore in ``finally`` runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise TerminatedWhileDisabled(f"signal {signum}")


def restore_entry(detail: dict[str, Any]) -> None:
    """Put binfmt_misc entry ``detail["name"]`` under ``detail["root"]`` back to ``detail["enabled"]`` (the undo
    journal's call for an :func:`entry_disabled` whose process died); nothing to do when it is not registered."""
    root = Path(detail["root"])
    entry = read_binfmt(root).entry(detail["name"])
    if entry is not None and entry.enabled != detail["enabled"]:
        _write_entry(root, detail["name"], enabled=bool(detail["enabled"]))
        log.warning("binfmt entry %s restored (%s) after its process died", detail["name"],
                    "enabled" if detail["enabled"] else "disabled")


@contextmanager
def entry_disabled(name: str, root: Path = BINFMT_MISC) -> Iterator[BinfmtEntry]:
    """Disable binfmt_misc entry `name` for the block and restore its previous state afterwards, whatever happens.

    The restore runs on normal exit, on an exception, on Ctrl-C (KeyboardInterrupt) and on SIGTERM (turned into
    :class:`TerminatedWhileDisabled` for the duration, when called from the main thread; the previous handler comes
    back after).
    SIGKILL skips it, so the change is journalled first (:mod:`labkit.instruments.undo`): the next labkit command,
    or pytest's next session, enables the entry again.
    """
    state = read_binfmt(root)
    entry = state.entry(name)
    if not state.mounted or entry is None:
        raise HostUnsupported(f"binfmt_misc entry {name!r} is not registered (mounted: {state.mounted}).",
                              f"`labkit setup 11` mounts binfmt_misc and enables {name}.")
    _require_root(f"disabling the binfmt_misc entry {name}")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    pending: list[int] = []  # a SIGTERM to deliver again, to the previous handler, once the entry is restored
    try:
        with undo.recorded(f"binfmt_misc entry {name} disabled", restore_entry,
                           {"root": str(root), "name": name, "enabled": entry.enabled}):
            try:
                _write_entry(root, name, enabled=False)
                log.info("binfmt entry %s disabled", name)
                yield entry
            except TerminatedWhileDisabled:
                pending.append(signal.SIGTERM)
                raise
            finally:
                if main:  # a SIGTERM during the restore itself waits until the entry is written
                    signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
                _write_entry(root, name, enabled=entry.enabled)
                log.info("binfmt entry %s restored (%s)", name, "enabled" if entry.enabled else "disabled")
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            if pending:
                os.kill(os.getpid(), signal.SIGTERM)


def require_emulation(root: Path = BINFMT_MISC) -> None:
    """HostUnsupported with the fix unless the foreign platform's binaries run here (binfmt_misc under `root`)."""
    check = check_emulation(foreign_platform(), root)
    if not check.ok:
        raise HostUnsupported(f"{check.name} binaries cannot run here: {check.detail}.", f"Fix: {check.fix}")
