"""A loop device over a file labkit makes, for experiments that need a block device of their own (notebook 07's
IO limits). Journalled with :mod:`labkit.instruments.undo` before it is made, so that even a SIGKILLed maker's
device is detached, and its file removed, by the next labkit command."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.instruments import undo
from labkit.instruments.shell import require_program, run

__all__ = ["LoopDevice", "attached", "detach"]


class LoopDevice:
    """`path` (/dev/loopN), its `major`:`minor` numbers, and the `backing` file it shows."""

    def __init__(self, path: str, backing: Path) -> None:
        self.path = path
        self.backing = backing
        rdev = os.stat(path).st_rdev
        self.major, self.minor = os.major(rdev), os.minor(rdev)


def detach(detail: dict[str, Any]) -> None:
    """Detach every loop device over ``detail["backing"]`` and remove that file (idempotent)."""
    backing = Path(detail["backing"])
    if backing.exists():
        listed = run([require_program("losetup"), "--associated", str(backing), "--noheadings", "--output", "NAME"],
                     30).stdout
        for device in listed.split():
            run([require_program("losetup"), "--detach", device], 30, check=False)
    backing.unlink(missing_ok=True)


@contextlib.contextmanager
def attached(backing: Path, size_mib: int) -> Iterator[LoopDevice]:
    """A loop device over a new sparse file of `size_mib` MiB at `backing`; detached and the file removed when
    the block ends (journalled first: a killed process's device goes at the next labkit command)."""
    detail = {"backing": str(backing)}
    with undo.recorded(f"loop device over {backing}", detach, detail):
        backing.parent.mkdir(parents=True, exist_ok=True)
        with open(backing, "wb") as f:
            f.truncate(size_mib * 2**20)
        device = run([require_program("losetup"), "--find", "--show", str(backing)], 30).stdout.strip()
        try:
            yield LoopDevice(device, backing)
        finally:
            detach(detail)
