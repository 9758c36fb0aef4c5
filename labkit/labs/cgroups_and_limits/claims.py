"""Section 8: the chapter's claims about limits and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.instruments.limits import MIB
from labkit.labs.cgroups_and_limits.cpu import BESIDE_UNLIMITED, VICTIM_THREADS, CpuQuotaResult, NeighbourResult
from labkit.labs.cgroups_and_limits.declaration import (
    CPU_TOLERANCE,
    EVICTED_BELOW,
    EXIT_SIGKILL,
    IO_TOLERANCE,
    KEPT_FROM,
    NEIGHBOUR_TOLERANCE,
)
from labkit.labs.cgroups_and_limits.io import IoResult
from labkit.labs.cgroups_and_limits.memory import MemoryRun
from labkit.labs.cgroups_and_limits.memory_neighbour import UNLIMITED, MemoryNeighbourResult
from labkit.labs.cgroups_and_limits.pids import PidsNeighbourResult, PidsResult


def check_claims(ledger: ClaimLedger, ramp: MemoryRun, unlimited: MemoryRun, cpu: CpuQuotaResult,
                 neighbour: NeighbourResult, pids: PidsResult, memory_neighbour: MemoryNeighbourResult,
                 io: IoResult, pids_neighbour: PidsNeighbourResult) -> None:
    """The chapter's claims about limits and our findings beyond them, each with a criterion and a verdict computed
    from the measurements."""
    r = ramp.record
    ledger.check(
        "oom.exit_137", value=float(r["exit_code"]),
        measured=f"exit {int(r['exit_code'])}; OOMKilled {bool(r['oom_killed'])}; {int(r['oom_events'])} engine oom "
                 f"event(s); cgroup oom_kill {ramp.oom_kills_counted}; kernel log {int(r['kernel_memcg_kills'])} "
                 "cgroup kill(s)",
        verdict=verdict(ramp.killed, caveat=not ramp.witnesses_agree),
        caveat="" if ramp.witnesses_agree else "not every witness saw the kill", exit_sigkill=EXIT_SIGKILL)

    step_mib, touched_mib, limit_mib = int(r["step_mib"]), int(r["allocated_mib_last"]), ramp.limit_bytes / MIB
    stopped_at_limit = ramp.killed and touched_mib < limit_mib <= touched_mib + step_mib
    contained = int(r["kernel_memcg_kills"]) >= 1 and int(r["kernel_global_kills"]) == 0
    ledger.check(
        "limits.memory", value=float(r["sampled_peak_bytes"]) / ramp.limit_bytes,
        measured=f"killed after touching {touched_mib} MiB in {step_mib} MiB steps under {limit_mib:.0f} MiB; "
                 f"charged at most {r['sampled_peak_bytes'] / MIB:.2f} MiB (sampled); "
                 f"{int(r['kernel_memcg_kills'])} cgroup OOM kill(s), {int(r['kernel_global_kills'])} host-wide",
        verdict=verdict(bool(stopped_at_limit and contained)))

    free_cores = float(cpu.summary.loc[cpu.summary["quota_cores"].isna(), "cpu_cores"].iloc[0])
    quotas = cpu.summary.dropna(subset=["quota_cores"])
    testable = quotas[quotas["quota_cores"] <= free_cores * (1 - CPU_TOLERANCE)]  # the host could give more
    worst = float((testable["rate_over_quota"] - 1).abs().max()) if len(testable) else float("nan")
    untested = ", ".join(f"--cpus {q:g}" for q in quotas.loc[~quotas.index.isin(testable.index), "quota_cores"])
    ledger.check(
        "limits.cpus", value=worst,
        measured="; ".join(f"{q.condition}: {q.cpu_cores:.3f} cores" for q in cpu.summary.itertuples()),
        verdict=(Verdict.INCONCLUSIVE if not len(testable) else
                 verdict(worst <= CPU_TOLERANCE, caveat=bool(untested))),
        caveat=(f"{untested} untested: without --cpus the program got only {free_cores:.2f} cores (other work on "
                "the host)" if untested else ""),
        cpu_tolerance=CPU_TOLERANCE)

    u = unlimited.record
    took = float(u["sampled_peak_bytes"]) / unlimited.limit_bytes
    ledger.check(
        "limits.no_memory_limit", value=took,
        measured=f"grew to {u['sampled_peak_bytes'] / MIB:.0f} MiB of the {unlimited.limit_bytes / MIB:.0f} MiB its "
                 f"parent group allowed, then exit {int(u['exit_code'])}",
        verdict=verdict(took >= 0.95 and unlimited.killed, caveat=True),
        caveat=f"shown inside a {unlimited.limit_bytes / MIB:.0f} MiB labkit cgroup standing in for the host, never "
               "against the host itself")

    share, threads = neighbour.share(BESIDE_UNLIMITED), int(neighbour.work["neighbour_threads"].max())
    ledger.check(
        "limits.noisy_neighbour", value=share,
        measured="; ".join(f"{c}: {row.cpu_share:.0%} [{row.low:.0%}, {row.high:.0%}] (expected {row.expected:.0%})"
                           for c, row in neighbour.summary.drop(index="alone").iterrows()),
        verdict=verdict(neighbour.worst_miss <= NEIGHBOUR_TOLERANCE),
        caveat="" if int(neighbour.summary["rounds"].min()) > 1 else "one round per condition: no interval",
        threads=threads, victim_threads=VICTIM_THREADS, neighbour_tolerance=NEIGHBOUR_TOLERANCE,
        per_thread_share=VICTIM_THREADS / (VICTIM_THREADS + threads))

    check_memory_neighbour(ledger, memory_neighbour)
    check_io(ledger, io)
    check_pids_neighbour(ledger, pids_neighbour)

    p = pids.record
    ledger.check(
        "limits.pids", value=float(p["forked"]),
        measured=f"{int(p['forked'])} forked, {int(p['eagain'])} EAGAIN of {int(p['attempts'])} attempts under "
                 f"--pids-limit {int(p['pids_limit'])}",
        verdict=verdict(pids.stopped_at_limit))


def check_memory_neighbour(ledger: ClaimLedger, memory_neighbour: MemoryNeighbourResult) -> None:
    """Our finding about a memory neighbour in the same parent group."""
    evicted, kept = memory_neighbour.kept(UNLIMITED), memory_neighbour.kept(memory_neighbour.limited_condition)
    ledger.check(
        "limits.memory_neighbour", value=evicted,
        measured=f"{evicted:.0%} of the victim's file still cached after the neighbour without --memory, "
                 f"{kept:.0%} after the one with {memory_neighbour.limited_condition.rsplit('with ', 1)[-1]}",
        verdict=verdict(evicted < EVICTED_BELOW and kept >= KEPT_FROM),
        caveat="the victim had stopped when the neighbour ramped: its cache was idle, the first a reclaim takes",
        evicted_below=EVICTED_BELOW, kept_from=KEPT_FROM)


def check_io(ledger: ClaimLedger, io: IoResult) -> None:
    """The chapter's claim that cgroups limit IO bandwidth."""
    s = io.summary
    bps = s[s["limit_mib_per_s"].notna()]
    direct, buffered = bps[bps["direct"]].iloc[0], bps[~bps["direct"]].iloc[0]
    held = abs(direct["write_mib_per_s"] / direct["limit_mib_per_s"] - 1) <= IO_TOLERANCE
    escaped = buffered["write_mib_per_s"] > (1 + IO_TOLERANCE) * buffered["limit_mib_per_s"]
    ledger.check(
        "limits.io_bandwidth", value=float(direct["write_mib_per_s"] / direct["limit_mib_per_s"]),
        measured=f"O_DIRECT {direct['write_mib_per_s']:.2f} MiB/s and page-cache writes "
                 f"{buffered['write_mib_per_s']:,.0f} MiB/s (fsync {buffered['fsync_s']:.2f} s) under "
                 f"--device-write-bps {direct['limit_mib_per_s']:.0f}mb on a loop device",
        verdict=verdict(bool(held), caveat=bool(escaped)),
        caveat=(f"writes through the page cache ran at {buffered['write_mib_per_s'] / buffered['limit_mib_per_s']:.0f}"
                f"× the limit; only the fsync that followed ({buffered['fsync_s']:.2f} s) waited for the throttle"
                if escaped else ""),
        io_tolerance=IO_TOLERANCE)


def check_pids_neighbour(ledger: ClaimLedger, result: PidsNeighbourResult) -> None:
    """Our finding about a pids neighbour in the same parent group."""
    unlimited, limited = result.rounds()
    starved = int(unlimited["victim_forked"]) < int(unlimited["victim_attempts"])
    spared = int(limited["victim_forked"]) == int(limited["victim_attempts"])
    ledger.check(
        "limits.pids_neighbour", value=float(unlimited["victim_forked"]),
        measured=f"victim forked {int(unlimited['victim_forked'])} of {int(unlimited['victim_attempts'])} beside the "
                 f"neighbour without --pids-limit ({int(unlimited['neighbour_forked'])} forks), "
                 f"{int(limited['victim_forked'])} of {int(limited['victim_attempts'])} beside the one with "
                 f"--pids-limit {int(limited['neighbour_pids_limit'])}",
        verdict=verdict(starved and spared))
