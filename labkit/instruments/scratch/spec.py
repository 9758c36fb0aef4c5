"""What a scratch container is asked to be: a frozen :class:`ScratchSpec`, checked before anything starts."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import BadParameter
from labkit.instruments.limits import MIB, Limits

DEFAULT_LIMITS = Limits(memory_bytes=256 * MIB, pids=64, cpus=1.0)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")
_UMOUNT_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")


@dataclass(frozen=True)
class ScratchSpec:
    """A command to run in a container from scratch and how.

    ``rootfs``: a directory holding a root filesystem with ``/bin/sh``, an empty ``/proc`` directory and
    ``umount`` (made absolute); ``argv``: the command; ``run_id`` and ``name`` make the cgroup
    ``labkit/<run_id>/<name>``; ``hostname`` is set in the new UTS namespace; ``limits`` (memory, pids, CPU)
    are applied to that cgroup; ``start_timeout_s`` bounds the wait for PID 1 to reach the command. Every
    field is checked in ``__post_init__`` (BadParameter naming the field).
    """

    rootfs: Path
    argv: Sequence[str]
    run_id: str
    name: str
    hostname: str = "scratch"
    limits: Limits = DEFAULT_LIMITS
    start_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.rootfs, str | os.PathLike):
            raise BadParameter(f"rootfs={self.rootfs!r}: not a path.", "Give the directory of a root filesystem.")
        rootfs = Path(self.rootfs).resolve()
        object.__setattr__(self, "rootfs", rootfs)
        _check_rootfs(rootfs)
        argv = self.argv
        if isinstance(argv, str | bytes) or not isinstance(argv, Sequence) or not argv \
                or not all(isinstance(a, str | os.PathLike) for a in argv) or not str(argv[0]):
            raise BadParameter(f"argv={argv!r}: not a command line.", "Give a non-empty list of strings, e.g. "
                               "['sleep', '30'].")
        object.__setattr__(self, "argv", tuple(str(a) for a in argv))
        for param, value in (("run_id", self.run_id), ("name", self.name)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise BadParameter(f"{param}={value!r}: not usable in a cgroup path.",
                                   "Give 1-63 letters, digits, _ . - (first a letter or digit).")
        if not isinstance(self.hostname, str) or not _HOSTNAME.match(self.hostname) or len(self.hostname) > 64:
            raise BadParameter(f"hostname={self.hostname!r}: not a host name.",
                               "Give at most 64 characters: letters, digits, - and . between labels.")
        if not isinstance(self.limits, Limits):
            raise BadParameter(f"limits={self.limits!r}: a scratch container always runs under limits.",
                               "Pass Limits.of(memory_mib=…, pids=…, cpus=…).")
        timeout = self.start_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) \
                or not timeout > 0:
            raise BadParameter(f"start_timeout_s={timeout!r}: not a time.", "Give a number of seconds > 0.")

    @property
    def relpath(self) -> str:
        """The container's cgroup below each hierarchy."""
        return f"labkit/{self.run_id}/{self.name}"


def _check_rootfs(rootfs: Path) -> None:
    if not rootfs.is_dir():
        raise BadParameter(f"rootfs={str(rootfs)!r}: no such directory.",
                           "Give an existing directory holding a root filesystem.")
    if rootfs == Path("/"):
        raise BadParameter("rootfs='/': that is the host's root.", "Give a directory other than /.")
    if not os.path.lexists(rootfs / "bin/sh"):
        raise BadParameter(f"rootfs={str(rootfs)!r}: it has no bin/sh.", "Give a rootfs with a shell.")
    if not (rootfs / "proc").is_dir():
        raise BadParameter(f"rootfs={str(rootfs)!r}: it has no proc directory to mount /proc on.",
                           "mkdir <rootfs>/proc.")
    if not any(os.path.lexists(rootfs / d / "umount") for d in _UMOUNT_DIRS):
        raise BadParameter(f"rootfs={str(rootfs)!r}: it has no umount (in bin, sbin, usr/bin or usr/sbin).",
                           "After pivot_root only the rootfs's own programs are reachable, and one must detach "
                           "the old root: add umount (busybox and Debian minbase have it).")
