"""Notebook 07, kernel resources: cgroup memory and the OOM killer, CPU and pids limits, graphed over time.

Every stress container runs labkit's static ``stress`` program (:mod:`labkit.instruments.stress`) under memory,
pids and CPU limits, inside a *fence*: a cgroup labkit makes per experiment (``labkit/<run_id>/<experiment>``,
itself limited) and names as the container's ``--cgroup-parent``. The fence is what keeps the host safe when an
experiment takes a container's own limit away, and it outlives the container, so its counters can be read after
the container's own group is gone. A :class:`~labkit.instruments.sampler.CgroupSampler` reads the container's
own group (found from its PID, never guessed) until the group disappears.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result whose properties and ``conclusion()`` are computed from the tables.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, verdict
from labkit.core.lab import ENGINE, ROOT, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import cgroups, containers, images, kernel_log, procfs, space, stress
from labkit.instruments.engine import Scope, info
from labkit.instruments.limits import MIB, Limits, check_cpus, check_memory_mib, check_pids
from labkit.instruments.sampler import MAX_HZ, CgroupSampler
from labkit.paths import state_dir

STEM = "07-cgroups-and-limits"
BASE = "busybox"
SECTION = "Container Pitfalls"  # the chapter's section these claims come from ("Resource limits unset")
SECTION_OOM = "Memory climbs to the limit"  # the notebook's sections of our findings
SECTION_NEIGHBOUR = "A noisy neighbour"
SECTION_PIDS = "pids: a fork loop"
PIDS_LIMIT = 64  # every stress container's pids limit unless the experiment is about pids
CPUS = 1.0  # every memory experiment's CPU limit: one core
EXIT_SIGKILL = 128 + 9  # what a shell and the engine report for a process ended by SIGKILL
CPU_TOLERANCE = 0.10  # a quota is "held" when the measured rate is within 10 % of it
SHARES_TOLERANCE = 0.15  # a shares ratio is "met" within 15 %
STARVED_BELOW = 0.5  # the victim kept less than half of its work rate: starved
RESTORED_FROM = 0.9  # the victim kept at least 90 %: as good as alone
WAIT_S = 120.0  # longest any one stress container may run before the experiment gives up

SAMPLE_COLUMNS = ("t_s", "memory_bytes", "anon_bytes", "file_bytes", "limit_hits", "oom_kills")
STEP_COLUMNS = ("t_s", "event", "allocated_mib")
EVENT_COLUMNS = ("t_s", "action", "exit_code")
OUTCOME_COLUMNS = (
    "variant", "memory_limit_bytes", "memory_swap_bytes", "swap_limit_read_bytes", "host_swap_bytes",
    "fence_limit_bytes", "step_mib", "exit_code", "oom_killed", "oom_events", "group_oom_kills",
    "kernel_memcg_kills", "kernel_global_kills", "kill_t_s", "last_step_t_s", "sampled_peak_bytes", "peak_bytes",
    "allocated_mib_last", "host_available_before_bytes", "host_available_after_bytes", "sampler_hz",
    "sample_cost_s", "sampler_cpu_s", "wall_s",
)
CPU_SAMPLE_COLUMNS = ("condition", "cpus", "t_s", "cpu_s", "nr_periods", "nr_throttled", "throttled_s")
WORK_COLUMNS = ("condition", "t_s", "work_units")
MEMORY_PREFIXES = ("ramp", "swap", "unlimited")


def _memory_tables(prefix: str) -> dict[str, tuple[str, ...]]:
    return {f"{prefix}_samples": SAMPLE_COLUMNS, f"{prefix}_steps": STEP_COLUMNS,
            f"{prefix}_events": EVENT_COLUMNS, f"{prefix}_outcome": OUTCOME_COLUMNS}


CGROUPFS = Requirement("engine", "cgroupfs", "containers below labkit-made cgroups (--cgroup-parent=/labkit/…)")


def prepare(client: docker.DockerClient) -> list[str]:
    """The static stress program (the busybox base is made by setup)."""
    return [f"stress program: {stress.build()}"]


LAB = Lab(
    stem=STEM,
    topic="Kernel resources: memory, CPU and pids limits",
    requirements=(
        ENGINE, ROOT, CGROUPFS,
        Requirement("cgroup", "memory", "memory limits, the sampler, the fences"),
        Requirement("cgroup", "cpu", "CPU quotas and shares"),
        Requirement("cgroup", "cpuacct", "CPU time per container"),
        Requirement("cgroup", "pids", "the fork-loop experiment"),
        Requirement("program", "gcc", "building the static stress program"),
        Requirement("program", "dmesg", "telling a cgroup OOM kill from a host-wide one"),
    ),
    bases=(BASE,),
    tables={
        **{name: cols for prefix in MEMORY_PREFIXES for name, cols in _memory_tables(prefix).items()},
        "page_cache_samples": SAMPLE_COLUMNS,
        "page_cache_reads": ("t_s", "pass", "bytes"),
        "page_cache_outcome": ("memory_limit_bytes", "file_bytes", "passes", "exit_code", "oom_killed",
                               "peak_bytes", "max_anon_bytes", "max_file_bytes", "bytes_read", "limit_hits", "wall_s"),
        "child_oom": ("memory_limit_bytes", "exit_code", "oom_killed", "oom_events", "group_oom_kills",
                      "kernel_memcg_kills", "child_signal", "child_exit", "pid1_survived"),
        "cpu_samples": CPU_SAMPLE_COLUMNS,
        "cpu_work": WORK_COLUMNS,
        "shares_samples": ("container", "shares", "t_s", "cpu_s"),
        "shares_work": ("container", "shares", "t_s", "work_units"),
        "neighbour_work": ("condition", "neighbour_threads", "t_s", "work_units"),
        "pids": ("pids_limit", "attempts", "forked", "eagain", "other", "pids_current", "pids_limit_hits",
                 "host_processes_before", "host_processes_during", "host_processes_after", "stop_s", "exit_code"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
    headline="limits.memory",
)


# ---------------------------------------------------------------- shared machinery


def _check_hz(sample_hz: object) -> float:
    if isinstance(sample_hz, bool) or not isinstance(sample_hz, int | float) or not 0 < sample_hz <= MAX_HZ:
        raise BadParameter(f"sample_hz={sample_hz!r}: a sampling rate is a number of samples per second.",
                           f"Give a number in (0, {MAX_HZ:.0f}], e.g. 100.")
    return float(sample_hz)


def _check_positive(value: object, name: str, unit: str, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadParameter(f"{name}={value!r}: a whole number of {unit} ≥ 1 is needed.", f"E.g. {name}={example}.")
    return value


def _cores() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class _Rig:
    """What every live experiment needs: the engine, a scope, the image, the stress binary and the layout."""

    lab: LabSession
    scope: Scope
    image: str
    binary: Path
    layout: cgroups.CgroupLayout

    @property
    def client(self) -> docker.DockerClient:
        return self.lab.engine

    @contextlib.contextmanager
    def fence(self, name: str, limits: Limits) -> Iterator[tuple[cgroups.Cgroup, str]]:
        """A labkit cgroup under `limits` for containers to run below; yields it and the ``--cgroup-parent``
        value. Removed from every hierarchy afterwards (runc adds the containers' groups in all of them)."""
        relpath = f"labkit/{self.lab.run_id}/{name}"
        group = self.layout.create(relpath, limits)
        try:
            yield group, "/" + relpath
        finally:
            everywhere = self.layout.everywhere(relpath)
            everywhere.kill_all()
            everywhere.remove()

    @contextlib.contextmanager
    def container(self, argv: Sequence[str], *, stem: str, limits: Limits, parent: str, wait: bool = True,
                  volumes: dict[str, dict[str, str]] | None = None, **options: Any) -> Iterator[Any]:
        """The stress program running `argv` below `parent`, under `limits` (options override them), with
        `volumes` mounted beside it. With `wait` it holds still until :meth:`go`, so a sampler can start first."""
        command = [stress.IN_CONTAINER, *(["wait"] if wait else []), *argv]
        with containers.running(self.client, self.scope, self.image, command, stem=stem,
                                limits=limits, cgroup_parent=parent,
                                volumes={**stress.volume(self.binary), **(volumes or {})}, **options) as container:
            yield container

    def go(self, container: Any) -> None:
        """Release a program started with ``wait`` once it says it is ready (SIGUSR1 blocked: not lost)."""
        deadline = time.monotonic() + WAIT_S
        while b"ready " not in container.logs():
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                raise RuntimeError(f"the stress program never got ready ({container.status}): "
                                   f"{container.logs().decode()[-300:]}")
            time.sleep(0.005)  # polling the program's output for its ready line
        container.kill(signal="SIGUSR1")

    def group_of(self, container: Any) -> cgroups.Cgroup:
        return self.layout.of_process(containers.host_pid(self.client, container.id))

    def finish(self, container: Any) -> tuple[int, bool, str]:
        """Wait for `container` to end: its exit code, the engine's State.OOMKilled, and its output."""
        exit_code = int(container.wait(timeout=WAIT_S)["StatusCode"])
        state = self.client.api.inspect_container(container.id)["State"]
        return exit_code, bool(state.get("OOMKilled")), container.logs().decode()

    def events(self, container: Any, since_unix_s: float, sampler: CgroupSampler) -> pd.DataFrame:
        """The engine's events for `container` from `since_unix_s` until now, on the sampler's axis."""
        rows = []
        for event in self.client.api.events(since=f"{since_unix_s:.9f}", until=f"{time.time():.9f}",
                                            filters={"container": container.id}, decode=True):
            attributes = event.get("Actor", {}).get("Attributes", {})
            rows.append({"t_s": sampler.at(int(event["timeNano"]), "wall"), "action": event.get("Action", ""),
                         "exit_code": float(attributes["exitCode"]) if "exitCode" in attributes else np.nan})
        return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


@contextlib.contextmanager
def _rig(lab: LabSession) -> Iterator[_Rig]:
    lab.require_root("making cgroups and reading containers' cgroups")
    driver = info(lab.engine).cgroup_driver
    if driver != CGROUPFS.name:
        raise HostUnsupported(
            f"this engine uses the {driver!r} cgroup driver; notebook 07 puts its containers below labkit-made "
            f"cgroups with --cgroup-parent=/labkit/…, which needs the {CGROUPFS.name} driver.",
            "Replay the recorded results (mode='replay'), or run dockerd with "
            "`--exec-opt native.cgroupdriver=cgroupfs` on a test machine.")
    layout = cgroups.CgroupLayout.from_system()
    image = images.require_base(lab.engine, BASE).tag
    binary = stress.build()
    with lab.scope() as scope:
        yield _Rig(lab, scope, image, binary, layout)


def _kernel_kills(since_monotonic_s: float) -> tuple[int, int]:
    """OOM kills the kernel logged since a CLOCK_MONOTONIC instant: (in a memory cgroup, host-wide)."""
    kills = [k for k in kernel_log.parse_oom_kills(kernel_log.read()) if k.at_s >= since_monotonic_s]
    return sum(k.scope == "memcg" for k in kills), sum(k.scope == "global" for k in kills)


def _kernel_kill_time(since_monotonic_s: float, sampler: CgroupSampler) -> float:
    """When the kernel logged the first OOM kill since an instant, on the sampler's axis (NaN: none). The log's
    time stamps come from sched_clock, which tracks CLOCK_MONOTONIC only to within a few ms."""
    kills = [k for k in kernel_log.parse_oom_kills(kernel_log.read()) if k.at_s >= since_monotonic_s]
    return sampler.at(round(kills[0].at_s * 1e9)) if kills else float("nan")


# ---------------------------------------------------------------- memory: ramp to the OOM killer


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
        clock) to the kernel's kill (the kernel log's time stamp), ms: an upper bound on the time from reaching
        the limit to the kill, give or take the few ms by which the kernel log's clock (sched_clock) and
        CLOCK_MONOTONIC differ."""
        return float(self.record["kill_t_s"] - self.record["last_step_t_s"]) * 1e3

    def witnesses(self) -> pd.DataFrame:
        """Each witness of the OOM kill, what it says and whether it saw one."""
        r = self.record
        rows = [
            ("exit code", f"{int(r['exit_code'])}", int(r["exit_code"]) == EXIT_SIGKILL),
            ("engine State.OOMKilled", str(bool(r["oom_killed"])), bool(r["oom_killed"])),
            ("engine 'oom' events", f"{int(r['oom_events'])}", int(r["oom_events"]) > 0),
            ("cgroup oom_kill counter", f"{int(r['group_oom_kills'])} (the container's group, last sample before "
             "it vanished)", int(r["group_oom_kills"]) > 0),
            ("kernel log", f"{int(r['kernel_memcg_kills'])} cgroup kill(s), {int(r['kernel_global_kills'])} host-wide",
             int(r["kernel_memcg_kills"]) > 0),
        ]
        return pd.DataFrame(rows, columns=["witness", "says", "saw_oom_kill"])

    @property
    def witnesses_agree(self) -> bool:
        return bool(self.witnesses()["saw_oom_kill"].all())

    @property
    def interval_ms(self) -> float:
        """The sampler's interval really achieved, ms."""
        return 1e3 / float(self.record["sampler_hz"])

    def event_delay_ms(self, action: str) -> float:
        """How long after the kernel's kill the engine reported `action` (``oom``, ``die``), ms; NaN if never."""
        times = self.events.loc[self.events["action"] == action, "t_s"]
        return float((times.iloc[0] - self.record["kill_t_s"]) * 1e3) if len(times) else float("nan")

    @property
    def sampler_load(self) -> float:
        """The sampling thread's CPU time over the time it sampled (cores)."""
        return float(self.record["sampler_cpu_s"]) / float(self.samples["t_s"].iloc[-1])

    @property
    def host_available_change_mib(self) -> float:
        return float(self.record["host_available_after_bytes"] - self.record["host_available_before_bytes"]) / MIB

    def _kill_timing(self) -> str:
        ttk = self.time_to_kill_ms
        when = (f"{ttk:.1f} ms after the program began touching the step that crossed the limit" if ttk >= 0 else
                f"{-ttk:.1f} ms before the program's own time stamp for the step that crossed the limit — the kernel "
                "log's clock (sched_clock) and CLOCK_MONOTONIC differ by a few ms, which is as fine as these two "
                "clocks can resolve it")
        return f"{when}; the sampler, whose samples are {self.interval_ms:.0f} ms apart, cannot show it"

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
            return (f"**What we measured.** `--memory-swap {r['memory_swap_bytes'] / MIB:.0f}m` made the kernel "
                    f"allow {r['swap_limit_read_bytes'] / MIB:.0f} MiB of swap on top of the "
                    f"{self.limit_bytes / MIB:.0f} MiB (memory.memsw.limit_in_bytes − memory.limit_in_bytes). This "
                    f"host has {r['host_swap_bytes'] / MIB:.0f} MiB of swap, so there was nowhere to put it: the "
                    f"container was killed after touching {int(r['allocated_mib_last'])} MiB, "
                    + ("exactly as without swap" if same else "against "
                       f"{int(baseline.record['allocated_mib_last'])} MiB without swap")
                    + f" (exit {int(r['exit_code'])}). {agree} On cgroup v2 the same flag writes "
                    "memory.swap.max (swap alone, not memory + swap).")
        return (f"**What we measured.** The container touched {int(r['allocated_mib_last'])} MiB in "
                f"{int(r['step_mib'])} MiB steps; the kernel charged it at most {r['sampled_peak_bytes'] / MIB:.2f} "
                f"MiB (sampled) against its {self.limit_bytes / MIB:.0f} MiB limit, and {killed}. The engine's "
                f"`oom` event came {self.event_delay_ms('oom'):.0f} ms after the kernel's log line and `die` "
                f"{self.event_delay_ms('die'):.0f} ms after. {agree} {self._host_line()} The sampler took "
                f"{r['sampler_hz']:.0f} samples/s at {r['sample_cost_s'] * 1e3:.2f} ms per sample, costing "
                f"{self.sampler_load:.1%} of a core.")

    def plot(self, ax: Axes, title: str) -> Axes:
        """Memory charged over time against the limit, the program's own steps, the limit reached and the kill."""
        r = self.record
        ax.plot(self.samples["t_s"], self.samples["memory_bytes"] / MIB, label="charged to the container (sampled)")
        touched = self.steps[self.steps["event"] == "alloc"]
        ax.step(touched["t_s"], touched["allocated_mib"], where="post", linestyle=":",
                label="touched by the program (its own report)")
        ax.axhline(self.limit_bytes / MIB, color="black", linewidth=1, label=f"limit {self.limit_bytes / MIB:.0f} MiB")
        if not pd.isna(r["last_step_t_s"]) and self.killed:
            ax.axvline(r["last_step_t_s"], color="tab:orange", linestyle="--", label="the last step began")
        if not pd.isna(r["kill_t_s"]):
            ax.axvline(r["kill_t_s"], color="tab:red", label="OOM kill (kernel log)")
        ax.set_xlabel("time since sampling started (s)")
        ax.set_ylabel("MiB")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize="small")
        return ax


def _memory_experiment(rig: _Rig, variant: str, *, own_limit: Limits | None, memory_swap_bytes: int | None,
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
        with CgroupSampler(group, 1 / sample_hz, ("memory", "memory_split", "memory_events")) as sampler:
            rig.go(container)
            exit_code, oom_killed, output = rig.finish(container)
        wall_s = time.perf_counter() - started
        events = rig.events(container, start_unix_s, sampler)
        peak = fence.memory_peak_bytes()  # the fence holds only this container: its peak is the container's
    memcg_kills, global_kills = _kernel_kills(start_monotonic_s)
    after = procfs.read_meminfo()
    samples = sampler.frame()
    steps = stress.allocations(output)
    steps.insert(0, "t_s", [sampler.at(t) for t in steps.pop("t_ns")])
    touches = steps.loc[steps["event"] == "touch", "t_s"]
    outcome = {
        "variant": variant, "memory_limit_bytes": own_limit.memory_bytes if own_limit else np.nan,
        "memory_swap_bytes": memory_swap_bytes if memory_swap_bytes is not None else np.nan,
        "swap_limit_read_bytes": swap_read if swap_read is not None else np.nan,
        "host_swap_bytes": before.get("SwapTotal", 0), "fence_limit_bytes": fence_bytes, "step_mib": step_mib,
        "exit_code": exit_code, "oom_killed": oom_killed, "oom_events": int((events["action"] == "oom").sum()),
        "group_oom_kills": int(samples["oom_kills"].max()) if len(samples) else 0,
        "kernel_memcg_kills": memcg_kills, "kernel_global_kills": global_kills,
        "kill_t_s": _kernel_kill_time(start_monotonic_s, sampler),
        "last_step_t_s": float(touches.iloc[-1]) if len(touches) else np.nan,
        "sampled_peak_bytes": int(samples["memory_bytes"].max()), "peak_bytes": peak,
        "allocated_mib_last": int(steps.loc[steps["event"] == "alloc", "allocated_mib"].max()) if len(steps) else 0,
        "host_available_before_bytes": before["MemAvailable"], "host_available_after_bytes": after["MemAvailable"],
        "sampler_hz": sampler.achieved_hz, "sample_cost_s": sampler.sample_cost_s, "sampler_cpu_s": sampler.cpu_s,
        "wall_s": wall_s,
    }
    return {"samples": samples[list(SAMPLE_COLUMNS)], "steps": steps[list(STEP_COLUMNS)], "events": events,
            "outcome": pd.DataFrame([outcome], columns=list(OUTCOME_COLUMNS))}


def _require_host_memory(lab: LabSession, limit_bytes: int, limit_name: str) -> None:
    """In a live session, refuse a limit the host's free memory cannot give: the container may fill it (swap, where
    an experiment allows it, comes from the host's swap space, which bounds it)."""
    if lab.live:
        space.require_memory({space.Size(limit_name, limit_bytes // MIB): 1})


def _validate_ramp(limit_mib: object, step_mib: object, step_interval_ms: object, sample_hz: object,
                   limit_name: str = "memory_limit_mib") -> tuple[int, int, int, float]:
    """The limit (bytes), step (MiB), interval (ms) and rate (Hz) of a ramp, or BadParameter naming the culprit."""
    limit = check_memory_mib(limit_mib, limit_name)
    step = _check_positive(step_mib, "step_mib", "MiB", 4)
    if step * MIB >= limit:
        raise BadParameter(f"step_mib={step_mib!r}: a step as large as the limit ({limit // MIB} MiB) leaves "
                           "nothing to ramp.", f"Choose step_mib well below {limit_name}, e.g. a sixteenth.")
    return limit, step, _check_positive(step_interval_ms, "step_interval_ms", "ms", 100), _check_hz(sample_hz)


def _record_memory(lab: LabSession, prefix: str, experiment: Any, **parameters: Any) -> MemoryRun:
    tables = lab.record(prefix, tuple(_memory_tables(prefix)),
                        lambda: {f"{prefix}_{k}": v for k, v in experiment().items()}, **parameters)
    return MemoryRun(*(tables[f"{prefix}_{part}"] for part in ("samples", "steps", "events", "outcome")))


def run_memory_ramp(lab: LabSession, memory_limit_mib: int = 64, step_mib: int = 4, step_interval_ms: int = 100,
                    sample_hz: float = 100) -> MemoryRun:
    """A container with ``--memory <memory_limit_mib>m --memory-swap`` the same (no swap) touches `step_mib`
    MiB more every `step_interval_ms` ms until the kernel kills it; sampled at `sample_hz` samples per second."""
    limit, step, interval, hz = _validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    _require_host_memory(lab, limit, "memory_limit_mib")

    def experiment() -> dict[str, pd.DataFrame]:
        with _rig(lab) as rig:
            return _memory_experiment(rig, "ramp", own_limit=Limits(limit, PIDS_LIMIT, CPUS),
                                      memory_swap_bytes=limit, fence_bytes=2 * limit, step_mib=step,
                                      step_interval_ms=interval, sample_hz=hz)

    return _record_memory(lab, "ramp", experiment, memory_limit_mib=memory_limit_mib, step_mib=step_mib,
                          step_interval_ms=step_interval_ms, sample_hz=sample_hz)


def run_memory_swap(lab: LabSession, memory_limit_mib: int = 64, swap_mib: int = 64, step_mib: int = 4,
                    step_interval_ms: int = 100, sample_hz: float = 100) -> MemoryRun:
    """The same ramp with ``--memory-swap`` = memory + `swap_mib` MiB: what it allows on this host."""
    limit, step, interval, hz = _validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    swap = _check_positive(swap_mib, "swap_mib", "MiB", 64) * MIB
    _require_host_memory(lab, limit, "memory_limit_mib")

    def experiment() -> dict[str, pd.DataFrame]:
        with _rig(lab) as rig:
            return _memory_experiment(rig, "swap", own_limit=Limits(limit, PIDS_LIMIT, CPUS),
                                      memory_swap_bytes=limit + swap, fence_bytes=2 * limit + swap, step_mib=step,
                                      step_interval_ms=interval, sample_hz=hz)

    return _record_memory(lab, "swap", experiment, memory_limit_mib=memory_limit_mib, swap_mib=swap_mib,
                          step_mib=step_mib, step_interval_ms=step_interval_ms, sample_hz=sample_hz)


def run_memory_unlimited(lab: LabSession, fence_mib: int = 128, step_mib: int = 8, step_interval_ms: int = 100,
                         sample_hz: float = 100) -> MemoryRun:
    """A container with no ``--memory`` of its own ramps inside a labkit cgroup limited to `fence_mib` MiB — the
    stand-in for a host — so "it takes all the memory there is" is shown without risking the real host."""
    limit, step, interval, hz = _validate_ramp(fence_mib, step_mib, step_interval_ms, sample_hz, "fence_mib")
    _require_host_memory(lab, limit, "fence_mib")

    def experiment() -> dict[str, pd.DataFrame]:
        with _rig(lab) as rig:
            return _memory_experiment(rig, "unlimited", own_limit=None, memory_swap_bytes=None, fence_bytes=limit,
                                      step_mib=step, step_interval_ms=interval, sample_hz=hz)

    return _record_memory(lab, "unlimited", experiment, fence_mib=fence_mib, step_mib=step_mib,
                          step_interval_ms=step_interval_ms, sample_hz=sample_hz)


# ---------------------------------------------------------------- page cache


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
                f"{r['max_anon_bytes'] / MIB:.1f} MiB. {outcome}: at the limit the kernel dropped clean cache pages "
                "(they can be read again from disk) instead of killing anything. A container's memory usage "
                "near its limit is therefore not, by itself, a leak: read anon against file in memory.stat.")

    def plot(self, ax: Axes) -> Axes:
        """Anonymous memory and page cache over time against the limit, the end of each pass marked."""
        mib = self.samples[["anon_bytes", "file_bytes"]] / MIB
        ax.stackplot(self.samples["t_s"], mib["anon_bytes"], mib["file_bytes"], labels=["anonymous", "page cache"],
                     alpha=0.8)
        ax.axhline(self.record["memory_limit_bytes"] / MIB, color="black", linewidth=1, label="limit")
        for t in self.reads["t_s"]:
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("time since sampling started (s)  (dotted: a pass through the file ended)")
        ax.set_ylabel("MiB")
        ax.set_title(f"Reading a {self.record['file_bytes'] / MIB:.0f} MiB file under a "
                     f"{self.record['memory_limit_bytes'] / MIB:.0f} MiB limit")
        ax.legend(loc="upper left", fontsize="small")
        return ax


def _cold_file_folder() -> Path:
    return state_dir() / "07"


def _cold_file(size_bytes: int) -> Path:
    """A file of `size_bytes` zero bytes in labkit's state folder, written out and dropped from the page cache
    (so the container's reads fault it in and are charged to the container)."""
    path = _cold_file_folder() / f"page-cache-{os.getpid()}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(MIB)
    with open(path, "wb") as f:
        for _ in range(size_bytes // MIB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def run_page_cache(lab: LabSession, memory_limit_mib: int = 64, file_mib: int = 256, passes: int = 2,
                   sample_hz: float = 100) -> PageCacheResult:
    """A container under ``--memory <memory_limit_mib>m`` reads a `file_mib` MiB file (bind-mounted read-only,
    cold in the page cache) `passes` times; sampled at `sample_hz`."""
    limit = check_memory_mib(memory_limit_mib, "memory_limit_mib")
    size = _check_positive(file_mib, "file_mib", "MiB", 256) * MIB
    passes = _check_positive(passes, "passes", "passes", 2)
    hz = _check_hz(sample_hz)
    _require_host_memory(lab, limit, "memory_limit_mib")
    if lab.live:  # the file is written once, in the folder _cold_file writes it to, and bind-mounted from there
        space.require_disk((_cold_file_folder(), {space.Size("file_mib", size // MIB): 1}))

    def experiment() -> dict[str, pd.DataFrame]:
        limits = Limits(limit, PIDS_LIMIT, CPUS)
        with _rig(lab) as rig:
            path = _cold_file(size)
            try:
                started = time.perf_counter()
                with rig.fence("page-cache", Limits(2 * limit, PIDS_LIMIT, CPUS)) as (_, parent), \
                        rig.container(["read", "/data/file", str(passes)], stem="page-cache", limits=limits,
                                      parent=parent, memswap_limit=limit,
                                      volumes={str(path): {"bind": "/data/file", "mode": "ro"}}) as container:
                    group = rig.group_of(container)
                    with CgroupSampler(group, 1 / hz, ("memory", "memory_split", "memory_events")) as sampler:
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
                   "limit_hits": int(samples["limit_hits"].max()), "wall_s": wall_s}
        return {"page_cache_samples": samples[list(SAMPLE_COLUMNS)], "page_cache_reads": reads,
                "page_cache_outcome": pd.DataFrame([outcome])}

    tables = lab.record("page_cache", ("page_cache_samples", "page_cache_reads", "page_cache_outcome"), experiment,
                        memory_limit_mib=memory_limit_mib, file_mib=file_mib, passes=passes, sample_hz=sample_hz)
    return PageCacheResult(tables["page_cache_samples"], tables["page_cache_reads"], tables["page_cache_outcome"])


# ---------------------------------------------------------------- a child over the limit, PID 1 survives


@dataclass(frozen=True)
class ChildOomResult:
    """`record`: one row — memory_limit_bytes, exit_code (PID 1's), oom_killed (the engine's flag), oom_events,
    group_oom_kills, kernel_memcg_kills, child_signal (what ended the child; 0: it exited), child_exit,
    pid1_survived."""

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
                f"{int(r['kernel_memcg_kills'])} cgroup OOM kill(s) and the group's oom_kill counter "
                f"{int(r['group_oom_kills'])} — while PID 1 lived on and exited {int(r['exit_code'])}. The engine "
                f"{flag} ({int(r['oom_events'])} `oom` event(s)): on this engine the flag records that the "
                "container's cgroup had an OOM kill, not that its main process died of one, so exit code "
                f"{int(r['exit_code'])} and OOMKilled = {bool(r['oom_killed'])} can come together. Check both. "
                "On cgroup v2 with `memory.oom.group = 1` the kernel would kill every process in the group, PID 1 "
                "included, and the container would exit 137; this host is cgroup v1, so that is not measured here.")


def run_child_oom(lab: LabSession, memory_limit_mib: int = 64, step_mib: int = 4, step_interval_ms: int = 50,
                  sample_hz: float = 100) -> ChildOomResult:
    """PID 1 forks a child that ramps past ``--memory <memory_limit_mib>m``; PID 1 reports how the child ended
    and exits 0 itself. What do the exit code and the engine's OOMKilled say then?"""
    limit, step, interval, hz = _validate_ramp(memory_limit_mib, step_mib, step_interval_ms, sample_hz)
    _require_host_memory(lab, limit, "memory_limit_mib")

    def experiment() -> pd.DataFrame:
        limits = Limits(limit, PIDS_LIMIT, CPUS)
        start_monotonic_s, start_unix_s = time.monotonic(), time.time()
        with _rig(lab) as rig, rig.fence("child-oom", Limits(2 * limit, PIDS_LIMIT, CPUS)) as (_, parent), \
                rig.container(["child-mem", str(step), str(interval), str(4 * limit // MIB)], stem="child-oom",
                              limits=limits, parent=parent, memswap_limit=limit) as container:
            with CgroupSampler(rig.group_of(container), 1 / hz, ("memory", "memory_events")) as sampler:
                rig.go(container)
                exit_code, oom_killed, output = rig.finish(container)
            events = rig.events(container, start_unix_s, sampler)
        memcg_kills, _ = _kernel_kills(start_monotonic_s)
        child = stress.child_end(output) or {"signal": -1, "exit": -1}
        return pd.DataFrame([{
            "memory_limit_bytes": limit, "exit_code": exit_code, "oom_killed": oom_killed,
            "oom_events": int((events["action"] == "oom").sum()),
            "group_oom_kills": int(sampler.frame()["oom_kills"].max()), "kernel_memcg_kills": memcg_kills,
            "child_signal": child["signal"], "child_exit": child["exit"], "pid1_survived": exit_code == 0,
        }])

    return ChildOomResult(lab.measure("child_oom", experiment, memory_limit_mib=memory_limit_mib,
                                      step_mib=step_mib, step_interval_ms=step_interval_ms, sample_hz=sample_hz))


# ---------------------------------------------------------------- CPU: quota, shares, a noisy neighbour


def _work_rate(work: pd.DataFrame, start_s: float | None = None, end_s: float | None = None) -> float:
    """Work units per second from a cumulative (t_s, work_units) table, over [start_s, end_s] (default: all of
    it), interpolating between the program's reports."""
    t, units = work["t_s"].to_numpy(float), work["work_units"].to_numpy(float)
    start = t[0] if start_s is None else start_s
    end = t[-1] if end_s is None else end_s
    return float((np.interp(end, t, units) - np.interp(start, t, units)) / (end - start))


def _cpu_rate(samples: pd.DataFrame) -> float:
    """CPU seconds per wall second (cores) from first to last sample."""
    first, last = samples.iloc[0], samples.iloc[-1]
    return float((last["cpu_s"] - first["cpu_s"]) / (last["t_s"] - first["t_s"]))


def _program_times(output: str, origin_ns: int, condition: str) -> pd.DataFrame:
    work = stress.work(output)
    return pd.DataFrame({"condition": condition, "t_s": (work["t_ns"] - origin_ns) / 1e9,
                         "work_units": work["work_units"]}, columns=list(WORK_COLUMNS))


def _shifted(frame: pd.DataFrame, sampler: CgroupSampler, origin_ns: int) -> pd.DataFrame:
    """A sampler's frame with ``t_s`` moved to seconds since the CLOCK_MONOTONIC instant `origin_ns`."""
    return frame.assign(t_s=frame["t_s"] + (sampler.started_ns - origin_ns) / 1e9)


NO_QUOTA = "no --cpus"


@dataclass(frozen=True)
class CpuQuotaResult:
    """`samples` (condition, cpus, t_s, cpu_s, nr_periods, nr_throttled, throttled_s: the container's group) and
    `work` (condition, t_s, work_units: the program's own cumulative count). ``cpus`` is NaN without a quota."""

    samples: pd.DataFrame
    work: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per condition: the quota asked (cores), the CPU rate measured (cores), their ratio, work per second
        and the share of CFS periods in which the container was throttled."""
        rows = []
        for condition, samples in self.samples.groupby("condition", sort=False):
            cpus, rate, last = samples["cpus"].iloc[0], _cpu_rate(samples), samples.iloc[-1]
            rows.append({"condition": condition, "quota_cores": cpus, "cpu_cores": rate,
                         "rate_over_quota": rate / cpus if not pd.isna(cpus) else np.nan,
                         "work_per_s": _work_rate(self.work[self.work["condition"] == condition]),
                         "throttled_periods": last["nr_throttled"] / last["nr_periods"] if last["nr_periods"] else 0.0})
        return pd.DataFrame(rows)

    @property
    def worst_deviation(self) -> float:
        """The largest |measured/quota − 1| over the conditions with a quota."""
        return float((self.summary["rate_over_quota"].dropna() - 1).abs().max())

    def conclusion(self) -> str:
        rows = self.summary
        quota = rows.dropna(subset=["quota_cores"])
        parts = [f"`{q.condition}` used {q.cpu_cores:.3f} cores ({q.rate_over_quota:.1%} of its quota, throttled in "
                 f"{q.throttled_periods:.0%} of its periods)" for q in quota.itertuples()]
        free = rows[rows["quota_cores"].isna()].iloc[0]
        return ("**What we measured.** " + "; ".join(parts) + f". Without `--cpus` the same program used "
                f"{free['cpu_cores']:.2f} cores of this host's {_cores()} and was never throttled. Work done "
                "followed the CPU: " + ", ".join(f"{r.work_per_s:.0f}" for r in rows.itertuples())
                + " work units per second in that order. The quota is a ceiling enforced every 100 ms period: "
                "the container runs until it has used its share of the period, then waits for the next one.")

    def plot(self, axes: Sequence[Axes]) -> None:
        """CPU used per sampling interval (cores) with the quota as a line; throttled periods so far."""
        for condition, samples in self.samples.groupby("condition", sort=False):
            rate = samples["cpu_s"].diff() / samples["t_s"].diff()
            line, = axes[0].plot(samples["t_s"], rate, label=str(condition))
            if not pd.isna(samples["cpus"].iloc[0]):
                axes[0].axhline(samples["cpus"].iloc[0], color=line.get_color(), linestyle=":", linewidth=1)
            axes[1].plot(samples["t_s"], samples["nr_throttled"], color=line.get_color(), label=str(condition))
        axes[0].set_ylabel("CPU used (cores)")
        axes[0].set_title("CPU used per sampling interval (dotted: the quota)")
        axes[1].set_ylabel("throttled periods so far")
        axes[1].set_title("CFS periods in which the quota ran out")
        for ax in axes:
            ax.set_xlabel("time since the container started (s)")
            ax.legend(fontsize="small")


def _check_seconds(seconds: object) -> int:
    return _check_positive(seconds, "seconds", "seconds", 3)


def run_cpu_quota(lab: LabSession, cpus: Sequence[float] = (0.5, 1.5), seconds: int = 3, threads: int = 2,
                  sample_hz: float = 10) -> CpuQuotaResult:
    """A busy program with `threads` threads runs `seconds` s under ``--cpus`` each of `cpus` (cores), then with
    no ``--cpus`` (only its fence: every core of the host); sampled at `sample_hz`."""
    cores = _cores()
    quotas = [check_cpus(c, "cpus", cores) for c in cpus]
    seconds = _check_seconds(seconds)
    threads = _check_positive(threads, "threads", "threads", 2)
    hz = _check_hz(sample_hz)

    def experiment() -> dict[str, pd.DataFrame]:
        samples: list[pd.DataFrame] = []
        work: list[pd.DataFrame] = []
        with _rig(lab) as rig:
            for quota in [*quotas, None]:
                condition = NO_QUOTA if quota is None else f"--cpus {quota:g}"
                limits = Limits(64 * MIB, PIDS_LIMIT, quota or float(cores))
                options: dict[str, Any] = {"nano_cpus": 0} if quota is None else {}
                origin = time.perf_counter_ns()
                with rig.fence(f"cpu-{len(samples)}", Limits(256 * MIB, PIDS_LIMIT, float(cores))) as (_, parent), \
                        rig.container(["cpu", str(seconds), str(threads), "100"], stem=f"cpu-{len(samples)}",
                                      limits=limits, parent=parent, **options) as container, \
                        CgroupSampler(rig.group_of(container), 1 / hz, ("cpu", "throttling")) as sampler:
                    rig.go(container)
                    _, _, output = rig.finish(container)
                frame = _shifted(sampler.frame(), sampler, origin)
                samples.append(frame.assign(condition=condition, cpus=np.nan if quota is None else quota))
                work.append(_program_times(output, origin, condition))
        return {"cpu_samples": pd.concat(samples, ignore_index=True)[list(CPU_SAMPLE_COLUMNS)],
                "cpu_work": pd.concat(work, ignore_index=True)}

    tables = lab.record("cpu_quota", ("cpu_samples", "cpu_work"), experiment, cpus=list(quotas), seconds=seconds,
                        threads=threads, sample_hz=sample_hz, cores=cores)
    return CpuQuotaResult(tables["cpu_samples"], tables["cpu_work"])


@dataclass(frozen=True)
class SharesResult:
    """Two single-threaded busy containers pinned to CPU 0 with different ``--cpu-shares``: `samples`
    (container, shares, t_s, cpu_s) and `work` (container, shares, t_s, work_units), on one time axis."""

    samples: pd.DataFrame
    work: pd.DataFrame

    @cached_property
    def window(self) -> tuple[float, float]:
        """The seconds in which both programs were running (from both their own reports)."""
        spans = self.work.groupby("container")["t_s"].agg(["min", "max"])
        return float(spans["min"].max()), float(spans["max"].min())

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per container over the common window: shares, work per second, CPU cores."""
        start, end = self.window
        rows = []
        for name, work in self.work.groupby("container", sort=False):
            samples = self.samples[self.samples["container"] == name]
            t, cpu = samples["t_s"].to_numpy(float), samples["cpu_s"].to_numpy(float)
            rows.append({"container": name, "shares": int(work["shares"].iloc[0]),
                         "work_per_s": _work_rate(work, start, end),
                         "cpu_cores": float((np.interp(end, t, cpu) - np.interp(start, t, cpu)) / (end - start))})
        return pd.DataFrame(rows)

    @property
    def shares_ratio(self) -> float:
        s = self.summary
        return float(s["shares"].iloc[0] / s["shares"].iloc[1])

    @property
    def work_ratio(self) -> float:
        s = self.summary
        return float(s["work_per_s"].iloc[0] / s["work_per_s"].iloc[1])

    @property
    def cpu_ratio(self) -> float:
        s = self.summary
        return float(s["cpu_cores"].iloc[0] / s["cpu_cores"].iloc[1])

    @property
    def within_tolerance(self) -> bool:
        return abs(self.work_ratio / self.shares_ratio - 1) <= SHARES_TOLERANCE


    def plot(self, ax: Axes) -> Axes:
        """Each container's cumulative work over time, the common window shaded."""
        for name, work in self.work.groupby("container", sort=False):
            ax.plot(work["t_s"], work["work_units"], label=str(name))
        ax.axvspan(*self.window, color="grey", alpha=0.15, label="both running")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("work units done")
        ax.set_title("Two busy containers on one CPU, --cpu-shares 2:1")
        ax.legend(fontsize="small")
        return ax

    def conclusion(self) -> str:
        start, end = self.window
        return (f"**What we measured.** Both containers on CPU 0, {end - start:.2f} s of overlap: work rates "
                f"{self.summary['work_per_s'].iloc[0]:.0f} and {self.summary['work_per_s'].iloc[1]:.0f} units/s, a "
                f"ratio of {self.work_ratio:.2f} (CPU time ratio {self.cpu_ratio:.2f}) for shares in the ratio "
                f"{self.shares_ratio:.2f} — {abs(self.work_ratio / self.shares_ratio - 1):.1%} off, "
                + ("within" if self.within_tolerance else "outside")
                + f" the {SHARES_TOLERANCE:.0%} tolerance. Shares are a weight that matters only under contention: "
                "alone, either container could use the whole CPU.")


def run_cpu_shares(lab: LabSession, shares: tuple[int, int] = (1024, 512), seconds: int = 3,
                   sample_hz: float = 10) -> SharesResult:
    """Two busy single-threaded containers, ``--cpuset-cpus 0`` both, ``--cpu-shares`` `shares`, for `seconds` s."""
    if len(shares) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in shares):
        raise BadParameter(f"shares={shares!r}: two whole numbers ≥ 2 are needed (the kernel's smallest weight).",
                           "E.g. shares=(1024, 512).")
    seconds = _check_seconds(seconds)
    hz = _check_hz(sample_hz)

    def experiment() -> dict[str, pd.DataFrame]:
        names = [f"shares={s}" for s in shares]
        limits = Limits(64 * MIB, PIDS_LIMIT, 1.0)
        origin = time.perf_counter_ns()
        with _rig(lab) as rig, rig.fence("shares", Limits(256 * MIB, PIDS_LIMIT, float(_cores()))) as (_, parent), \
                contextlib.ExitStack() as stack:
            started = [stack.enter_context(rig.container(["cpu", str(seconds), "1", "100"], stem=f"shares-{s}",
                                                         limits=limits, parent=parent, cpu_shares=s,
                                                         cpuset_cpus="0")) for s in shares]
            samplers = [stack.enter_context(CgroupSampler(rig.group_of(c), 1 / hz, ("cpu",))) for c in started]
            for container in started:
                rig.go(container)
            outputs = [rig.finish(c)[2] for c in started]
        samples = pd.concat([_shifted(s.frame(), s, origin).assign(container=n, shares=v)
                             for s, n, v in zip(samplers, names, shares, strict=True)], ignore_index=True)
        work = pd.concat([_program_times(o, origin, n).rename(columns={"condition": "container"}).assign(shares=v)
                          for o, n, v in zip(outputs, names, shares, strict=True)], ignore_index=True)
        return {"shares_samples": samples[["container", "shares", "t_s", "cpu_s"]],
                "shares_work": work[["container", "shares", "t_s", "work_units"]]}

    tables = lab.record("cpu_shares", ("shares_samples", "shares_work"), experiment, shares=list(shares),
                        seconds=seconds, sample_hz=sample_hz)
    return SharesResult(tables["shares_samples"], tables["shares_work"])


ALONE = "alone"
BESIDE_UNLIMITED = "beside an unlimited neighbour"


@dataclass(frozen=True)
class NeighbourResult:
    """`work` (condition, neighbour_threads, t_s, work_units): a single-threaded victim's work, alone (0
    neighbour threads) and beside a busy many-threaded neighbour without and with ``--cpus``."""

    work: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        rates = {c: _work_rate(w) for c, w in self.work.groupby("condition", sort=False)}
        return pd.DataFrame({"condition": list(rates), "work_per_s": list(rates.values()),
                             "of_alone": [r / rates[ALONE] for r in rates.values()]})

    def kept(self, condition: str) -> float:
        """The victim's work rate in `condition` over its rate alone."""
        return float(self.summary.set_index("condition").loc[condition, "of_alone"])

    @property
    def limited_condition(self) -> str:
        return str(self.summary["condition"].iloc[-1])


    def plot(self, ax: Axes) -> Axes:
        """The victim's work rate per condition, as a share of its rate alone."""
        summary = self.summary
        ax.bar(range(len(summary)), summary["of_alone"] * 100, color=["tab:green", "tab:red", "tab:blue"])
        ax.set_xticks(range(len(summary)), [c.replace("beside ", "beside\n") for c in summary["condition"]])
        ax.axhline(100, color="black", linewidth=1)
        ax.set_ylabel("victim's work rate (% of alone)")
        ax.set_title("A one-thread victim beside a busy neighbour")
        return ax

    def conclusion(self) -> str:
        unlimited, limited = self.kept(BESIDE_UNLIMITED), self.kept(self.limited_condition)
        threads = int(self.work["neighbour_threads"].max())
        return (f"**What we measured.** Beside a neighbour with {threads} busy threads and no `--cpus`, the "
                f"victim kept {unlimited:.0%} of the work rate it had alone; beside the same neighbour with "
                f"`{self.limited_condition.rsplit('with ', 1)[-1]}` it kept {limited:.0%}. "
                + ("That is starvation." if unlimited < STARVED_BELOW else
                   "It was slowed, not starved." if unlimited < RESTORED_FROM else
                   "It was not starved at all.")
                + " Docker gives every container its own cgroup with the same CPU weight, and the scheduler shares "
                "CPU between groups before it shares between threads: a container with many busy threads weighs no "
                "more than one with a single thread. A neighbour without limits still takes every idle cycle, "
                "and processes outside containers, memory and disk are not protected this way.")


def run_noisy_neighbour(lab: LabSession, seconds: int = 3, neighbour_threads: int | None = None,
                        neighbour_cpus: float = 0.5) -> NeighbourResult:
    """A victim (one busy thread, ``--cpus 1``) runs `seconds` s alone, then beside a neighbour with
    `neighbour_threads` busy threads (default 4 per core) and no ``--cpus``, then beside the same neighbour under
    ``--cpus <neighbour_cpus>``."""
    cores = _cores()
    seconds = _check_seconds(seconds)
    threads = _check_positive(neighbour_threads if neighbour_threads is not None else 4 * cores,
                              "neighbour_threads", "threads", 8)
    limited = check_cpus(neighbour_cpus, "neighbour_cpus", cores)

    def experiment() -> pd.DataFrame:
        conditions: dict[str, dict[str, Any] | None] = {ALONE: None, BESIDE_UNLIMITED: {"nano_cpus": 0},
                      f"beside a neighbour with --cpus {limited:g}": {"nano_cpus": round(limited * 1e9)}}
        victim_limits = Limits(64 * MIB, PIDS_LIMIT, 1.0)
        work = []
        with _rig(lab) as rig:
            for index, (condition, neighbour) in enumerate(conditions.items()):
                with rig.fence(f"neighbour-{index}", Limits(256 * MIB, 2 * PIDS_LIMIT, float(cores))) as (_, parent), \
                        contextlib.ExitStack() as stack:
                    busy = None
                    if neighbour is not None:  # busy first, so the victim starts into a loaded machine
                        busy = stack.enter_context(rig.container(["cpu", str(seconds + int(WAIT_S)), str(threads),
                                                                  "1000"], stem=f"neighbour-{index}", wait=False,
                                                                 limits=victim_limits, parent=parent, **neighbour))
                    origin = time.perf_counter_ns()
                    victim = stack.enter_context(rig.container(["cpu", str(seconds), "1", "100"],
                                                               stem=f"victim-{index}", limits=victim_limits,
                                                               parent=parent, wait=False))
                    work.append(_program_times(rig.finish(victim)[2], origin, condition)
                                .assign(neighbour_threads=0 if busy is None else threads))
                    if busy is not None and (busy.reload() or busy.status) != "running":
                        raise RuntimeError(f"the neighbour stopped before the victim finished ({busy.status}): "
                                           f"{busy.logs().decode()[-300:]}")
        return pd.concat(work, ignore_index=True)[["condition", "neighbour_threads", "t_s", "work_units"]]

    return NeighbourResult(lab.measure("neighbour_work", experiment, seconds=seconds, neighbour_threads=threads,
                                       neighbour_cpus=neighbour_cpus, cores=cores))


# ---------------------------------------------------------------- pids


@dataclass(frozen=True)
class PidsResult:
    """One row: pids_limit, attempts, forked, eagain, other (fork failures of another kind), pids_current (tasks
    in the group at the end of the loop), pids_limit_hits (pids.events max), host_processes_before/during/after,
    stop_s (``docker stop`` until exit, s) and exit_code."""

    table: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.table.iloc[0]

    @property
    def stopped_at_limit(self) -> bool:
        """PID 1 plus the children it forked fill the limit exactly, and every other attempt got EAGAIN."""
        r = self.record
        return (int(r["forked"]) + 1 == int(r["pids_limit"]) == int(r["pids_current"])
                and int(r["eagain"]) == int(r["attempts"]) - int(r["forked"]))


    def conclusion(self) -> str:
        r = self.record
        return (f"**What we measured.** Of {int(r['attempts'])} forks, {int(r['forked'])} succeeded and "
                f"{int(r['eagain'])} failed with EAGAIN ({int(r['other'])} other failures): PID 1 plus "
                f"{int(r['forked'])} children is {int(r['pids_current'])} tasks, the limit of "
                f"{int(r['pids_limit'])}; pids.events counted {int(r['pids_limit_hits'])} refusals. The host had "
                f"{int(r['host_processes_before'])} processes before, {int(r['host_processes_during'])} during and "
                f"{int(r['host_processes_after'])} after. `docker stop` took {r['stop_s'] * 1e3:.0f} ms and PID 1 "
                f"exited {int(r['exit_code'])}: it installs a SIGTERM handler (PID 1 ignores signals it has no "
                "handler for) and kills its children on the way out.")


def run_pids(lab: LabSession, pids_limit: int = 32, attempts: int = 100) -> PidsResult:
    """PID 1 forks sleeping children `attempts` times under ``--pids-limit <pids_limit>`` and counts the
    refusals; the host's process count before, during and after."""
    limit = check_pids(pids_limit, "pids_limit")
    attempts = _check_positive(attempts, "attempts", "fork attempts", 100)

    def experiment() -> pd.DataFrame:
        before = procfs.process_count()
        with _rig(lab) as rig, rig.fence("pids", Limits(128 * MIB, limit + 8, 1.0)) as (_, parent), \
                rig.container(["fork", str(attempts)], stem="pids", limits=Limits(64 * MIB, limit, 1.0),
                              parent=parent, wait=False) as container:
            deadline = time.monotonic() + WAIT_S
            while (counts := stress.fork_counts(container.logs().decode())) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fork loop did not report within {WAIT_S:.0f} s")
                time.sleep(0.02)  # polling the program's output for the line that ends its loop
            group = rig.group_of(container)
            pids_current, hits = group.pids_current(), group.pids_events().get("max", 0)
            during = procfs.process_count()
            stop_started = time.perf_counter()
            container.stop(timeout=10)
            stop_s = time.perf_counter() - stop_started
            exit_code = int(container.wait(timeout=WAIT_S)["StatusCode"])
        return pd.DataFrame([{
            "pids_limit": limit, "attempts": attempts, "forked": counts["ok"], "eagain": counts["eagain"],
            "other": counts["other"], "pids_current": pids_current, "pids_limit_hits": hits,
            "host_processes_before": before, "host_processes_during": during,
            "host_processes_after": procfs.process_count(), "stop_s": stop_s, "exit_code": exit_code,
        }])

    return PidsResult(lab.measure("pids", experiment, pids_limit=pids_limit, attempts=attempts))


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, ramp: MemoryRun, unlimited: MemoryRun, cpu: CpuQuotaResult,
                 neighbour: NeighbourResult, pids: PidsResult) -> None:
    """The chapter's claims about limits and our findings beyond them, each with a criterion and a verdict computed
    from the measurements."""
    r = ramp.record
    ledger.check(
        "oom.exit_137", source=Source.FINDING, section=SECTION_OOM,
        claim="A container the kernel kills for its memory exits with code 137 (128 + SIGKILL)",
        value=float(r["exit_code"]), unit="exit code",
        measured=f"exit {int(r['exit_code'])}; OOMKilled {bool(r['oom_killed'])}; {int(r['oom_events'])} engine oom "
                 f"event(s); cgroup oom_kill {int(r['group_oom_kills'])}; kernel log {int(r['kernel_memcg_kills'])} "
                 "cgroup kill(s)",
        criterion=f"exit code {EXIT_SIGKILL} (128 + SIGKILL); a witness that disagrees (OOMKilled, the engine's "
                  "oom event, the cgroup's oom_kill counter, the kernel log) is a caveat",
        verdict=verdict(ramp.killed, caveat=not ramp.witnesses_agree),
        caveat="" if ramp.witnesses_agree else "not every witness saw the kill", tables=("ramp_outcome",))

    within = r["sampled_peak_bytes"] <= ramp.limit_bytes
    contained = int(r["kernel_memcg_kills"]) >= 1 and int(r["kernel_global_kills"]) == 0
    ledger.check(
        "limits.memory", source=Source.CHAPTER, section=SECTION,
        claim="With --memory set, the kernel holds a container to its limit",
        value=float(r["sampled_peak_bytes"]) / ramp.limit_bytes, unit="× the limit (highest sampled charge)",
        measured=f"charged at most {r['sampled_peak_bytes'] / MIB:.2f} MiB against {ramp.limit_bytes / MIB:.0f} MiB; "
                 f"{int(r['kernel_memcg_kills'])} cgroup OOM kill(s), {int(r['kernel_global_kills'])} host-wide",
        criterion="the sampled charge never exceeds the limit, the kernel kills inside the container's cgroup, and "
                  "logs no host-wide OOM kill",
        verdict=verdict(bool(within and contained)), tables=("ramp_samples", "ramp_outcome"))

    ledger.check(
        "limits.cpus", source=Source.CHAPTER, section=SECTION,
        claim="With --cpus set, the kernel holds a container to that much CPU",
        value=cpu.worst_deviation, unit="largest |measured/quota − 1|",
        measured="; ".join(f"{q.condition}: {q.cpu_cores:.3f} cores" for q in cpu.summary.itertuples()),
        criterion=f"every quota met within {CPU_TOLERANCE:.0%} by a program that could use more",
        verdict=verdict(cpu.worst_deviation <= CPU_TOLERANCE), tables=("cpu_samples",))

    u = unlimited.record
    took = float(u["sampled_peak_bytes"]) / unlimited.limit_bytes
    ledger.check(
        "limits.no_memory_limit", source=Source.CHAPTER, section=SECTION,
        claim="A container without a memory limit can use up the host's memory",
        value=took, unit="× the parent group's limit",
        measured=f"grew to {u['sampled_peak_bytes'] / MIB:.0f} MiB of the {unlimited.limit_bytes / MIB:.0f} MiB its "
                 f"parent group allowed, then exit {int(u['exit_code'])}",
        criterion="it keeps growing until the limit above it (≥ 95 % of it) and is killed only there",
        verdict=verdict(took >= 0.95 and unlimited.killed, caveat=True),
        caveat=f"shown inside a {unlimited.limit_bytes / MIB:.0f} MiB labkit cgroup standing in for the host, never "
               "against the host itself", tables=("unlimited_samples", "unlimited_outcome"))

    kept, limited = neighbour.kept(BESIDE_UNLIMITED), neighbour.kept(neighbour.limited_condition)
    ledger.check(
        "limits.noisy_neighbour", source=Source.FINDING, section=SECTION_NEIGHBOUR,
        claim="A busy neighbour without --cpus does not starve a one-thread container: the kernel shares CPU "
              "between containers, not between their threads",
        value=kept, unit="victim's work rate beside it / alone",
        measured=f"a one-thread victim kept {kept:.0%} beside a {int(neighbour.work['neighbour_threads'].max())}-"
                 f"thread neighbour without --cpus, {limited:.0%} beside it limited",
        criterion=f"the victim keeps at least {STARVED_BELOW:.0%} of its rate alone beside the neighbour without "
                  f"--cpus (below, it is starved: does not hold); the design is a caveat, and so is a rate below "
                  f"{RESTORED_FROM:.0%} (slowed)",
        verdict=verdict(kept >= STARVED_BELOW, caveat=True),
        caveat=("slowed, not starved; " if kept < RESTORED_FROM else "")
        + "near-certain by design: the victim asks for one core, its fair share of the host's CPUs beside one "
          "neighbour; asking for more, or pinned to the neighbour's CPU, it would get less (not measured); limiting "
          f"the neighbour changed its rate from {kept:.0%} to {limited:.0%}", tables=("neighbour_work",))

    p = pids.record
    ledger.check(
        "limits.pids", source=Source.FINDING, section=SECTION_PIDS,
        claim="--pids-limit caps the processes a container can make: forks past the limit fail",
        value=float(p["forked"]), unit="children forked",
        measured=f"{int(p['forked'])} forked, {int(p['eagain'])} EAGAIN of {int(p['attempts'])} attempts under "
                 f"--pids-limit {int(p['pids_limit'])}",
        criterion="PID 1 plus its children fill the limit exactly and every further fork fails with EAGAIN",
        verdict=verdict(pids.stopped_at_limit), tables=("pids",))
