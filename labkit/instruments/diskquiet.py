"""Wait until the disk under a folder is quiet: its pending writes flushed and no request in flight.

Used by notebook 05 before its rounds of cold pulls. Removing an image deletes thousands of files; on a file system
mounted with ``discard`` (this host's ext4) the freed blocks are trimmed at the next journal commit, and writeback
of earlier work continues too, so a pull started right after a removal competes with that work for the disk.
:func:`settle` calls ``sync`` and then polls the block device's counters (``/sys/dev/block/<major>:<minor>/stat``,
read with :func:`parse_block_stat`) until nothing was written or discarded and nothing was in flight for `quiet_s`,
or `timeout_s` passed (another program may keep the disk busy: then it says so). Nothing happens at import.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import BadParameter

POLL_S = 0.1  # how often the counters are read while waiting
QUIET_S = 0.5  # how long the counters must stand still for the disk to count as quiet
SYS_DEV_BLOCK = Path("/sys/dev/block")


@dataclass(frozen=True)
class BlockStat:
    """The counters of one block device that show it working: sectors written, discard requests completed (0 on a
    kernel older than 4.18, which does not count them) and requests in flight."""

    written_sectors: int
    discards: int
    in_flight: int


def parse_block_stat(text: str) -> BlockStat:
    """Parse a block device's ``stat`` file (Documentation/block/stat.rst: field 7 sectors written, field 9
    requests in flight, field 12 discards completed)."""
    fields = text.split()
    if len(fields) < 11 or not all(f.isdigit() for f in fields):
        raise BadParameter(f"not a block device stat line: {text.strip()!r}", "Read it from /sys/block/<dev>/stat.")
    return BlockStat(int(fields[6]), int(fields[11]) if len(fields) > 11 else 0, int(fields[8]))


def stat_file(folder: Path, sys_dev_block: Path = SYS_DEV_BLOCK) -> Path | None:
    """The stat file of the block device holding `folder`, or None when it is on no block device (tmpfs, overlay)."""
    device = os.stat(folder).st_dev
    path = sys_dev_block / f"{os.major(device)}:{os.minor(device)}" / "stat"
    return path if path.exists() else None


@dataclass(frozen=True)
class Settled:
    """How long :func:`settle` waited (s, the sync included) and whether the disk went quiet within its limit
    (`quiet` is None when the folder is on no block device, so there was nothing to watch)."""

    waited_s: float
    quiet: bool | None


def settle(folder: Path, quiet_s: float = QUIET_S, timeout_s: float = 10.0) -> Settled:
    """``sync``, then wait until the disk under `folder` wrote and discarded nothing and had no request in flight for
    `quiet_s` seconds, at most `timeout_s` seconds in all."""
    if not 0 < quiet_s <= timeout_s:
        raise BadParameter(f"quiet_s={quiet_s!r}, timeout_s={timeout_s!r}: need 0 < quiet_s <= timeout_s.",
                           "E.g. quiet_s=0.5, timeout_s=10.")
    started = time.monotonic()
    os.sync()
    path = stat_file(folder)
    if path is None:
        return Settled(time.monotonic() - started, None)
    last, since = parse_block_stat(path.read_text()), time.monotonic()
    while time.monotonic() - started < timeout_s:
        time.sleep(POLL_S)  # polling the device's counters, not standing in for work
        now = parse_block_stat(path.read_text())
        if now.in_flight or (now.written_sectors, now.discards) != (last.written_sectors, last.discards):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return Settled(time.monotonic() - started, True)
    return Settled(time.monotonic() - started, False)
