"""Section 3: a child over the limit is OOM-killed while PID 1 survives."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import stress
from labkit.instruments.limits import MIB, Limits
from labkit.instruments.sampler import CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import CPUS, PIDS_LIMIT
from labkit.labs.cgroups_and_limits.memory import oom_kill_counters, require_host_memory, validate_ramp
from labkit.labs.cgroups_and_limits.rig import kernel_kills, stress_rig


@dataclass(frozen=True)
class ChildOomResult:
    """`record`: one row — cgroup_version (the memory controller's: v1, v2),
    memory_limit_bytes, exit_code (PID 1's), oom_killed (the engine's flag), oom_events,
    group_oom_kills (the container's group, sampled until it vanished), fence_oom_kills (the fence's, read after
    the exit), oom_group (v2 memory.oom.group of the container's group as the runtime set it; missing on v1),
    kernel_memcg_kills, child_signal (what ended the child; 0: it exited), child_exit, pid1_survived."""

    table: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.table.iloc[0]


    def conclusion(self) -> str:
        r = self.record
        child = (f"ended by signal {int(r['child_signal'])} (SIGKILL)" if int(r["child_signal"]) == 9
                 else f"ended with signal {int(r['child_signal'])}, exit {int(r['child_exit'])}")
        flag = ("still says OOMKilled = true" if bool(r["oom_killed"]) else "says OOMKilled = false")
        return (f"**What we measured.** The child was {child} — the kernel's log shows "
                f"{int(r['kernel_memcg_kills'])} cgroup OOM kill(s) and the cgroup oom_kill counters read "
                f"{oom_kill_counters(r)} — while PID 1 lived on and exited {int(r['exit_code'])}. The engine "
                f"{flag} ({int(r['oom_events'])} `oom` event(s)): on this engine the flag records that the "
                "container's cgroup had an OOM kill, not that its main process died of one, so exit code "
                f"{int(r['exit_code'])} and OOMKilled = {bool(r['oom_killed'])} can come together. Check both. "
                "On cgroup v2 with `memory.oom.group = 1` the kernel would kill every process in the group, PID 1 "
                "included, and the container would exit 137; "
                + self._oom_group_says())

    def _oom_group_says(self) -> str:
        """What the container's memory.oom.group (v2) made the kernel do, against whether PID 1 survived."""
        r = self.record
        if pd.isna(r["oom_group"]):
            return ("this host's memory controller is cgroup v1, which has no such setting, so that is not measured "
                    "here (notebook 15 and `labkit guest run 07` measure it on v2).")
        said = (f"here, on cgroup {r['cgroup_version']}, the runtime left the container's `memory.oom.group` at "
                f"**{int(r['oom_group'])}**, so the kernel killed ")
        survived = bool(r["pid1_survived"])
        if int(r["oom_group"]) == 0:
            return said + "one process, the child, and PID 1 " + (
                "lived on." if survived else "still did not survive: look at the log.")
        return said + "the whole group" + (", yet PID 1 reports surviving: look at the log." if survived
                                           else ", PID 1 included.")


def run_child_oom(lab: LabSession, memory_limit_mib: int = 64, step_mib: int = 4, step_interval_ms: int = 50,
                  sample_hz: float = 100) -> ChildOomResult:
    """PID 1 forks a child that ramps past ``--memory <memory_limit_mib>m``; PID 1 reports how the child ended
    and exits 0 itself. What do the exit code and the engine's OOMKilled say then?"""
    limit, step, interval, hz = validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    require_host_memory(lab, limit, "memory_limit_mib")

    def experiment() -> pd.DataFrame:
        limits = Limits(limit, PIDS_LIMIT, CPUS)
        start_monotonic_s, start_unix_s = time.monotonic(), time.time()
        with stress_rig(lab) as rig, rig.fence("child-oom", Limits(2 * limit, PIDS_LIMIT, CPUS)) as (fence, parent), \
                rig.container(["child-mem", str(step), str(interval), str(4 * limit // MIB)], stem="child-oom",
                              limits=limits, parent=parent, memswap_limit=limit) as container:
            group = rig.group_of(container)
            oom_group = group.memory_oom_group()  # as the runtime left it, before anything was killed
            with CgroupSampler(group, 1 / hz, ("memory", "memory_events"), or_slower=True) as sampler:
                rig.go(container)
                exit_code, oom_killed, output = rig.finish(container)
            events = rig.events(container, start_unix_s, sampler)
            # PID 1 exits as soon as it has reported the child's end, and a systemd scope can vanish before the
            # sampler's next read; on v2 the fence, which outlives it, still counts the kill
            fence_kills = fence.memory_events().get("oom_kill", 0)
        memcg_kills, _ = kernel_kills(start_monotonic_s)
        child = stress.child_end(output) or {"signal": -1, "exit": -1}
        return pd.DataFrame([{
            "cgroup_version": rig.layout.version, "memory_limit_bytes": limit, "exit_code": exit_code,
            "oom_killed": oom_killed,
            "oom_events": int((events["action"] == "oom").sum()),
            "group_oom_kills": int(sampler.frame()["oom_kills"].max()), "fence_oom_kills": fence_kills,
            "oom_group": oom_group if oom_group is not None else pd.NA, "kernel_memcg_kills": memcg_kills,
            "child_signal": child["signal"], "child_exit": child["exit"], "pid1_survived": exit_code == 0,
        }])

    return ChildOomResult(lab.measure("child_oom", experiment, memory_limit_mib=memory_limit_mib,
                                      step_mib=step_mib, step_interval_ms=step_interval_ms, sample_hz=sample_hz))
