"""Timing with warm-up and robust summaries, and the fingerprint of the machine a number came from."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import labkit


def validate_repeats(repeats: int, warmup: int = 0, *, minimum: int = 1) -> None:
    """ValueError naming the parameter when `repeats` < `minimum` or `warmup` < 0."""
    if not isinstance(repeats, int) or repeats < minimum:
        raise ValueError(f"repeats={repeats!r}: need a whole number >= {minimum}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r}: need a whole number >= 0.")


def time_calls(action: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Call `action` `warmup` times untimed, then `repeats` times; return each wall time in seconds."""
    validate_repeats(repeats, warmup)
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        action()
        samples.append((time.perf_counter_ns() - started) / 1e9)
    return samples


@dataclass(frozen=True)
class Summary:
    """Robust summary of samples (same unit as the samples): median, quartiles, bootstrap CI of the median."""

    n: int
    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(samples: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Summary:
    """Median, IQR and a percentile-bootstrap interval of the median (seeded, so it is reproducible)."""
    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        raise ValueError("samples is empty: nothing to summarise.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: need 0 < confidence < 1.")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(resamples, values.size), replace=True), axis=1)
    alpha = (1 - confidence) / 2
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return Summary(int(values.size), float(median), float(q1), float(q3), float(low), float(high), confidence)


def summary_row(samples: Sequence[float], **keys: Any) -> dict[str, Any]:
    """One tidy row: `keys` plus the summary fields (for a DataFrame of summaries)."""
    summary = summarize(samples)
    return {**keys, **asdict(summary), "iqr": summary.iqr}


def fingerprint(client: Any | None = None) -> dict[str, Any]:
    """Where a number was measured: kernel, arch, cores, memory, cgroup version and (if given) the engine."""
    from labkit.instruments import cgroups  # local: cgroups reads /proc, not needed for pure summaries

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
    }
    if client is not None:
        from labkit.instruments import engine

        details = engine.info(client)
        found.update(engine_version=details.version, api_version=details.api_version,
                     storage_driver=details.storage_driver, engine_cgroup_version=details.cgroup_version)
    return found


def _os_release() -> str:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return platform.system()
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    return fields.get("PRETTY_NAME", platform.system()).strip('"')
