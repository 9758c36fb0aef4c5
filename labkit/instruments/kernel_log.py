"""OOM kills in the kernel log (notebook 07): was a kill confined to a memory cgroup, or host-wide?

The OOM killer prints one ``Killed process <pid> (<name>)`` line per victim, prefixed ``Memory cgroup out of
memory:`` when a cgroup's limit was hit and ``Out of memory:`` when the whole host ran out (mm/oom_kill.c).
:func:`read` takes the log with ``dmesg`` (root, or ``kernel.dmesg_restrict=0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from labkit.errors import LabkitError
from labkit.instruments.shell import CommandError, require_program, run

__all__ = ["OomKill", "parse_oom_kills", "read"]

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
