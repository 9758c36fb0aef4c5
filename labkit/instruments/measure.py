"""Timing with warm-up, interleaved comparisons, distribution-free summaries, and the fingerprint of the machine
a number came from."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import pandas as pd

import labkit
from labkit.errors import BadParameter


def validate_repeats(repeats: int, warmup: int = 0, *, minimum: int = 1, names: tuple[str, str] = ("repeats",
                     "warmup")) -> None:
    """BadParameter naming the parameter (as the caller calls it) when `repeats` < `minimum` or `warmup` < 0."""
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < minimum:
        raise BadParameter(f"{names[0]}={repeats!r}: need a whole number >= {minimum}.",
                           f"E.g. {names[0]}=5 (quick) or 30 (full).")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise BadParameter(f"{names[1]}={warmup!r}: need a whole number >= 0.", f"E.g. {names[1]}=1.")


def time_calls(action: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Call `action` `warmup` times untimed, then `repeats` times; return each wall time in seconds."""
    validate_repeats(repeats, warmup)
    for _ in range(warmup):
        action()
    return [_timed(action) for _ in range(repeats)]


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    action()
    return (time.perf_counter_ns() - started) / 1e9


def poll_until(condition: Callable[[], bool], limit_s: float, poll_s: float = 0.1) -> float:
    """Look at `condition` every `poll_s` s until it holds; the seconds that took (a wait's resolution is one
    `poll_s` plus one look), NaN when it did not hold within `limit_s`."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if condition():
            return time.perf_counter() - started
        time.sleep(poll_s)  # polling an engine or a program, bounded by limit_s
    return float("nan")


T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
def run_together(first: Callable[[], A], second: Callable[[], B], /) -> tuple[A, B]: ...
@overload
def run_together(first: Callable[[], A], second: Callable[[], B], third: Callable[[], C], /) -> tuple[A, B, C]: ...
@overload
def run_together(*calls: Callable[[], T]) -> tuple[T, ...]: ...
def run_together(*calls: Callable[[], Any]) -> tuple[Any, ...]:
    """Call every one of `calls` at once (one thread each) and return their results in order. For waits that
    need not follow one another (stacks coming up, watches of what should not happen), never around a timing that
    another call could slow (timed calls that mostly wait are staggered, and the caller shows how near they came).
    Returns only when every call has ended, also on an error (the first is raised) or an interrupt, so that what
    they made exists before the caller's cleanup looks for it."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls)), thread_name_prefix="labkit-together") as pool:
        futures = [pool.submit(call) for call in calls]
        return tuple(future.result() for future in futures)


def wait_until(condition: Callable[[], bool], what: str, limit_s: float, poll_s: float = 0.1) -> float:
    """:func:`poll_until` for a state the run needs: TimeoutError naming `what` when it is not reached."""
    took = poll_until(condition, limit_s, poll_s)
    if math.isnan(took):
        raise TimeoutError(f"{what}: not reached within {limit_s:.0f} s")
    return took


def compare(methods: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> pd.DataFrame:
    """Time several ways of doing the same thing, interleaved so that drift on the machine hits all alike.

    First `warmup` untimed rounds, then `repeats` timed rounds; every round calls each method once, in an order
    rotated by one place per round (round r starts with method r mod k), so no method always runs first or
    always follows the same neighbour. Returns one row per call: method, repeat, position (its place in the
    round, 0-based), wall_s (seconds, ``perf_counter_ns``).
    """
    validate_repeats(repeats, warmup)
    if not methods:
        raise BadParameter("methods is empty: nothing to compare.", "Pass at least one named callable.")
    names = list(methods)
    for round_index in range(warmup):
        for name in _rotated(names, round_index):
            methods[name]()
    rows = []
    for repeat in range(repeats):
        for position, name in enumerate(_rotated(names, repeat)):
            rows.append({"method": name, "repeat": repeat, "position": position, "wall_s": _timed(methods[name])})
    return pd.DataFrame(rows, columns=["method", "repeat", "position", "wall_s"])


def _rotated(names: list[str], by: int) -> list[str]:
    shift = by % len(names)
    return names[shift:] + names[:shift]


def median_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median from order statistics: (low, high, coverage).

    For n sorted samples, [x(j), x(n+1-j)] contains the population median with probability
    1 - 2·P(Binomial(n, 1/2) <= j-1) whatever the distribution. The narrowest such interval whose coverage
    reaches `confidence` is returned; when even [min, max] falls short (n <= 5 at 95 %), that is returned with
    the coverage it really has (n = 5: 93.75 %), so the reader sees it.
    """
    values = np.sort(np.asarray(samples, dtype=float))
    n = values.size
    if n == 0:
        raise BadParameter("samples is empty: nothing to summarise.", "Measure at least one sample.")
    if not 0 < confidence < 1:
        raise BadParameter(f"confidence={confidence!r}: need 0 < confidence < 1.", "E.g. 0.95.")
    best_j, best_coverage = 1, _coverage(n, 1)
    for j in range(2, n // 2 + 1):
        coverage = _coverage(n, j)
        if coverage < confidence:
            break
        best_j, best_coverage = j, coverage
    return float(values[best_j - 1]), float(values[n - best_j]), best_coverage


def _coverage(n: int, j: int) -> float:
    """P(x(j) <= median <= x(n+1-j)) = 1 - 2·P(Bin(n, 1/2) <= j-1)."""
    tail = sum(math.comb(n, i) for i in range(j)) / 2**n
    return 1 - 2 * tail


@dataclass(frozen=True)
class Summary:
    """Robust summary of samples (same unit as the samples): median, quartiles, an order-statistic interval
    of the median (`ci_low`, `ci_high`) and the probability `coverage` that such an interval holds it."""

    n: int
    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float
    coverage: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(samples: Sequence[float], confidence: float = 0.95) -> Summary:
    """Median, quartiles and :func:`median_interval`."""
    low, high, coverage = median_interval(samples, confidence)
    q1, median, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return Summary(len(samples), float(median), float(q1), float(q3), low, high, coverage)


def summary_table(samples: pd.DataFrame, *, floor: str, group: str = "method", value: str = "wall_s",
                  confidence: float = 0.95) -> pd.DataFrame:
    """One row per `group` (index, in first-seen order): the :class:`Summary` fields of `value`, and
    ``ratio_to_floor``, its median over the median of the `floor` group (how many times slower)."""
    rows = {name: asdict(summarize(frame[value].tolist(), confidence))
            for name, frame in samples.groupby(group, sort=False)}
    if floor not in rows:
        raise BadParameter(f"floor={floor!r} is not among the measured {group}s.", f"Choose one of {list(rows)}.")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = group
    table["ratio_to_floor"] = table["median"] / table.loc[floor, "median"]
    return table


def fingerprint(client: Any | None = None) -> dict[str, Any]:
    """Where a number was measured: kernel, arch, cores, memory, cgroup version, whether the host is itself a
    virtual machine (:mod:`labkit.instruments.host`) and, if `client` is given, the engine (with its cgroup
    driver: cgroupfs on our v1 hosts, systemd in the lab machine)."""
    from labkit.instruments import cgroups, host  # local: they read /proc, not needed for pure summaries

    try:
        cgroup_version: str = cgroups.CgroupLayout.from_system().version
    except cgroups.CgroupUnavailable:
        cgroup_version = "none"
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    found: dict[str, Any] = {
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes,
        "cgroup_version": cgroup_version,
        "os": _os_release(),
        "python": platform.python_version(),
        "labkit": labkit.__version__,
        "host": host.facts().record(),
    }
    if client is not None:
        from labkit.instruments import engine

        details = engine.info(client)
        found.update(engine_version=details.version, api_version=details.api_version,
                     storage_driver=details.storage_driver, engine_cgroup_version=details.cgroup_version,
                     engine_cgroup_driver=details.cgroup_driver)
    return found


def _os_release() -> str:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return platform.system()
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    return fields.get("PRETTY_NAME", platform.system()).strip('"')
