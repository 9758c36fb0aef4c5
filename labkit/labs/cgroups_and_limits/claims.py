"""Section 8: the chapter's claims about limits and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, verdict
from labkit.instruments.limits import MIB
from labkit.labs.cgroups_and_limits.cpu import BESIDE_UNLIMITED, CpuQuotaResult, NeighbourResult
from labkit.labs.cgroups_and_limits.declaration import (
    CPU_TOLERANCE,
    EXIT_SIGKILL,
    RESTORED_FROM,
    SECTION,
    SECTION_NEIGHBOUR,
    SECTION_OOM,
    SECTION_PIDS,
    STARVED_BELOW,
)
from labkit.labs.cgroups_and_limits.memory import MemoryRun
from labkit.labs.cgroups_and_limits.pids import PidsResult


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
