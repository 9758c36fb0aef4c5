"""Section 8: the chapter's claims about limits and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, Verdict, verdict
from labkit.instruments.limits import MIB
from labkit.labs.cgroups_and_limits.cpu import BESIDE_UNLIMITED, VICTIM_THREADS, CpuQuotaResult, NeighbourResult
from labkit.labs.cgroups_and_limits.declaration import (
    CPU_TOLERANCE,
    EVICTED_BELOW,
    EXIT_SIGKILL,
    IO_TOLERANCE,
    KEPT_FROM,
    NEIGHBOUR_TOLERANCE,
    SECTION,
    SECTION_NEIGHBOUR,
    SECTION_OOM,
    SECTION_PIDS,
    SECTION_WHAT,
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
        "oom.exit_137", source=Source.FINDING, section=SECTION_OOM,
        claim="A container the kernel kills for its memory exits with code 137 (128 + SIGKILL)",
        value=float(r["exit_code"]), unit="exit code",
        measured=f"exit {int(r['exit_code'])}; OOMKilled {bool(r['oom_killed'])}; {int(r['oom_events'])} engine oom "
                 f"event(s); cgroup oom_kill {ramp.oom_kills_counted}; kernel log {int(r['kernel_memcg_kills'])} "
                 "cgroup kill(s)",
        criterion=f"exit code {EXIT_SIGKILL} (128 + SIGKILL); a witness that disagrees (OOMKilled, the engine's "
                  "oom event, the cgroup's oom_kill counter, the kernel log) is a caveat",
        verdict=verdict(ramp.killed, caveat=not ramp.witnesses_agree),
        caveat="" if ramp.witnesses_agree else "not every witness saw the kill", tables=("ramp_outcome",))

    step_mib, touched_mib, limit_mib = int(r["step_mib"]), int(r["allocated_mib_last"]), ramp.limit_bytes / MIB
    stopped_at_limit = ramp.killed and touched_mib < limit_mib <= touched_mib + step_mib
    contained = int(r["kernel_memcg_kills"]) >= 1 and int(r["kernel_global_kills"]) == 0
    ledger.check(
        "limits.memory", source=Source.CHAPTER, section=SECTION,
        claim="With --memory set, the kernel holds a container to its limit",
        value=float(r["sampled_peak_bytes"]) / ramp.limit_bytes, unit="× the limit (highest sampled charge)",
        measured=f"killed after touching {touched_mib} MiB in {step_mib} MiB steps under {limit_mib:.0f} MiB; "
                 f"charged at most {r['sampled_peak_bytes'] / MIB:.2f} MiB (sampled); "
                 f"{int(r['kernel_memcg_kills'])} cgroup OOM kill(s), {int(r['kernel_global_kills'])} host-wide",
        criterion="the program is killed during the step that would take it past the limit (it had touched less "
                  "than the limit, and one more step reaches it), by an OOM kill inside its own cgroup, with no "
                  "host-wide OOM kill logged",
        verdict=verdict(bool(stopped_at_limit and contained)), tables=("ramp_steps", "ramp_outcome"))

    free_cores = float(cpu.summary.loc[cpu.summary["quota_cores"].isna(), "cpu_cores"].iloc[0])
    quotas = cpu.summary.dropna(subset=["quota_cores"])
    testable = quotas[quotas["quota_cores"] <= free_cores * (1 - CPU_TOLERANCE)]  # the host could give more
    worst = float((testable["rate_over_quota"] - 1).abs().max()) if len(testable) else float("nan")
    untested = ", ".join(f"--cpus {q:g}" for q in quotas.loc[~quotas.index.isin(testable.index), "quota_cores"])
    ledger.check(
        "limits.cpus", source=Source.CHAPTER, section=SECTION,
        claim="With --cpus set, the kernel holds a container to that much CPU",
        value=worst, unit="largest |measured/quota − 1| over the quotas the host could exceed",
        measured="; ".join(f"{q.condition}: {q.cpu_cores:.3f} cores" for q in cpu.summary.itertuples()),
        criterion=f"every quota below what the same program got without --cpus (less {CPU_TOLERANCE:.0%}) is met "
                  f"within {CPU_TOLERANCE:.0%}; a quota the host could not give even without --cpus is untested "
                  "(a caveat; none testable: inconclusive)",
        verdict=(Verdict.INCONCLUSIVE if not len(testable) else
                 verdict(worst <= CPU_TOLERANCE, caveat=bool(untested))),
        caveat=(f"{untested} untested: without --cpus the program got only {free_cores:.2f} cores (other work on "
                "the host)" if untested else ""), tables=("cpu_samples",))

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

    share, threads = neighbour.share(BESIDE_UNLIMITED), int(neighbour.work["neighbour_threads"].max())
    ledger.check(
        "limits.noisy_neighbour", source=Source.FINDING, section=SECTION_NEIGHBOUR,
        claim="On a shared CPU a busy neighbour without limits takes half of a container's CPU however many threads "
              "it runs, and a limit on the neighbour (--cpus, --cpu-shares) gives the container back its share",
        value=share, unit="victim's part of the pair's CPU time beside the unlimited neighbour (median)",
        measured="; ".join(f"{c}: {row.cpu_share:.0%} [{row.low:.0%}, {row.high:.0%}] (expected {row.expected:.0%})"
                           for c, row in neighbour.summary.drop(index="alone").iterrows()),
        criterion=f"pinned to one CPU with a {threads}-thread neighbour, a {VICTIM_THREADS}-thread victim gets its "
                  f"share of the pair's CPU time by group weight and quota within {NEIGHBOUR_TOLERANCE:.0%} in every "
                  "condition (50 % beside the unlimited neighbour; shared per thread it would get "
                  f"{VICTIM_THREADS / (VICTIM_THREADS + threads):.0%})",
        verdict=verdict(neighbour.worst_miss <= NEIGHBOUR_TOLERANCE),
        caveat="" if int(neighbour.summary["rounds"].min()) > 1 else "one round per condition: no interval",
        tables=("neighbour_work", "neighbour_cpu"))

    check_memory_neighbour(ledger, memory_neighbour)
    check_io(ledger, io)
    check_pids_neighbour(ledger, pids_neighbour)

    p = pids.record
    ledger.check(
        "limits.pids", source=Source.FINDING, section=SECTION_PIDS,
        claim="--pids-limit caps the processes a container can make: forks past the limit fail",
        value=float(p["forked"]), unit="children forked",
        measured=f"{int(p['forked'])} forked, {int(p['eagain'])} EAGAIN of {int(p['attempts'])} attempts under "
                 f"--pids-limit {int(p['pids_limit'])}",
        criterion="PID 1 plus its children fill the limit exactly and every further fork fails with EAGAIN",
        verdict=verdict(pids.stopped_at_limit), tables=("pids",))


def check_memory_neighbour(ledger: ClaimLedger, memory_neighbour: MemoryNeighbourResult) -> None:
    """Our finding about a memory neighbour in the same parent group."""
    evicted, kept = memory_neighbour.kept(UNLIMITED), memory_neighbour.kept(memory_neighbour.limited_condition)
    ledger.check(
        "limits.memory_neighbour", source=Source.FINDING, section=SECTION_NEIGHBOUR,
        claim="A neighbour without --memory in the same parent group takes the memory a container's page cache "
              "held; with a --memory of its own it leaves that cache alone",
        value=evicted, unit="part of the victim's cached file still cached after the unlimited neighbour",
        measured=f"{evicted:.0%} of the victim's file still cached after the neighbour without --memory, "
                 f"{kept:.0%} after the one with {memory_neighbour.limited_condition.rsplit('with ', 1)[-1]}",
        criterion=f"less than {EVICTED_BELOW:.0%} of the file stays cached beside the unlimited neighbour and at "
                  f"least {KEPT_FROM:.0%} beside the limited one",
        verdict=verdict(evicted < EVICTED_BELOW and kept >= KEPT_FROM),
        caveat="the victim had stopped when the neighbour ramped: its cache was idle, the first a reclaim takes",
        tables=("memory_neighbour",))


def check_io(ledger: ClaimLedger, io: IoResult) -> None:
    """The chapter's claim that cgroups limit IO bandwidth."""
    s = io.summary
    bps = s[s["limit_mib_per_s"].notna()]
    direct, buffered = bps[bps["direct"]].iloc[0], bps[~bps["direct"]].iloc[0]
    held = abs(direct["write_mib_per_s"] / direct["limit_mib_per_s"] - 1) <= IO_TOLERANCE
    escaped = buffered["write_mib_per_s"] > (1 + IO_TOLERANCE) * buffered["limit_mib_per_s"]
    ledger.check(
        "limits.io_bandwidth", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="Cgroups limit a container's IO bandwidth",
        value=float(direct["write_mib_per_s"] / direct["limit_mib_per_s"]),
        unit="O_DIRECT write rate / --device-write-bps",
        measured=f"O_DIRECT {direct['write_mib_per_s']:.2f} MiB/s and page-cache writes "
                 f"{buffered['write_mib_per_s']:.0f} MiB/s (fsync {buffered['fsync_s']:.2f} s) under "
                 f"--device-write-bps {direct['limit_mib_per_s']:.0f}mb on a loop device",
        criterion=f"writes that reach the device (O_DIRECT) run at the limit within {IO_TOLERANCE:.0%}; page-cache "
                  "writes faster than the limit are a caveat",
        verdict=verdict(bool(held), caveat=bool(escaped)),
        caveat=(f"writes through the page cache ran at {buffered['write_mib_per_s'] / buffered['limit_mib_per_s']:.0f}"
                f"× the limit; only the fsync that followed ({buffered['fsync_s']:.2f} s) waited for the throttle"
                if escaped else ""),
        tables=("io_writes",))


def check_pids_neighbour(ledger: ClaimLedger, result: PidsNeighbourResult) -> None:
    """Our finding about a pids neighbour in the same parent group."""
    unlimited, limited = result.rounds()
    starved = int(unlimited["victim_forked"]) < int(unlimited["victim_attempts"])
    spared = int(limited["victim_forked"]) == int(limited["victim_attempts"])
    ledger.check(
        "limits.pids_neighbour", source=Source.FINDING, section=SECTION_PIDS,
        claim="A neighbour without --pids-limit can take every pid its parent group allows, so that a container "
              "beside it cannot fork whatever its own limit; with a --pids-limit of its own it cannot",
        value=float(unlimited["victim_forked"]), unit="victim's forks beside the unlimited neighbour",
        measured=f"victim forked {int(unlimited['victim_forked'])} of {int(unlimited['victim_attempts'])} beside the "
                 f"neighbour without --pids-limit ({int(unlimited['neighbour_forked'])} forks), "
                 f"{int(limited['victim_forked'])} of {int(limited['victim_attempts'])} beside the one with "
                 f"--pids-limit {int(limited['neighbour_pids_limit'])}",
        criterion="beside the unlimited neighbour some of the victim's forks fail, beside the limited one none does",
        verdict=verdict(starved and spared), tables=("pids_neighbour",))
