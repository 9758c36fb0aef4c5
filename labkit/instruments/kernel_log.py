"""OOM kills in the kernel log (notebook 07): was a kill confined to a memory cgroup, or host-wide?

The OOM killer prints one ``Killed process <pid> (<name>)`` line per victim, prefixed ``Memory cgroup out of
memory:`` when a cgroup's limit was hit and ``Out of memory:`` when the whole host ran out (mm/oom_kill.c).
:func:`read` takes the log with ``dmesg`` (root, or ``kernel.dmesg_restrict=0``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Literal

from labkit.errors import LabkitError
from labkit.instruments.shell import CommandError, require_program, run

__all__ = ["ClockOffset", "OomKill", "measure_clock_offset", "parse_kmsg_record", "parse_oom_kills", "read"]

KMSG = "/dev/kmsg"
MARKERS_AT_MOST = 5  # the kernel rate-limits writes to /dev/kmsg (printk_devkmsg=ratelimit: 10 per 5 s)

_KILLED = re.compile(r"^\[\s*(?P<at>\d+\.\d+)\]\s+(?P<scope>Memory cgroup out of memory|Out of memory): "
                     r"Kill(?:ed)? process (?P<pid>\d+) \((?P<name>[^)]*)\)")


@dataclass(frozen=True)
class OomKill:
    """One OOM kill: ``scope`` "memcg" (a cgroup's limit) or "global" (the host), the victim's ``pid`` and
    ``name``, and ``at_s``, seconds since boot when the kernel logged it."""

    scope: Literal["memcg", "global"]
    pid: int
    name: str
    at_s: float


def parse_oom_kills(text: str) -> list[OomKill]:
    """Every OOM kill in the text of ``dmesg`` (lines with a ``[seconds]`` stamp), oldest first."""
    kills = []
    for line in text.splitlines():
        found = _KILLED.match(line.strip())
        if found:
            scope: Literal["memcg", "global"] = "memcg" if found["scope"].startswith("Memory cgroup") else "global"
            kills.append(OomKill(scope, int(found["pid"]), found["name"], float(found["at"])))
    return kills


def read() -> str:
    """The kernel log as ``dmesg`` prints it; LabkitError saying how to allow it when it cannot be read."""
    try:
        return run([require_program("dmesg"), "--kernel"], 30).stdout
    except CommandError as exc:
        raise LabkitError(f"the kernel log cannot be read: {exc.stderr.strip() or exc}",
                          "Run as root, or allow it with `sysctl kernel.dmesg_restrict=0`.") from exc


@dataclass(frozen=True)
class ClockOffset:
    """How far the kernel log's clock (local_clock, from sched_clock) runs ahead of CLOCK_MONOTONIC:
    ``offset_s`` (log stamp − monotonic time of the same instant, s) give or take ``uncertainty_s`` (half the
    time the marker's write took, s; the log's own stamps have 1 µs resolution)."""

    offset_s: float
    uncertainty_s: float


def parse_kmsg_record(record: str) -> tuple[int, str]:
    """One /dev/kmsg record ``<prio>,<seq>,<usec>,<flags>[,…];<text>`` → (its stamp in µs, its text)."""
    head, _, text = record.partition(";")
    fields = head.split(",")
    if len(fields) < 4 or not fields[2].isdigit():
        raise ValueError(f"not a /dev/kmsg record: {record[:80]!r}")
    return int(fields[2]), text.splitlines()[0] if text else ""


def measure_clock_offset(marker: str, repeats: int = 3, timeout_s: float = 5.0) -> ClockOffset:
    """Write `marker` (plus a number) to the kernel log `repeats` times between two CLOCK_MONOTONIC readings and
    read each back with its log stamp; the offset of the tightest write. Needs root; LabkitError otherwise."""
    if not 1 <= repeats <= MARKERS_AT_MOST:
        raise ValueError(f"repeats={repeats}: 1 to {MARKERS_AT_MOST} (the kernel rate-limits /dev/kmsg writes)")
    try:
        reader = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise LabkitError(f"the kernel log cannot be read from {KMSG}: {exc.strerror}",
                          "Run as root, or allow it with `sysctl kernel.dmesg_restrict=0`.") from exc
    try:
        os.lseek(reader, 0, os.SEEK_END)  # only records written from now on
        best: ClockOffset | None = None
        for index in range(repeats):
            text = f"{marker} {os.getpid()}.{index}"
            with open(KMSG, "w") as writer:  # one write is one record
                before_ns = time.monotonic_ns()
                writer.write(text + "\n")
                writer.flush()
                after_ns = time.monotonic_ns()
            stamp_us = _read_back(reader, text, timeout_s)
            found = ClockOffset((stamp_us * 1000 - (before_ns + after_ns) / 2) / 1e9, (after_ns - before_ns) / 2e9)
            if best is None or found.uncertainty_s < best.uncertainty_s:
                best = found
        assert best is not None
        return best
    finally:
        os.close(reader)


def _read_back(reader: int, text: str, timeout_s: float) -> int:
    """The stamp (µs) of the record whose text is `text`, read from `reader` within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stamp_us, found = parse_kmsg_record(os.read(reader, 8192).decode(errors="replace"))
        except BlockingIOError:
            time.sleep(0.001)  # waiting for the kernel to publish the record
            continue
        except BrokenPipeError:  # records were overwritten before we read them: go on from the oldest kept
            continue
        if found == text:
            return stamp_us
    raise LabkitError(f"the marker {text!r} written to {KMSG} did not come back within {timeout_s:.0f} s",
                      "The kernel may be dropping /dev/kmsg writes (sysctl kernel.printk_devkmsg); set it to on.")
