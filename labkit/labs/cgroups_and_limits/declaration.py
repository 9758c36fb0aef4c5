"""The lab's declaration: its notebook, tables, requirements, and the limits every experiment shares."""

from __future__ import annotations

import docker

from labkit.core.lab import Lab, Requirement
from labkit.instruments import stress

STEM = "07-cgroups-and-limits"
BASE = "busybox"
PIDS_LIMIT = 64  # every stress container's pids limit unless the experiment is about pids
CPUS = 1.0  # every memory experiment's CPU limit: one core
EXIT_SIGKILL = 128 + 9  # what a shell and the engine report for a process ended by SIGKILL
CPU_TOLERANCE = 0.10  # a quota is "held" when the measured rate is within 10 % of it
SHARES_TOLERANCE = 0.15  # a shares ratio is "met" within 15 %
SHARES_SAMPLE_COLUMNS = ("round", "container", "shares", "t_s", "cpu_s")
SHARES_WORK_COLUMNS = ("round", "container", "shares", "t_s", "work_units")
EVICTED_BELOW = 0.5  # less of the victim's cached file left than this beside a neighbour: evicted
KEPT_FROM = 0.9  # at least this much left: kept
IO_TOLERANCE = 0.15  # an IO rate "at the limit" within 15 %
NEIGHBOUR_TOLERANCE = 0.10  # the victim's kept share is "as expected" within 10 points of its rate alone
WAIT_S = 120.0  # longest any one stress container may run before the experiment gives up

SAMPLE_COLUMNS = ("t_s", "memory_bytes", "anon_bytes", "file_bytes", "limit_hits", "oom_kills", "peak_bytes",
                  "pressure_some_s", "pressure_full_s")
MEMORY_READINGS = ("memory", "memory_split", "memory_events", "memory_peak", "memory_pressure")  # what is sampled
STEP_COLUMNS = ("t_s", "event", "allocated_mib")
EVENT_COLUMNS = ("t_s", "action", "exit_code")
OUTCOME_COLUMNS = (
    "variant", "cgroup_version", "memory_limit_bytes", "memory_swap_bytes", "swap_limit_read_bytes", "host_swap_bytes",
    "fence_limit_bytes", "step_mib", "exit_code", "oom_killed", "oom_events", "group_oom_kills", "fence_oom_kills",
    "kernel_memcg_kills", "kernel_global_kills", "kill_t_s", "clock_offset_s", "clock_uncertainty_s",
    "last_step_t_s", "sampled_peak_bytes", "peak_bytes",
    "allocated_mib_last", "host_available_before_bytes", "host_available_after_bytes", "sampler_hz",
    "sample_cost_s", "sampler_cpu_s", "wall_s",
)
REPEAT_COLUMNS = ("repeat", *OUTCOME_COLUMNS, "oom_event_t_s")  # one row per ramp: its outcome, its oom event
MEMORY_NEIGHBOUR_COLUMNS = (
    "condition", "fence_bytes", "file_bytes", "neighbour_limit_bytes", "resident_after_read_bytes",
    "resident_after_neighbour_bytes", "neighbour_touched_mib", "neighbour_exit_code", "first_read_s", "reread_s")
PIDS_NEIGHBOUR_COLUMNS = ("condition", "fence_pids", "neighbour_pids_limit", "neighbour_forked", "victim_pids_limit",
                          "victim_attempts", "victim_forked", "victim_eagain")
IO_COLUMNS = ("condition", "direct", "limit_bps", "limit_iops", "t_s", "event", "mib")
CPU_SAMPLE_COLUMNS = ("round", "condition", "cpus", "t_s", "cpu_s", "nr_periods", "nr_throttled", "throttled_s")
WORK_COLUMNS = ("condition", "t_s", "work_units")
NEIGHBOUR_COLUMNS = ("round", "condition", "neighbour_threads", "neighbour_shares", "neighbour_cpus", "t_s",
                     "work_units")
NEIGHBOUR_CPU_COLUMNS = ("round", "condition", "container", "t_s", "cpu_s")
MEMORY_PREFIXES = ("ramp", "swap", "unlimited")


def memory_tables(prefix: str) -> dict[str, tuple[str, ...]]:
    return {f"{prefix}_samples": SAMPLE_COLUMNS, f"{prefix}_steps": STEP_COLUMNS,
            f"{prefix}_events": EVENT_COLUMNS, f"{prefix}_outcome": OUTCOME_COLUMNS}


CGROUPFS, SYSTEMD = "cgroupfs", "systemd"  # the cgroup drivers 07 runs on: its fences are groups, or slices
DRIVERS = Requirement("engine", f"{CGROUPFS} {SYSTEMD}",
                      "containers below labkit-made fences (--cgroup-parent=/labkit/… or a labkit-….slice)")


def prepare(client: docker.DockerClient) -> list[str]:
    """The static stress program (the busybox base is made by setup)."""
    return [f"stress program: {stress.build()}"]


LAB = Lab(
    stem=STEM,
    topic="Kernel resources: memory, CPU and pids limits",
    requirements=(DRIVERS,),  # the rest are in labkit/assets/requirements/
    bases=(BASE,),
    tables={
        **{name: cols for prefix in MEMORY_PREFIXES for name, cols in memory_tables(prefix).items()},
        "ramp_repeats": REPEAT_COLUMNS,
        "page_cache_samples": SAMPLE_COLUMNS,
        "page_cache_reads": ("t_s", "pass", "bytes"),
        "page_cache_outcome": ("memory_limit_bytes", "file_bytes", "passes", "exit_code", "oom_killed",
                               "peak_bytes", "max_anon_bytes", "max_file_bytes", "bytes_read", "limit_hits",
                               "watermark_bytes", "wall_s"),
        "child_oom": ("cgroup_version", "memory_limit_bytes", "exit_code", "oom_killed", "oom_events",
                      "group_oom_kills", "fence_oom_kills", "oom_group",
                      "kernel_memcg_kills", "child_signal", "child_exit", "pid1_survived"),
        "cpu_samples": CPU_SAMPLE_COLUMNS,
        "cpu_work": ("round", *WORK_COLUMNS),
        "shares_samples": SHARES_SAMPLE_COLUMNS,
        "shares_work": SHARES_WORK_COLUMNS,
        "neighbour_work": NEIGHBOUR_COLUMNS,
        "neighbour_cpu": NEIGHBOUR_CPU_COLUMNS,
        "memory_neighbour": MEMORY_NEIGHBOUR_COLUMNS,
        "io_writes": IO_COLUMNS,
        "pids_neighbour": PIDS_NEIGHBOUR_COLUMNS,
        "pids": ("pids_limit", "attempts", "forked", "eagain", "other", "pids_current", "pids_limit_hits",
                 "host_processes_before", "host_processes_during", "host_processes_after", "stop_s", "exit_code"),
    },
    prepare=prepare,
    headline="limits.memory",
)
