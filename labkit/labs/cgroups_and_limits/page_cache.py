"""Section 2: page cache fills a memory limit without an OOM kill."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import space, stress
from labkit.instruments.limits import MIB, Limits, check_memory_mib
from labkit.instruments.sampler import CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import CPUS, MEMORY_READINGS, PIDS_LIMIT, SAMPLE_COLUMNS
from labkit.labs.cgroups_and_limits.memory import require_host_memory
from labkit.labs.cgroups_and_limits.rig import by_mode, check_hz, check_positive, stress_rig
from labkit.paths import state_dir


@dataclass(frozen=True)
class PageCacheResult:
    """`samples` (as :class:`MemoryRun`'s), `reads` (t_s, pass, bytes: each pass through the file) and
    `outcome` (one row: memory_limit_bytes, file_bytes, passes, exit_code, oom_killed, peak_bytes,
    max_anon_bytes, max_file_bytes, bytes_read, limit_hits, wall_s)."""

    samples: pd.DataFrame
    reads: pd.DataFrame
    outcome: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.outcome.iloc[0]

    @property
    def survived(self) -> bool:
        return int(self.record["exit_code"]) == 0 and not bool(self.record["oom_killed"])

    @property
    def title(self) -> str:
        r = self.record
        return f"Reading a {r['file_bytes'] / MIB:.0f} MiB file under a {r['memory_limit_bytes'] / MIB:.0f} MiB limit"

    @property
    def reached_limit(self) -> bool:
        """The kernel's high watermark of the charge stood at the limit (on v1 with --memory-swap = --memory the
        count of failed charges, ``limit_hits``, stays 0 there: see :meth:`Cgroup.memory_events`)."""
        return bool(self.record["watermark_bytes"] >= self.record["memory_limit_bytes"])

    @property
    def file_over_limit(self) -> float:
        return float(self.record["file_bytes"]) / float(self.record["memory_limit_bytes"])

    def conclusion(self) -> str:
        r = self.record
        limit = float(r["memory_limit_bytes"])
        outcome = ("It was not killed" if self.survived
                   else f"It was killed (exit {int(r['exit_code'])}, OOMKilled {bool(r['oom_killed'])})")
        return (f"**What we measured.** The container read a {r['file_bytes'] / MIB:.0f} MiB file "
                f"({self.file_over_limit:.1f}× its {limit / MIB:.0f} MiB limit) {int(r['passes'])} times: "
                f"{r['bytes_read'] / MIB:.0f} MiB in {r['wall_s']:.2f} s. The page cache charged to it rose to "
                f"{r['max_file_bytes'] / MIB:.1f} MiB and its total charge peaked at {r['peak_bytes'] / MIB:.1f} MiB "
                f"({r['peak_bytes'] / limit:.0%} of the limit), while anonymous memory stayed at "
                f"{r['max_anon_bytes'] / MIB:.1f} MiB. "
                + (f"{outcome}: the kernel's high watermark reached the limit "
                   f"({r['watermark_bytes'] / MIB:.1f} MiB), and there it dropped clean cache pages (they can be read "
                   "again from disk) instead of killing anything. A container's memory usage near its limit is "
                   "therefore not, by itself, a leak: read anon against file in memory.stat."
                   if self.reached_limit else
                   f"{outcome}; the charge never reached the limit (high watermark "
                   f"{r['watermark_bytes'] / MIB:.1f} MiB), so the file was too small to show reclaim at the limit."))


def cold_file_folder() -> Path:
    return state_dir() / "07"


def cold_file(size_bytes: int) -> Path:
    """A file of `size_bytes` zero bytes in labkit's state folder, written out and dropped from the page cache
    (so the container's reads fault it in and are charged to the container)."""
    path = cold_file_folder() / f"page-cache-{os.getpid()}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(MIB)
    with open(path, "wb") as f:
        for _ in range(size_bytes // MIB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def run_page_cache(lab: LabSession, memory_limit_mib: int = 64, file_mib: int | None = None,
                   passes: int | None = None, sample_hz: float = 100) -> PageCacheResult:
    """A container under ``--memory <memory_limit_mib>m`` reads a `file_mib` MiB file (bind-mounted read-only,
    cold in the page cache; None: 192 MiB in quick mode, 512 otherwise) `passes` times (None: 2 quick, 3
    otherwise); sampled at `sample_hz`."""
    limit = check_memory_mib(memory_limit_mib, "memory_limit_mib")
    require_host_memory(lab, limit, "memory_limit_mib")
    size = check_positive(by_mode(lab, file_mib, 192, 512), "file_mib", "MiB", 256) * MIB
    if lab.live:  # the file is written once, in the folder cold_file writes it to, and bind-mounted from there
        space.require_disk((cold_file_folder(), {space.Size("file_mib", size // MIB): 1}))
    passes = check_positive(by_mode(lab, passes, 2, 3), "passes", "passes", 2)
    hz = check_hz(sample_hz)

    def experiment() -> dict[str, pd.DataFrame]:
        limits = Limits(limit, PIDS_LIMIT, CPUS)
        with stress_rig(lab) as rig:
            path = cold_file(size)
            try:
                started = time.perf_counter()
                with rig.fence("page-cache", Limits(2 * limit, PIDS_LIMIT, CPUS)) as (_, parent), \
                        rig.container(["read", "/data/file", str(passes)], stem="page-cache", limits=limits,
                                      parent=parent, memswap_limit=limit,
                                      volumes={str(path): {"bind": "/data/file", "mode": "ro"}}) as container:
                    group = rig.group_of(container)
                    with CgroupSampler(group, 1 / hz, MEMORY_READINGS, or_slower=True) as sampler:
                        rig.go(container)
                        exit_code, oom_killed, output = rig.finish(container)
                    wall_s = time.perf_counter() - started
            finally:
                path.unlink()
        samples = sampler.frame()
        reads = stress.reads(output)
        reads.insert(0, "t_s", [sampler.at(t) for t in reads.pop("t_ns")])
        outcome = {"memory_limit_bytes": limit, "file_bytes": size, "passes": passes, "exit_code": exit_code,
                   "oom_killed": oom_killed, "peak_bytes": int(samples["memory_bytes"].max()),
                   "max_anon_bytes": int(samples["anon_bytes"].max()),
                   "max_file_bytes": int(samples["file_bytes"].max()), "bytes_read": int(reads["bytes"].sum()),
                   "limit_hits": int(samples["limit_hits"].max()),
                   "watermark_bytes": int(samples["peak_bytes"].max()), "wall_s": wall_s}
        return {"page_cache_samples": samples[list(SAMPLE_COLUMNS)], "page_cache_reads": reads,
                "page_cache_outcome": pd.DataFrame([outcome])}

    tables = lab.record("page_cache", ("page_cache_samples", "page_cache_reads", "page_cache_outcome"), experiment,
                        memory_limit_mib=memory_limit_mib, file_mib=size // MIB, passes=passes, sample_hz=sample_hz)
    return PageCacheResult(tables["page_cache_samples"], tables["page_cache_reads"], tables["page_cache_outcome"])
