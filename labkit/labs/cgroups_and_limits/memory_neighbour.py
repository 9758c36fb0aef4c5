"""Section 5, a memory neighbour: a container's page cache evicted by a neighbour without ``--memory`` in the same
parent group, and kept when the neighbour has a limit of its own."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import space, stress
from labkit.instruments.limits import MIB, Limits, check_memory_mib
from labkit.instruments.shell import require_program, run
from labkit.labs.cgroups_and_limits.declaration import CPUS, MEMORY_NEIGHBOUR_COLUMNS, PIDS_LIMIT, WAIT_S
from labkit.labs.cgroups_and_limits.page_cache import cold_file, cold_file_folder
from labkit.labs.cgroups_and_limits.rig import StressRig, TwoRounds, check_positive, stress_rig

UNLIMITED = "neighbour without --memory"


def resident_bytes(path: Path) -> int:
    """How much of the file at `path` is in the page cache now, bytes (``fincore``, util-linux)."""
    out = run([require_program("fincore"), "--bytes", "--noheadings", "--output", "RES", str(path)], 30).stdout
    return int(out.split()[0])


@dataclass(frozen=True)
class MemoryNeighbourResult(TwoRounds):
    """`table`: one row per condition (:data:`MEMORY_NEIGHBOUR_COLUMNS`): the victim's file (bytes), how much of
    it the page cache held after the victim read it and after the neighbour ramped (bytes), what the neighbour
    touched (MiB) and how it ended, and the victim's first read and its re-read after the neighbour (s)."""

    table: pd.DataFrame

    @property
    def summary(self) -> pd.DataFrame:
        t = self.table.set_index("condition")
        return pd.DataFrame({"cache_kept": t["resident_after_neighbour_bytes"] / t["resident_after_read_bytes"],
                             "reread_over_first_read": t["reread_s"] / t["first_read_s"],
                             "neighbour_touched_mib": t["neighbour_touched_mib"]})

    def kept(self, condition: str) -> float:
        """The part of the victim's cached file still cached after the neighbour in `condition`."""
        return float(self.summary.loc[condition, "cache_kept"])

    def conclusion(self) -> str:
        unlimited, limited = self.rounds()
        return (f"**What we measured.** The victim read a {unlimited['file_bytes'] / MIB:.0f} MiB file inside a "
                f"{unlimited['fence_bytes'] / MIB:.0f} MiB parent group, then a neighbour in the same group ramped. "
                f"Without `--memory` it touched {int(unlimited['neighbour_touched_mib'])} MiB and the victim's file "
                f"went from {unlimited['resident_after_read_bytes'] / MIB:.1f} to "
                f"{unlimited['resident_after_neighbour_bytes'] / MIB:.1f} MiB in the page cache "
                f"({self.kept(UNLIMITED):.0%} kept); the victim's re-read took {unlimited['reread_s'] * 1e3:.0f} ms "
                f"against {unlimited['first_read_s'] * 1e3:.0f} ms the first time. With "
                f"`--memory {limited['neighbour_limit_bytes'] / MIB:.0f}m` the neighbour stopped at "
                f"{int(limited['neighbour_touched_mib'])} MiB and {self.kept(self.limited_condition):.0%} of the file "
                f"stayed cached (re-read {limited['reread_s'] * 1e3:.0f} ms). Memory a parent group allows is shared "
                "first come, first served: a neighbour without a limit reclaims its siblings' cache before the OOM "
                "killer steps in.")


def _read_once(rig: StressRig, path: Path, parent: str, limits: Limits, stem: str) -> float:
    """A container reads the file at `path` once; seconds from its start signal to the end of its read."""
    with rig.container(["read", "/data/file", "1"], stem=stem, limits=limits, parent=parent, mem_limit=0,
                       volumes={str(path): {"bind": "/data/file", "mode": "ro"}}) as container:
        started_ns = time.perf_counter_ns()
        rig.go(container)
        _, _, output = rig.finish(container)
    return float((stress.reads(output)["t_ns"].iloc[0] - started_ns) / 1e9)


def _condition(rig: StressRig, name: str, neighbour_limit_bytes: int | None, *, file_bytes: int, fence_bytes: int,
               step_mib: int) -> dict[str, object]:
    limits = Limits(fence_bytes, PIDS_LIMIT, CPUS)
    tag = "unlimited" if neighbour_limit_bytes is None else "limited"  # names of its own for each condition
    path = cold_file(file_bytes)
    try:
        with rig.fence(f"memory-neighbour-{tag}", limits) as (_, parent):
            first_read_s = _read_once(rig, path, parent, limits, f"victim-read-{tag}")
            after_read = resident_bytes(path)
            with rig.container(["mem", str(step_mib), "20", str(4 * fence_bytes // MIB)],
                               stem=f"memory-neighbour-{tag}", limits=limits, parent=parent, wait=False,
                               mem_limit=neighbour_limit_bytes or 0,
                               memswap_limit=neighbour_limit_bytes or 0) as neighbour:
                exit_code = int(neighbour.wait(timeout=WAIT_S)["StatusCode"])
                steps = stress.allocations(neighbour.logs().decode())
            after_neighbour = resident_bytes(path)
            reread_s = _read_once(rig, path, parent, limits, f"victim-reread-{tag}")
    finally:
        path.unlink()
    allocs = steps.loc[steps["event"] == "alloc", "allocated_mib"]
    return {"condition": name, "fence_bytes": fence_bytes, "file_bytes": file_bytes,
            "neighbour_limit_bytes": neighbour_limit_bytes or float("nan"), "resident_after_read_bytes": after_read,
            "resident_after_neighbour_bytes": after_neighbour,
            "neighbour_touched_mib": int(allocs.max()) if len(allocs) else 0, "neighbour_exit_code": exit_code,
            "first_read_s": first_read_s, "reread_s": reread_s}


def run_memory_neighbour(lab: LabSession, file_mib: int = 64, fence_mib: int = 192, neighbour_limit_mib: int = 32,
                         step_mib: int = 8) -> MemoryNeighbourResult:
    """A victim reads a cold `file_mib` MiB file inside a parent group of `fence_mib` MiB; a neighbour in the same
    group then touches `step_mib` MiB every 20 ms, without ``--memory`` (until the parent's limit kills it), and
    in a second round under ``--memory <neighbour_limit_mib>m``. How much of the victim's file stays cached?"""
    file_bytes = check_positive(file_mib, "file_mib", "MiB", 64) * MIB
    fence_bytes = check_memory_mib(fence_mib, "fence_mib")
    neighbour_bytes = check_memory_mib(neighbour_limit_mib, "neighbour_limit_mib")
    step = check_positive(step_mib, "step_mib", "MiB", 8)
    if not file_bytes + neighbour_bytes < fence_bytes:
        raise BadParameter(f"fence_mib={fence_mib!r}: the file ({file_mib} MiB) and the limited neighbour "
                           f"({neighbour_limit_mib} MiB) must fit in the parent group together.",
                           f"Choose fence_mib above {file_mib + neighbour_limit_mib}, e.g. "
                           f"{2 * (file_mib + neighbour_limit_mib)}.")
    if lab.live:
        space.require_memory({space.Size("fence_mib", fence_bytes // MIB): 1})
        space.require_disk((cold_file_folder(), {space.Size("file_mib", file_bytes // MIB): 1}))

    def experiment() -> pd.DataFrame:
        with stress_rig(lab) as rig:
            rows = [_condition(rig, name, limit, file_bytes=file_bytes, fence_bytes=fence_bytes, step_mib=step)
                    for name, limit in ((UNLIMITED, None),
                                        (f"neighbour with --memory {neighbour_bytes // MIB}m", neighbour_bytes))]
        return pd.DataFrame(rows, columns=list(MEMORY_NEIGHBOUR_COLUMNS))

    return MemoryNeighbourResult(lab.measure("memory_neighbour", experiment, file_mib=file_mib, fence_mib=fence_mib,
                                             neighbour_limit_mib=neighbour_limit_mib, step_mib=step_mib))
