"""Sample a cgroup's readings at a stated rate in a background thread and return them as a DataFrame (notebook 07).

``with CgroupSampler(group, interval_s=0.01, readings=("memory", "cpu")) as sampler: ...`` then
``sampler.frame()``. Samples are scheduled on a fixed grid (``t = k × interval_s``, a late sample skips the
missed slots instead of bunching up) and time-stamped with ``perf_counter_ns`` (CLOCK_MONOTONIC on Linux);
``achieved_hz`` says how many samples per second were really taken and ``cpu_s`` how much CPU time the sampling
thread itself used. Sampling ends by itself when the group disappears (the experiment's container exited and
its runtime removed the group) or, having been read, loses a controller a reading needs (on a systemd host a
slice's controllers are switched off once no unit in it asks for them, which can come before the exited
container's group is gone: its cpu.stat loses the CFS counters); any other read error is raised when the
``with`` block ends.

A rate the machine cannot reach is refused up front: the constructor times a few reads of the group and refuses
an interval shorter than :data:`HEADROOM` times one sample's cost.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from labkit.errors import BadParameter
from labkit.instruments.cgroups import Cgroup, CgroupUnavailable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HEADROOM", "MAX_HZ", "READINGS", "CgroupSampler"]

MAX_HZ = 1000.0
"""The fastest rate asked for at all (samples per second): the kernel's counters move in ~ms steps anyway."""
HEADROOM = 4.0
"""An interval must leave the sampling thread idle most of the time: at least this many times one sample's cost."""
_PROBE_READS = 9


def _memory(group: Cgroup) -> tuple[float, ...]:
    return (group.memory_current_bytes(),)


def _cpu(group: Cgroup) -> tuple[float, ...]:
    return (group.cpu_usage_s(),)


def _throttling(group: Cgroup) -> tuple[float, ...]:
    stat = group.cpu_stat()
    return (stat.nr_periods, stat.nr_throttled, stat.throttled_s)


def _memory_split(group: Cgroup) -> tuple[float, ...]:
    stat = group.memory_stat()
    return (stat.anon_bytes, stat.file_bytes)


def _memory_events(group: Cgroup) -> tuple[float, ...]:
    events = group.memory_events()
    return (events.get("max", 0), events.get("oom_kill", 0))


def _memory_peak(group: Cgroup) -> tuple[float, ...]:
    peak = group.memory_peak_bytes()
    return (float("nan") if peak is None else peak,)


def _memory_pressure(group: Cgroup) -> tuple[float, ...]:
    stalled = group.memory_pressure_s()
    return (float("nan"), float("nan")) if stalled is None else stalled


def _pids(group: Cgroup) -> tuple[float, ...]:
    return (group.pids_current(),)


# reading name → (columns it adds, the controller it reads, how to read it)
READINGS: dict[str, tuple[tuple[str, ...], str, Callable[[Cgroup], tuple[float, ...]]]] = {
    "memory": (("memory_bytes",), "memory", _memory),
    "cpu": (("cpu_s",), "cpuacct", _cpu),
    "throttling": (("nr_periods", "nr_throttled", "throttled_s"), "cpu", _throttling),
    "memory_split": (("anon_bytes", "file_bytes"), "memory", _memory_split),
    "memory_events": (("limit_hits", "oom_kills"), "memory", _memory_events),
    "memory_peak": (("peak_bytes",), "memory", _memory_peak),
    "memory_pressure": (("pressure_some_s", "pressure_full_s"), "memory", _memory_pressure),
    "pids": (("pids",), "pids", _pids),
}
"""What :class:`CgroupSampler` can read. Columns: ``memory_bytes`` (memory charged now, bytes), ``cpu_s`` (CPU
time used since the group was made, seconds), ``nr_periods``/``nr_throttled`` (CFS periods run/throttled so far),
``throttled_s`` (time spent throttled so far, seconds), ``anon_bytes``/``file_bytes`` (anonymous memory and page
cache from memory.stat, bytes), ``limit_hits`` (charges that failed at the limit, as the kernel counts them:
v2 memory.events ``max``; v1 memory.failcnt + memory.memsw.failcnt, which can stay 0 at the limit — see
:meth:`Cgroup.memory_events`), ``peak_bytes`` (the kernel's high watermark of the charge, bytes: v1
memory.max_usage_in_bytes, v2 memory.peak, NaN before 5.19), ``oom_kills`` (processes the OOM killer killed in
the group), ``pressure_some_s``/``pressure_full_s`` (time some / all of the group's tasks stalled on memory so
far, seconds: v2 memory.pressure, PSI; NaN on v1) and ``pids`` (tasks in the group)."""


class CgroupSampler:
    """Read ``readings`` of ``cgroup`` every ``interval_s`` seconds while the ``with`` block runs.

    :meth:`frame` has one row per sample: ``t_s`` (seconds since the sampler started, increasing) and the
    columns of each reading (:data:`READINGS`). ``achieved_hz`` is the rate really reached (samples per
    second); ``group_gone`` says whether sampling ended because the group disappeared or lost a controller a
    reading needs (the constructor has read every reading once, so that is the group being taken apart);
    ``sample_cost_s`` is the median time one sample took when probed (seconds); ``cpu_s`` the CPU time of the
    sampling thread (seconds, CLOCK_THREAD_CPUTIME_ID). :meth:`at` puts a CLOCK_MONOTONIC (``perf_counter_ns``) or a
    wall-clock (``time_ns``) instant on the ``t_s`` axis.
    """

    def __init__(self, cgroup: Cgroup, interval_s: float = 0.01, readings: Iterable[str] = ("memory",),
                 or_slower: bool = False) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or not interval_s > 0:
            raise BadParameter(f"interval_s={interval_s!r}: a sampling interval is a number of seconds > 0.",
                               "E.g. interval_s=0.01 for 100 samples per second.")
        chosen = [readings] if isinstance(readings, str) else list(dict.fromkeys(readings))
        unknown = [r for r in chosen if r not in READINGS]
        if not chosen or unknown:
            raise BadParameter(f"readings={chosen!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}.",
                               f"Choose one or more of {', '.join(READINGS)}.")
        if 1 / interval_s > MAX_HZ:
            raise BadParameter(f"interval_s={interval_s!r}: {1 / interval_s:.0f} samples per second is more than "
                               f"the {MAX_HZ:.0f} Hz this sampler is built for.",
                               f"Choose interval_s ≥ {1 / MAX_HZ} s.")
        for reading in chosen:
            cgroup.dir(READINGS[reading][1])  # CgroupUnavailable now, not in the thread
        self.cgroup = cgroup
        self.interval_s = float(interval_s)
        self.readings = tuple(chosen)
        self.columns = ("t_s", *(c for r in self.readings for c in READINGS[r][0]))
        self.sample_cost_s = self._probe()
        fastest = HEADROOM * self.sample_cost_s
        if self.interval_s < fastest and or_slower:  # the machine's pace (an emulated guest's), not the wish
            self.interval_s = fastest
        elif self.interval_s < fastest:
            raise BadParameter(
                f"interval_s={interval_s!r}: one sample of {', '.join(self.readings)} takes "
                f"{self.sample_cost_s * 1e3:.2f} ms here, so {1 / interval_s:.0f} Hz would keep a core busy "
                "sampling.",
                f"Choose interval_s ≥ {fastest:.4f} s (at most {1 / fastest:.0f} Hz here), or fewer readings.")
        self.started_ns = 0
        self.started_unix_ns = 0
        self.cpu_s: float | None = None
        self.group_gone = False
        self._rows: list[tuple[float, ...]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> CgroupSampler:
        if self._thread is not None:
            raise RuntimeError("a CgroupSampler samples once: make a new one")
        self._thread = threading.Thread(target=self._run, name=f"CgroupSampler({self.cgroup.relpath})", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None and exc_type is None:
            raise self._error

    def _probe(self) -> float:
        """Median seconds one sample takes on this group (read :data:`_PROBE_READS` times)."""
        readers = [READINGS[r][2] for r in self.readings]
        costs = []
        for _ in range(_PROBE_READS):
            start = time.perf_counter_ns()
            for read in readers:
                read(self.cgroup)
            costs.append((time.perf_counter_ns() - start) / 1e9)
        return sorted(costs)[len(costs) // 2]

    def at(self, instant_ns: int, clock: str = "monotonic") -> float:
        """Seconds on this sampler's ``t_s`` axis of an instant read from ``clock``: "monotonic"
        (``time.perf_counter_ns``, CLOCK_MONOTONIC, also what a program in a container reads) or "wall"
        (``time.time_ns``, e.g. an engine event's ``timeNano``)."""
        if clock not in ("monotonic", "wall"):
            raise BadParameter(f"clock={clock!r}: unknown.", "Use 'monotonic' or 'wall'.")
        origin = self.started_ns if clock == "monotonic" else self.started_unix_ns
        return (instant_ns - origin) / 1e9

    def _run(self) -> None:
        cpu_start = time.thread_time_ns()
        try:
            self._sample()
        finally:
            self.cpu_s = (time.thread_time_ns() - cpu_start) / 1e9

    def _sample(self) -> None:
        readers = [READINGS[r][2] for r in self.readings]
        interval_ns = round(self.interval_s * 1e9)
        start = self.started_ns = time.perf_counter_ns()
        self.started_unix_ns = time.time_ns()
        slot = 0
        while True:
            now = time.perf_counter_ns()
            try:
                row: tuple[float, ...] = ((now - start) / 1e9,)
                for read in readers:
                    row += read(self.cgroup)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENODEV:
                    self.group_gone = True  # the group was removed: the experiment is over
                else:
                    self._error = exc
                return
            except CgroupUnavailable:
                self.group_gone = True  # its controller switched off as the group is taken apart
                return
            except BaseException as exc:
                self._error = exc
                return
            self._rows.append(row)
            slot = max(slot + 1, (time.perf_counter_ns() - start) // interval_ns + 1)
            if self._stop.wait(max(0.0, (start + slot * interval_ns - time.perf_counter_ns()) / 1e9)):
                return

    @property
    def samples(self) -> int:
        return len(self._rows)

    @property
    def achieved_hz(self) -> float | None:
        """Samples per second really taken: (n − 1) / (last t_s − first t_s); None below two samples."""
        rows = list(self._rows)
        if len(rows) < 2 or rows[-1][0] <= rows[0][0]:
            return None
        return (len(rows) - 1) / (rows[-1][0] - rows[0][0])

    def frame(self) -> pd.DataFrame:
        """The samples so far, one row each; ``attrs`` carry ``interval_s`` (asked), ``achieved_hz``,
        ``sample_cost_s`` and ``cpu_s`` (the sampling thread's CPU time, once it ended)."""
        import pandas as pd

        frame = pd.DataFrame(list(self._rows), columns=list(self.columns))
        frame.attrs.update(interval_s=self.interval_s, achieved_hz=self.achieved_hz,
                           sample_cost_s=self.sample_cost_s, cpu_s=self.cpu_s)
        return frame
