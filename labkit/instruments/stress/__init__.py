"""labkit's stress program (``stress.c``, notebook 07): built static on the host, bind-mounted read-only into a
container at :data:`IN_CONTAINER`, so any image — busybox, scratch — can run it.

Its modes (see the C source; ``stress wait <mode> …`` first waits for SIGUSR1): ``mem`` allocates and touches
memory in steps, ``child-mem`` does that in a child of PID 1, ``read`` reads a file, ``cpu`` runs busy threads
and reports work done, ``fork`` forks sleeping children and counts the failures. Every line it prints is
``<event> <CLOCK_MONOTONIC ns> <fields…>``; the parsers here turn a container's output into tables with a
``t_ns`` column, which :meth:`~labkit.instruments.sampler.CgroupSampler.at` puts on a sampler's time axis.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from labkit.errors import LabkitError
from labkit.instruments.shell import CommandError, require_program, run
from labkit.paths import cache_dir

__all__ = ["IN_CONTAINER", "SOURCE", "allocations", "build", "child_end", "fork_counts", "reads", "volume", "work",
           "writes"]

SOURCE = Path(__file__).with_name("stress.c")
IN_CONTAINER = "/labkit/stress"
WORK_UNIT = 100_000
"""Iterations of the xorshift loop in one unit of ``work`` (pure CPU: three shifts and three xors each)."""


def build() -> Path:
    """The static stress binary for this source, compiled once (``gcc -static -O2``) into labkit's cache."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache_dir() / "stress" / f"stress-{digest}"
    if binary.exists():
        return binary
    gcc = require_program("gcc")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.partial-{os.getpid()}")
    try:
        run([gcc, "-static", "-O2", "-pthread", "-o", str(partial), str(SOURCE)], 120)
    except CommandError as exc:
        raise LabkitError(f"compiling labkit's stress program failed: {exc.stderr.strip()[-400:]}",
                          "It needs gcc and the static C library: `apt-get install gcc libc6-dev`.") from exc
    partial.rename(binary)
    return binary


def volume(binary: Path) -> dict[str, dict[str, str]]:
    """SDK ``volumes=`` mounting `binary` read-only at :data:`IN_CONTAINER`."""
    return {str(binary): {"bind": IN_CONTAINER, "mode": "ro"}}


def _lines(output: str, event: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.split()[:1] == [event]]


def _fields(tokens: list[str]) -> dict[str, int]:
    return {key: int(value) for key, _, value in (t.partition("=") for t in tokens)}


def allocations(output: str) -> pd.DataFrame:
    """``mem`` output: one row per event — ``event`` (start; touch: a step begins, ``allocated_mib`` is what it
    will have touched; alloc: the step is touched; done; enomem), ``t_ns`` (CLOCK_MONOTONIC), ``allocated_mib``
    (MiB)."""
    rows = [{"event": event, "t_ns": int(f[0]), "allocated_mib": int(f[1])}
            for event in ("start", "touch", "alloc", "done", "enomem") for f in _lines(output, event)]
    return pd.DataFrame(rows, columns=["event", "t_ns", "allocated_mib"]).sort_values("t_ns", ignore_index=True)


def child_end(output: str) -> dict[str, int] | None:
    """``child-mem`` output: how PID 1's child ended — ``t_ns``, ``signal`` (0 if it exited), ``exit`` (-1 if
    signalled); None when PID 1 never reported it."""
    found = _lines(output, "child")
    return {"t_ns": int(found[-1][0]), **_fields(found[-1][1:])} if found else None


def reads(output: str) -> pd.DataFrame:
    """``read`` output: one row per pass — ``t_ns`` at its end, ``pass``, ``bytes`` read."""
    rows = [{"t_ns": int(f[0]), "pass": int(f[1]), "bytes": int(f[2])} for f in _lines(output, "read")]
    return pd.DataFrame(rows, columns=["t_ns", "pass", "bytes"])


def writes(output: str) -> pd.DataFrame:
    """``write`` output: ``t_ns`` and ``mib`` written so far (the first row: the start, 0), then the fsync's end
    as ``event`` "synced" (the others "wrote")."""
    rows = [{"t_ns": int(f[0]), "event": word, "mib": int(f[1])} for word in ("wrote", "synced")
            for f in _lines(output, word)]
    return pd.DataFrame(rows, columns=["t_ns", "event", "mib"]).sort_values("t_ns", ignore_index=True)


def work(output: str) -> pd.DataFrame:
    """``cpu`` output: ``t_ns`` and ``work_units`` done so far by all threads (one unit = :data:`WORK_UNIT`
    loop iterations); the first row is the start (0 units)."""
    rows = [{"t_ns": int(f[0]), "work_units": int(f[1])} for f in _lines(output, "work")]
    return pd.DataFrame(rows, columns=["t_ns", "work_units"])


def fork_counts(output: str) -> dict[str, int] | None:
    """``fork`` output: ``t_ns`` when the loop ended, ``ok`` children forked, ``eagain`` forks refused with
    EAGAIN (the pids limit), ``other`` failures; None before the loop has ended."""
    found = _lines(output, "fork")
    return {"t_ns": int(found[-1][0]), **_fields(found[-1][1:])} if found else None
