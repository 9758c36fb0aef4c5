"""Resource limits for anything an experiment starts: memory, pids and CPU, validated once.

The same :class:`Limits` value becomes the SDK's keyword arguments (``containers.run(**limits.sdk_kwargs())``),
the docker CLI's flags (``limits.cli_args()``) and a labkit cgroup's settings (:mod:`labkit.instruments.cgroups`),
so a container started three ways runs under the same budget, and the numbers recorded beside a measurement
(:meth:`Limits.record`) are the ones that were applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labkit.errors import BadParameter

MIB = 2**20
# dockerd refuses a memory limit below 6 MiB ("Minimum memory limit allowed is 6MB"); the cgroup path takes the
# same floor so that a limit that works in one place works in the other.
MIN_MEMORY_MIB = 6
PIDS_MAX_LIMIT = 4_194_304  # PID_MAX_LIMIT on 64-bit kernels: the largest value pids.max accepts
CPU_PERIOD_US = 100_000  # the CFS period docker uses for --cpus
MIN_CPUS = 0.01  # dockerd's smallest --cpus (a 1 ms quota in a 100 ms period)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_memory_mib(value: object, parameter: str) -> int:
    """Return `value` MiB in bytes; BadParameter naming `parameter` unless a whole number >= 6."""
    if not _is_int(value) or value < MIN_MEMORY_MIB:  # type: ignore[operator]
        raise BadParameter(f"{parameter}={value!r}: the engine accepts no memory limit below {MIN_MEMORY_MIB} MiB.",
                           f"Give a whole number of MiB >= {MIN_MEMORY_MIB}.")
    return int(value) * MIB  # type: ignore[call-overload]


def check_pids(value: object, parameter: str) -> int:
    """Return `value`; BadParameter naming `parameter` unless a whole number in 1..PIDS_MAX_LIMIT."""
    if not _is_int(value) or not 1 <= value <= PIDS_MAX_LIMIT:  # type: ignore[operator]
        raise BadParameter(f"{parameter}={value!r}: a pids limit is a whole number of processes.",
                           f"Give a whole number in 1..{PIDS_MAX_LIMIT}.")
    return int(value)  # type: ignore[call-overload]


def check_cpus(value: object, parameter: str, cores: int | None = None) -> float:
    """Return `value` (cores, e.g. 0.5); BadParameter naming `parameter` unless 0.01 <= value (<= `cores`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and value >= MIN_CPUS and (cores is None or value <= cores)
    if not ok:
        upper = f" and <= {cores} (this host's cores)" if cores is not None else ""
        raise BadParameter(f"{parameter}={value!r}: a CPU limit is a number of cores.",
                           f"Give a number >= {MIN_CPUS}{upper}, e.g. 0.5 for half a core.")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Limits:
    """A memory limit (bytes), a pids limit (processes) and a CPU limit (cores; 0.5 is half a core)."""

    memory_bytes: int
    pids: int
    cpus: float

    def __post_init__(self) -> None:
        if not _is_int(self.memory_bytes) or self.memory_bytes < MIN_MEMORY_MIB * MIB:
            raise BadParameter(f"memory_bytes={self.memory_bytes!r}: below the engine's floor.",
                               f"Give a whole number of bytes >= {MIN_MEMORY_MIB * MIB} ({MIN_MEMORY_MIB} MiB).")
        check_pids(self.pids, "pids")
        check_cpus(self.cpus, "cpus")

    @classmethod
    def of(cls, *, memory_mib: object, pids: object, cpus: object,
           names: tuple[str, str, str] = ("memory_mib", "pids", "cpus")) -> Limits:
        """Validate user input, naming each parameter as the caller calls it (`names`: memory, pids, cpus)."""
        return cls(check_memory_mib(memory_mib, names[0]), check_pids(pids, names[1]), check_cpus(cpus, names[2]))

    @property
    def memory_mib(self) -> float:
        return self.memory_bytes / MIB

    @property
    def nano_cpus(self) -> int:
        return round(self.cpus * 1e9)

    @property
    def cpu_quota_us(self) -> int:
        """The CFS quota per :data:`CPU_PERIOD_US` that `cpus` means (what docker writes for --cpus)."""
        return round(self.cpus * CPU_PERIOD_US)

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the docker SDK's ``containers.run``/``create``."""
        return {"mem_limit": self.memory_bytes, "pids_limit": self.pids, "nano_cpus": self.nano_cpus}

    def cli_args(self) -> list[str]:
        """The same limits as ``docker run`` flags."""
        return ["--memory", f"{self.memory_bytes}b", "--pids-limit", str(self.pids), "--cpus", f"{self.cpus:g}"]

    def record(self) -> dict[str, Any]:
        """Columns to store beside a measurement: memory_limit_bytes, pids_limit, cpus."""
        return {"memory_limit_bytes": self.memory_bytes, "pids_limit": self.pids, "cpus": self.cpus}
