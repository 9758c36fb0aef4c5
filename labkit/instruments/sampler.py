"""Sample a cgroup's readings at a stated rate in a background thread and return them as a DataFrame (notebook 07).

``with CgroupSampler(group, interval_s=0.01, readings=("memory", "cpu")) as sampler: ...`` then
``sampler.frame()``. Samples are scheduled on a fixed grid (``t = k × interval_s``, a late sample skips the
missed slots instead of bunching up) and time-stamped with ``perf_counter_ns``; ``achieved_hz`` says how many
samples per second were really taken. Sampling ends by itself when the group disappears (the experiment's
container was removed); any other read error is raised when the ``with`` block ends.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from labkit.errors import BadParameter
from labkit.instruments.cgroups import Cgroup

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["READINGS", "CgroupSampler"]


def _memory(group: Cgroup) -> tuple[float, ...]:
    return (group.memory_current_bytes(),)


def _cpu(group: Cgroup) -> tuple[float, ...]:
    return (group.cpu_usage_s(),)


def _throttling(group: Cgroup) -> tuple[float, ...]:
    stat = group.cpu_stat()
    return (stat.nr_periods, stat.nr_throttled, stat.throttled_s)


# reading name → (columns it adds, the controller it reads, how to read it)
READINGS: dict[str, tuple[tuple[str, ...], str, Callable[[Cgroup], tuple[float, ...]]]] = {
    "memory": (("memory_bytes",), "memory", _memory),
    "cpu": (("cpu_s",), "cpuacct", _cpu),
    "throttling": (("nr_periods", "nr_throttled", "throttled_s"), "cpu", _throttling),
}
"""What :class:`CgroupSampler` can read. Columns: ``memory_bytes`` (memory charged now, bytes), ``cpu_s`` (CPU
time used since the group was made, seconds), ``nr_periods``/``nr_throttled`` (CFS periods run/throttled so far)
and ``throttled_s`` (time spent throttled so far, seconds)."""


class CgroupSampler:
    """Read ``readings`` of ``cgroup`` every ``interval_s`` seconds while the ``with`` block runs.

    :meth:`frame` has one row per sample: ``t_s`` (seconds since the sampler started, increasing) and the
    columns of each reading (:data:`READINGS`). ``achieved_hz`` is the rate really reached (samples per
    second); ``group_gone`` says whether sampling ended because the group disappeared.
    """

    def __init__(self, cgroup: Cgroup, interval_s: float = 0.01, readings: Iterable[str] = ("memory",)) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or not interval_s > 0:
            raise BadParameter(f"interval_s={interval_s!r}: a sampling interval is a number of seconds > 0.",
                               "E.g. interval_s=0.01 for 100 samples per second.")
        chosen = [readings] if isinstance(readings, str) else list(dict.fromkeys(readings))
        unknown = [r for r in chosen if r not in READINGS]
        if not chosen or unknown:
            raise BadParameter(f"readings={chosen!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}.",
                               f"Choose one or more of {', '.join(READINGS)}.")
        for reading in chosen:
            cgroup.dir(READINGS[reading][1])  # CgroupUnavailable now, not in the thread
        self.cgroup = cgroup
        self.interval_s = float(interval_s)
        self.readings = tuple(chosen)
        self.columns = ("t_s", *(c for r in self.readings for c in READINGS[r][0]))
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

    def _run(self) -> None:
        readers = [READINGS[r][2] for r in self.readings]
        interval_ns = round(self.interval_s * 1e9)
        start = time.perf_counter_ns()
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
        """The samples so far, one row each; ``attrs`` carry ``interval_s`` (asked) and ``achieved_hz``."""
        import pandas as pd

        frame = pd.DataFrame(list(self._rows), columns=list(self.columns))
        frame.attrs.update(interval_s=self.interval_s, achieved_hz=self.achieved_hz)
        return frame
