"""Sections 1, 4 and 7: memory climbing to the limit, ``--memory-swap`` without swap, and a container without a
memory limit inside a limited parent group."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import procfs, space, stress
from labkit.instruments.limits import MIB, Limits, check_memory_mib
from labkit.instruments.measure import median_interval
from labkit.instruments.sampler import CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import (
    CPUS,
    EXIT_SIGKILL,
    MEMORY_READINGS,
    OUTCOME_COLUMNS,
    PIDS_LIMIT,
    REPEAT_COLUMNS,
    SAMPLE_COLUMNS,
    STEP_COLUMNS,
    memory_tables,
)
from labkit.labs.cgroups_and_limits.rig import (
    StressRig,
    by_mode,
    check_hz,
    check_positive,
    kernel_clock,
    kernel_kill_time,
    kernel_kills,
    stress_rig,
)


def oom_kills_counted(record: pd.Series) -> int:
    """The OOM kills the cgroup counters of one outcome row saw: the container's group's (``group_oom_kills``,
    sampled until the group vanished) or, on v2, the fence's (``fence_oom_kills``, read after the exit: v2's
    memory.events counts its descendants' kills; v1's oom_kill counts only in the victim's group)."""
    fence = int(record["fence_oom_kills"]) if record["cgroup_version"] == "v2" else 0
    return max(int(record["group_oom_kills"]), fence)


def oom_kill_counters(record: pd.Series) -> str:
    """What each cgroup oom_kill counter of one outcome row said, in words."""
    said = f"{int(record['group_oom_kills'])} in the container's group (last sample before it vanished)"
    if record["cgroup_version"] == "v2":
        said += f", {int(record['fence_oom_kills'])} in the fence (its descendants' kills, read after the exit)"
    return said


@dataclass(frozen=True)
class MemoryRun:
    """One memory experiment: `samples` (t_s, memory_bytes, anon_bytes, file_bytes, limit_hits, oom_kills: the
    container's own group), `steps` (t_s, event, allocated_mib: the program's own report — ``touch`` as it
    begins a step, ``alloc`` once the step is touched),
    `events` (t_s, action, exit_code: the engine's events) and `outcome` (one row, :data:`OUTCOME_COLUMNS`).
    Times are seconds on the sampler's axis; bytes are bytes."""

    samples: pd.DataFrame
    steps: pd.DataFrame
    events: pd.DataFrame
    outcome: pd.DataFrame
    repeats: pd.DataFrame | None = None  # the ramp's repeats: one outcome row each (REPEAT_COLUMNS), this one first

    @property
    def record(self) -> pd.Series:
        return self.outcome.iloc[0]

    @property
    def limit_bytes(self) -> int:
        """The limit that stopped it: the container's own, or the fence's when it had none."""
        own = self.record["memory_limit_bytes"]
        return int(self.record["fence_limit_bytes"] if pd.isna(own) else own)

    @property
    def killed(self) -> bool:
        return int(self.record["exit_code"]) == EXIT_SIGKILL

    @property
    def time_to_kill_ms(self) -> float:
        """From the moment the program began touching its last step (the one that crossed the limit, by its own
        clock) to the kernel's kill (the kernel log's stamp, moved onto CLOCK_MONOTONIC by the offset measured
        with a marker), ms: an upper bound on the time from reaching the limit to the kill, give or take
        :attr:`kill_uncertainty_ms`."""
        return float(self.record["kill_t_s"] - self.record["last_step_t_s"]) * 1e3

    @property
    def kill_uncertainty_ms(self) -> float:
        """How far off the kill's time can be on the program's clock, ms: the clock offset's uncertainty plus
        the kernel log's 1 µs resolution."""
        return float(self.record["clock_uncertainty_s"]) * 1e3 + 1e-3

    @property
    def limit_reached_t_s(self) -> float:
        """The first sample in which the kernel's high watermark of the charge stood at the limit, s (NaN: never).
        On cgroup v1 with --memory-swap = --memory this, not the failure count, is what moves at the limit."""
        reached = self.samples.loc[self.samples["peak_bytes"] >= self.limit_bytes, "t_s"]
        return float(reached.iloc[0]) if len(reached) else float("nan")

    def witnesses(self) -> pd.DataFrame:
        """Each witness of the OOM kill, what it says and whether it saw one."""
        r = self.record
        rows = [
            ("exit code", f"{int(r['exit_code'])}", int(r["exit_code"]) == EXIT_SIGKILL),
            ("engine State.OOMKilled", str(bool(r["oom_killed"])), bool(r["oom_killed"])),
            ("engine 'oom' events", f"{int(r['oom_events'])}", int(r["oom_events"]) > 0),
            ("cgroup oom_kill counter", oom_kill_counters(r), self.oom_kills_counted > 0),
            ("kernel log", f"{int(r['kernel_memcg_kills'])} cgroup kill(s), {int(r['kernel_global_kills'])} host-wide",
             int(r["kernel_memcg_kills"]) > 0),
        ]
        return pd.DataFrame(rows, columns=["witness", "says", "saw_oom_kill"])

    @property
    def oom_kills_counted(self) -> int:
        return oom_kills_counted(self.record)

    @property
    def witnesses_agree(self) -> bool:
        return bool(self.witnesses()["saw_oom_kill"].all())

    @property
    def interval_ms(self) -> float:
        """The sampler's interval really achieved, ms."""
        return 1e3 / float(self.record["sampler_hz"])

    def event_delay_ms(self, action: str) -> float:
        """How long after the kernel's kill the engine reported `action` (``oom``, ``die``), ms; NaN if never."""
        return (_first_event_t_s(self.events, action) - float(self.record["kill_t_s"])) * 1e3

    @property
    def sampler_load(self) -> float:
        """The sampling thread's CPU time over the time it sampled (cores)."""
        return float(self.record["sampler_cpu_s"]) / float(self.samples["t_s"].iloc[-1])

    @property
    def host_available_change_mib(self) -> float:
        return float(self.record["host_available_after_bytes"] - self.record["host_available_before_bytes"]) / MIB

    def _kill_timing(self) -> str:
        r = self.record
        return (f"{self.time_to_kill_ms:.2f} ms (± {self.kill_uncertainty_ms * 1e3:.0f} µs) after the program began "
                "touching the step that crossed the limit (the kernel log's clock ran "
                f"{r['clock_offset_s'] * 1e3:.3f} ms ahead of CLOCK_MONOTONIC, measured with a marker written to "
                "/dev/kmsg, and is corrected for); the sampler, whose samples are "
                f"{self.interval_ms:.0f} ms apart, cannot show it")

    def _repeats_line(self) -> str:
        """The kill's timing and the engine's oom event over the repeats, medians with their intervals."""
        if self.repeats is None or len(self.repeats) < 2:
            return ""
        runs = self.repeats
        to_kill = (runs["kill_t_s"] - runs["last_step_t_s"]) * 1e3
        to_event = (runs["oom_event_t_s"] - runs["kill_t_s"]) * 1e3
        (kill_low, kill_high, coverage), (event_low, event_high, _) = (median_interval(to_kill.dropna()),
                                                                      median_interval(to_event.dropna()))
        killed = int((runs["exit_code"] == EXIT_SIGKILL).sum())
        return (f" Over {len(runs)} ramps, {killed} ended in exit {EXIT_SIGKILL}; the kill came a median "
                f"{to_kill.median():.2f} ms after the last step began (interval [{kill_low:.2f}, {kill_high:.2f}] ms, "
                f"{coverage:.0%} coverage) and the engine's `oom` event a median {to_event.median():.0f} ms after the "
                f"kill ([{event_low:.0f}, {event_high:.0f}] ms).")

    def _limit_line(self) -> str:
        reached, hits = self.limit_reached_t_s, int(self.samples["limit_hits"].max())
        if pd.isna(reached):
            return "The kernel's high watermark of the charge never reached the limit."
        return (f"The first sample to show the kernel's high watermark at the limit came at t = {reached:.3f} s; "
                f"its count of charges that failed there read {hits}" + ("" if hits else
                f" (cgroup {self.record['cgroup_version']}: the memory + swap counter is charged first and fails "
                "first, and this kernel counts failures of the memory counter only)") + ".")

    def _host_line(self) -> str:
        r = self.record
        return (f"The host's MemAvailable moved by {self.host_available_change_mib:+.0f} MiB across the run "
                f"(of {r['host_available_before_bytes'] / 2**30:.1f} GiB) and the kernel logged "
                f"{int(r['kernel_global_kills'])} host-wide OOM kill(s) and {int(r['kernel_memcg_kills'])} "
                "cgroup one(s).")

    def conclusion(self, baseline: MemoryRun | None = None) -> str:
        """What this run measured, in sentences computed from its tables; a swap run compares with `baseline`."""
        r = self.record
        killed = (f"the kernel killed it at t = {r['kill_t_s']:.3f} s, {self._kill_timing()}" if self.killed
                  else f"it was not killed (exit {int(r['exit_code'])})")
        variant = r["variant"]
        if variant == "unlimited":
            return (f"**What we measured.** With no `--memory` of its own, the container touched "
                    f"{int(r['allocated_mib_last'])} MiB in {int(r['step_mib'])} MiB steps and was charged up to "
                    f"{r['sampled_peak_bytes'] / MIB:.1f} MiB — {r['sampled_peak_bytes'] / self.limit_bytes:.0%} of "
                    f"the {self.limit_bytes / MIB:.0f} MiB its parent group allows; {killed}. Nothing in the "
                    "container stopped it: only the parent's limit did. Here the parent is a labkit group standing "
                    "in for the host; without it the ceiling would have been the host's own memory, and the "
                    f"OOM killer would have chosen among all its processes. {self._host_line()}")
        witnesses = self.witnesses()
        agree = ("All five witnesses saw the OOM kill." if self.witnesses_agree else
                 "Not every witness saw it: " + ", ".join(witnesses.loc[~witnesses["saw_oom_kill"], "witness"])
                 + " did not.")
        if variant == "swap" and baseline is not None:
            same = int(r["allocated_mib_last"]) == int(baseline.record["allocated_mib_last"])
            read_back = ("memory.memsw.limit_in_bytes − memory.limit_in_bytes" if r["cgroup_version"] == "v1"
                         else "memory.swap.max")
            where = ("so there was nowhere to put it" if int(r["host_swap_bytes"]) == 0
                     else "which the container could have used")
            return (f"**What we measured.** `--memory-swap {r['memory_swap_bytes'] / MIB:.0f}m` made the kernel "
                    f"allow {r['swap_limit_read_bytes'] / MIB:.0f} MiB of swap on top of the "
                    f"{self.limit_bytes / MIB:.0f} MiB ({read_back}, cgroup {r['cgroup_version']}). This host has "
                    f"{r['host_swap_bytes'] / MIB:.0f} MiB of swap, {where}: the "
                    f"container was killed after touching {int(r['allocated_mib_last'])} MiB, "
                    + ("exactly as without swap" if same else "against "
                       f"{int(baseline.record['allocated_mib_last'])} MiB without swap")
                    + f" (exit {int(r['exit_code'])}). {agree} {self._limit_line()}")
        return (f"**What we measured.** The container touched {int(r['allocated_mib_last'])} MiB in "
                f"{int(r['step_mib'])} MiB steps; the kernel charged it at most {r['sampled_peak_bytes'] / MIB:.2f} "
                f"MiB (sampled) against its {self.limit_bytes / MIB:.0f} MiB limit, and {killed}. "
                f"{self._limit_line()} The engine's "
                f"`oom` event came {self.event_delay_ms('oom'):.0f} ms after the kernel's log line and `die` "
                f"{self.event_delay_ms('die'):.0f} ms after. {agree} {self._host_line()} The sampler took "
                f"{r['sampler_hz']:.0f} samples/s at {r['sample_cost_s'] * 1e3:.2f} ms per sample, costing "
                f"{self.sampler_load:.1%} of a core." + self._repeats_line())

    @property
    def touched(self) -> pd.DataFrame:
        """The program's own report of what it had touched: t_s, allocated_mib (one row per step done)."""
        return self.steps[self.steps["event"] == "alloc"]

    @property
    def has_pressure(self) -> bool:
        """Whether the group kept pressure stall information (v2 memory.pressure; not on v1)."""
        return bool(self.samples["pressure_some_s"].notna().any())

    def pressure_note(self) -> str:
        """What the group's memory pressure (PSI) said during the climb, from the samples."""
        if not self.has_pressure:
            return (f"**Memory pressure.** This host's memory controller is cgroup {self.record['cgroup_version']}, "
                    "which keeps no pressure stall information per group, so the climb is seen through its charge "
                    "alone. On cgroup v2 `memory.pressure` counts the time the group's tasks stalled waiting for "
                    "memory (reclaim, refaults); `labkit guest run 07` draws it in the lab machine of notebook 15.")
        kept = self.samples.dropna(subset=["pressure_some_s"])
        window = float(kept["t_s"].iloc[-1] - kept["t_s"].iloc[0])
        some, full = (float(kept[c].iloc[-1] - kept[c].iloc[0]) for c in ("pressure_some_s", "pressure_full_s"))
        at_limit = kept[kept["t_s"] >= self.limit_reached_t_s] if not pd.isna(self.limit_reached_t_s) else kept[:0]
        share = (float(at_limit["pressure_some_s"].iloc[-1] - at_limit["pressure_some_s"].iloc[0]) / some
                 if len(at_limit) > 1 and some > 0 else float("nan"))
        where = ("" if pd.isna(share) else
                 f" {share:.0%} of that stall time came after the charge first stood at the limit "
                 f"(t = {self.limit_reached_t_s:.2f} s), while the kernel reclaimed what it could before killing.")
        return (f"**Memory pressure (PSI), cgroup {self.record['cgroup_version']}.** Over the {window:.2f} s sampled, "
                f"some of the group's tasks stalled waiting for memory for **{some * 1e3:.1f} ms** in all "
                f"({some / window:.1%} of the time) and all of them for {full * 1e3:.1f} ms.{where} PSI is read "
                f"from `memory.pressure` at each sample ({self.interval_ms:.0f} ms apart): a stall shorter than "
                "that shows up only as a jump between two samples.")

    @property
    def marks(self) -> dict[str, float]:
        """When the step that crossed the limit began and when the kernel logged the kill (s; NaN: none)."""
        r = self.record
        return {"the last step began": float(r["last_step_t_s"]) if self.killed else float("nan"),
                "OOM kill (kernel log)": float(r["kill_t_s"])}


def _memory_experiment(rig: StressRig, variant: str, *, own_limit: Limits | None, memory_swap_bytes: int | None,
                       fence_bytes: int, step_mib: int, step_interval_ms: int, sample_hz: float
                       ) -> dict[str, pd.DataFrame]:
    """Run the ``mem`` ramp once below a fence of `fence_bytes` and gather every witness."""
    max_mib = 4 * fence_bytes // MIB  # never reached: a limit stops it first (the fence at the latest)
    fence_limits = Limits(fence_bytes, PIDS_LIMIT, CPUS)
    container_limits = own_limit or fence_limits
    options: dict[str, Any] = {"mem_limit": own_limit.memory_bytes if own_limit else 0}
    if memory_swap_bytes is not None:
        options["memswap_limit"] = memory_swap_bytes
    before = procfs.read_meminfo()
    start_monotonic_s, start_unix_s = time.monotonic(), time.time()
    started = time.perf_counter()
    with rig.fence(variant, fence_limits) as (fence, parent), \
            rig.container(["mem", str(step_mib), str(step_interval_ms), str(max_mib)], stem=f"mem-{variant}",
                          limits=container_limits, parent=parent, **options) as container:
        group = rig.group_of(container)
        swap_read = group.swap_max_bytes() if memory_swap_bytes is not None else None
        # the container's own group: the kernel counts an OOM kill in the victim's group, and sampling ends by
        # itself when the group vanishes with the container
        with CgroupSampler(group, 1 / sample_hz, MEMORY_READINGS, or_slower=True) as sampler:
            rig.go(container)
            exit_code, oom_killed, output = rig.finish(container)
        clock = kernel_clock()
        wall_s = time.perf_counter() - started
        events = rig.events(container, start_unix_s, sampler)
        peak = fence.memory_peak_bytes()  # the fence holds only this container: its peak is the container's
        # v2 counts a kill in the victim's group and every ancestor (memory.events is hierarchical); v1 only in the
        # victim's. The fence outlives the container: on v2 its count stands where the container's group, gone
        # with the container (a systemd scope can go before the next sample), no longer can be read.
        fence_kills = fence.memory_events().get("oom_kill", 0)
    memcg_kills, global_kills = kernel_kills(start_monotonic_s)
    after = procfs.read_meminfo()
    samples = sampler.frame()
    steps = stress.allocations(output)
    steps.insert(0, "t_s", [sampler.at(t) for t in steps.pop("t_ns")])
    touches = steps.loc[steps["event"] == "touch", "t_s"]
    outcome = {
        "variant": variant, "cgroup_version": rig.layout.version,
        "memory_limit_bytes": own_limit.memory_bytes if own_limit else np.nan,
        "memory_swap_bytes": memory_swap_bytes if memory_swap_bytes is not None else np.nan,
        "swap_limit_read_bytes": swap_read if swap_read is not None else np.nan,
        "host_swap_bytes": before.get("SwapTotal", 0), "fence_limit_bytes": fence_bytes, "step_mib": step_mib,
        "exit_code": exit_code, "oom_killed": oom_killed, "oom_events": int((events["action"] == "oom").sum()),
        "group_oom_kills": int(samples["oom_kills"].max()) if len(samples) else 0, "fence_oom_kills": fence_kills,
        "kernel_memcg_kills": memcg_kills, "kernel_global_kills": global_kills,
        "kill_t_s": kernel_kill_time(start_monotonic_s, sampler, clock), "clock_offset_s": clock.offset_s,
        "clock_uncertainty_s": clock.uncertainty_s,
        "last_step_t_s": float(touches.iloc[-1]) if len(touches) else np.nan,
        "sampled_peak_bytes": int(samples["memory_bytes"].max()), "peak_bytes": peak,
        "allocated_mib_last": int(steps.loc[steps["event"] == "alloc", "allocated_mib"].max()) if len(steps) else 0,
        "host_available_before_bytes": before["MemAvailable"], "host_available_after_bytes": after["MemAvailable"],
        "sampler_hz": sampler.achieved_hz, "sample_cost_s": sampler.sample_cost_s, "sampler_cpu_s": sampler.cpu_s,
        "wall_s": wall_s,
    }
    return {"samples": samples[list(SAMPLE_COLUMNS)], "steps": steps[list(STEP_COLUMNS)], "events": events,
            "outcome": pd.DataFrame([outcome], columns=list(OUTCOME_COLUMNS))}


def require_host_memory(lab: LabSession, limit_bytes: int, limit_name: str) -> None:
    """In a live session, refuse a limit the host's free memory cannot give: the container may fill it (swap, where
    an experiment allows it, comes from the host's swap space, which bounds it)."""
    if lab.live:
        space.require_memory({space.Size(limit_name, limit_bytes // MIB): 1})


def validate_ramp(limit_mib: object, step_mib: object, step_interval_ms: object, sample_hz: object,
                   limit_name: str = "memory_limit_mib") -> tuple[int, int, int, float]:
    """The limit (bytes), step (MiB), interval (ms) and rate (Hz) of a ramp, or BadParameter naming the culprit."""
    limit = check_memory_mib(limit_mib, limit_name)
    step = check_positive(step_mib, "step_mib", "MiB", 4)
    if step * MIB >= limit:
        raise BadParameter(f"step_mib={step_mib!r}: a step as large as the limit ({limit // MIB} MiB) leaves "
                           "nothing to ramp.", f"Choose step_mib well below {limit_name}, e.g. a sixteenth.")
    return limit, step, check_positive(step_interval_ms, "step_interval_ms", "ms", 100), check_hz(sample_hz)


def _record_memory(lab: LabSession, prefix: str, experiment: Any, **parameters: Any) -> MemoryRun:
    tables = lab.record(prefix, tuple(memory_tables(prefix)),
                        lambda: {f"{prefix}_{k}": v for k, v in experiment().items()}, **parameters)
    return MemoryRun(*(tables[f"{prefix}_{part}"] for part in ("samples", "steps", "events", "outcome")))


def run_memory_ramp(lab: LabSession, memory_limit_mib: int = 64, step_mib: int = 4, step_interval_ms: int = 100,
                    sample_hz: float = 100, repeats: int | None = None) -> MemoryRun:
    """A container with ``--memory <memory_limit_mib>m --memory-swap`` the same (no swap) touches `step_mib`
    MiB more every `step_interval_ms` ms until the kernel kills it; sampled at `sample_hz` samples per second.
    Run `repeats` times (None: once in quick mode, 5 times otherwise): the first run's tables in full, every
    run's outcome in ``ramp_repeats``."""
    limit, step, interval, hz = validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    require_host_memory(lab, limit, "memory_limit_mib")
    repeats = check_positive(by_mode(lab, repeats, 1, 5), "repeats", "ramps", 5)

    def experiment() -> dict[str, pd.DataFrame]:
        runs = []
        with stress_rig(lab) as rig:
            for _ in range(repeats):
                runs.append(_memory_experiment(rig, "ramp", own_limit=Limits(limit, PIDS_LIMIT, CPUS),
                                               memory_swap_bytes=limit, fence_bytes=2 * limit, step_mib=step,
                                               step_interval_ms=interval, sample_hz=hz))
        outcomes = [run["outcome"].assign(repeat=index, oom_event_t_s=_first_event_t_s(run["events"], "oom"))
                    for index, run in enumerate(runs)]
        return {f"ramp_{part}": table for part, table in runs[0].items()} | {
            "ramp_repeats": pd.concat(outcomes, ignore_index=True)[list(REPEAT_COLUMNS)]}

    tables = lab.record("ramp", (*memory_tables("ramp"), "ramp_repeats"), experiment,
                        memory_limit_mib=memory_limit_mib, step_mib=step_mib, step_interval_ms=step_interval_ms,
                        sample_hz=sample_hz, repeats=repeats)
    return MemoryRun(*(tables[f"ramp_{part}"] for part in ("samples", "steps", "events", "outcome", "repeats")))


def _first_event_t_s(events: pd.DataFrame, action: str) -> float:
    times = events.loc[events["action"] == action, "t_s"]
    return float(times.iloc[0]) if len(times) else float("nan")


def run_memory_swap(lab: LabSession, memory_limit_mib: int = 64, swap_mib: int = 64, step_mib: int = 4,
                    step_interval_ms: int = 100, sample_hz: float = 100) -> MemoryRun:
    """The same ramp with ``--memory-swap`` = memory + `swap_mib` MiB: what it allows on this host."""
    limit, step, interval, hz = validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    swap = check_positive(swap_mib, "swap_mib", "MiB", 64) * MIB
    require_host_memory(lab, limit, "memory_limit_mib")

    def experiment() -> dict[str, pd.DataFrame]:
        with stress_rig(lab) as rig:
            return _memory_experiment(rig, "swap", own_limit=Limits(limit, PIDS_LIMIT, CPUS),
                                      memory_swap_bytes=limit + swap, fence_bytes=2 * limit + swap, step_mib=step,
                                      step_interval_ms=interval, sample_hz=hz)

    return _record_memory(lab, "swap", experiment, memory_limit_mib=memory_limit_mib, swap_mib=swap_mib,
                          step_mib=step_mib, step_interval_ms=step_interval_ms, sample_hz=sample_hz)


def run_memory_unlimited(lab: LabSession, fence_mib: int | None = None, step_mib: int = 8,
                         step_interval_ms: int = 100, sample_hz: float = 100) -> MemoryRun:
    """A container with no ``--memory`` of its own ramps inside a labkit cgroup limited to `fence_mib` MiB (None:
    128 in quick mode, 256 otherwise) — the stand-in for a host — so "it takes all the memory there is" is shown
    without risking the real host."""
    fence_mib = by_mode(lab, fence_mib, 128, 256)
    limit, step, interval, hz = validate_ramp(fence_mib, step_mib, step_interval_ms, sample_hz, "fence_mib")
    require_host_memory(lab, limit, "fence_mib")

    def experiment() -> dict[str, pd.DataFrame]:
        with stress_rig(lab) as rig:
            return _memory_experiment(rig, "unlimited", own_limit=None, memory_swap_bytes=None, fence_bytes=limit,
                                      step_mib=step, step_interval_ms=interval, sample_hz=hz)

    return _record_memory(lab, "unlimited", experiment, fence_mib=fence_mib, step_mib=step_mib,
                          step_interval_ms=step_interval_ms, sample_hz=sample_hz)
