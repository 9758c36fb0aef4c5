"""Notebook 07's lab and instruments: the stress program's parsers, the kernel log, /proc/meminfo, bad input, and
each experiment live against known answers (exit 137, the pids limit, the CPU quota …), leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger
from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import cgroups, elf, kernel_log, procfs, sampler, stress, undo
from labkit.instruments.limits import MIB
from labkit.labs import cgroups_and_limits
from labkit.labs.cgroups_and_limits import claims, cpu, memory_neighbour, rig
from labkit.labs.cgroups_and_limits.cpu import _work_rate
from labkit.labs.cgroups_and_limits.declaration import OUTCOME_COLUMNS
from tests.conftest import ROOT, interrupt_experiment, leftovers, open_live

FIXTURES = Path(__file__).parent / "fixtures"
LAB = cgroups_and_limits.LAB  # what the `replay` fixture (conftest.py) replays


def _fixture(name: str) -> str:
    return (FIXTURES / "stress" / name).read_text()


# ---------------------------------------------------------------- parsers on recorded output


def test_allocations_of_a_ramp_that_was_killed() -> None:
    steps = stress.allocations(_fixture("mem-oom.txt"))
    allocs = steps[steps["event"] == "alloc"]
    assert list(allocs["allocated_mib"]) == list(range(4, 64, 4))  # 15 steps completed, 60 MiB
    touches = steps[steps["event"] == "touch"]
    assert len(touches) == 16 and touches["allocated_mib"].iloc[-1] == 64  # the step that crossed 64 MiB
    assert steps["event"].iloc[0] == "start" and "done" not in set(steps["event"])
    assert steps["t_ns"].is_monotonic_increasing and steps["t_ns"].iloc[0] == 3800315682841


def test_child_end_and_fork_counts() -> None:
    assert stress.child_end(_fixture("child-oom.txt")) == {"t_ns": 3801549961386, "signal": 9, "exit": -1}
    assert stress.fork_counts(_fixture("fork-pids32.txt")) == {"t_ns": 3802154126294, "ok": 31, "eagain": 69,
                                                                "other": 0}
    assert stress.child_end("alloc 1 4\n") is None and stress.fork_counts("") is None


def test_work_and_reads() -> None:
    work = stress.work(_fixture("cpu-half.txt"))
    assert len(work) == 11 and work["work_units"].iloc[0] == 0 and work["work_units"].iloc[-1] == 2502
    assert work["work_units"].is_monotonic_increasing
    reads = stress.reads(_fixture("read-services.txt"))
    assert list(reads["pass"]) == [1, 2] and list(reads["bytes"]) == [12813, 12813]


def test_work_rate_interpolates_between_reports() -> None:
    work = stress.work(_fixture("cpu-half.txt")).assign(t_s=lambda f: (f["t_ns"] - f["t_ns"].iloc[0]) / 1e9)
    whole = _work_rate(work)
    assert whole == pytest.approx(2502 / ((3804869424910 - 3803831130545) / 1e9))
    assert _work_rate(work, 0.0, work["t_s"].iloc[1]) == pytest.approx(335 / work["t_s"].iloc[1])


def test_the_stress_program_builds_static() -> None:
    binary = stress.build()
    assert elf.is_static_elf(binary)
    assert stress.build() == binary  # cached by the source's hash


def test_kernel_log_tells_a_cgroup_kill_from_a_host_wide_one() -> None:
    memcg = kernel_log.parse_oom_kills((FIXTURES / "kernel-log" / "memcg-oom.txt").read_text())
    assert memcg == [kernel_log.OomKill("memcg", 17643, "stress", 2410.3542)]
    host = kernel_log.parse_oom_kills((FIXTURES / "kernel-log" / "global-oom.txt").read_text())
    assert host == [kernel_log.OomKill("global", 4242, "hog", 8123.40225)]
    assert kernel_log.parse_oom_kills("[ 1.0] stress invoked oom-killer: gfp_mask=0xcc0\n") == []


def test_kmsg_records_give_their_stamp_in_microseconds() -> None:
    # /dev/kmsg's format (Documentation/ABI/testing/dev-kmsg): prio,seq,usec,flags[,…];text, continuation lines
    # after a newline. 12 s 345 678 µs since boot.
    assert kernel_log.parse_kmsg_record("6,1234,12345678,-;labkit 07: clock marker 42.0\n") == (
        12345678, "labkit 07: clock marker 42.0")
    assert kernel_log.parse_kmsg_record("4,7,9,c,caller=T1;a\n SUBSYSTEM=x\n") == (9, "a")
    with pytest.raises(ValueError, match="not a /dev/kmsg record"):
        kernel_log.parse_kmsg_record("[ 12.345678] a dmesg line")


@pytest.mark.root
def test_the_kernel_log_clock_offset_is_measured_with_markers() -> None:
    clock = kernel_log.measure_clock_offset("labkit test: clock marker", repeats=2)
    # Both clocks count from boot: they differ by ms at most, and a marker's write takes µs, not a second.
    assert abs(clock.offset_s) < 1.0 and 0 < clock.uncertainty_s < 0.5
    with pytest.raises(ValueError, match="rate-limits"):
        kernel_log.measure_clock_offset("labkit test", repeats=kernel_log.MARKERS_AT_MOST + 1)


def test_meminfo_in_bytes() -> None:
    info = procfs.parse_meminfo((FIXTURES / "proc" / "host-v1" / "meminfo").read_text())
    assert info["MemTotal"] == 24684092 * 1024 and info["MemAvailable"] == 23289280 * 1024
    assert info["SwapTotal"] == 0 and info["HugePages_Total"] == 0  # a count, not kB
    assert procfs.process_count(FIXTURES / "proc" / "host-v1") == 0  # no numeric entries in the fixture


# ---------------------------------------------------------------- bad input, refused before anything starts


class Untouchable:
    """Stands in for a session: any use of it fails the test, so a refusal must come first. Its mode may be read
    (a knob left at None takes the mode's default; a replay checks no host memory)."""

    quick = True
    live = False

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the lab used the session ({name}) before refusing bad input")


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, memory_limit_mib=4), r"memory_limit_mib=4.*6 MiB"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, memory_limit_mib=-64), r"memory_limit_mib=-64"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, step_mib=64), r"step_mib=64"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, step_mib=0), r"step_mib=0"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, sample_hz=-10), r"sample_hz=-10"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, sample_hz=5000), r"(?s)sample_hz=5000.*1000"),
    (lambda lab: cgroups_and_limits.run_memory_swap(lab, swap_mib=0), r"swap_mib=0"),
    (lambda lab: cgroups_and_limits.run_memory_unlimited(lab, fence_mib=2), r"fence_mib=2"),
    (lambda lab: cgroups_and_limits.run_page_cache(lab, file_mib=0), r"file_mib=0"),
    (lambda lab: cgroups_and_limits.run_page_cache(lab, passes=-1), r"passes=-1"),
    (lambda lab: cgroups_and_limits.run_child_oom(lab, memory_limit_mib=5), r"memory_limit_mib=5"),
    (lambda lab: cgroups_and_limits.run_cpu_quota(lab, cpus=(0.5, 64.0)), r"cpus=64.0"),
    (lambda lab: cgroups_and_limits.run_cpu_quota(lab, cpus=(0.001,)), r"cpus=0.001"),
    (lambda lab: cgroups_and_limits.run_cpu_quota(lab, seconds=0), r"seconds=0"),
    (lambda lab: cgroups_and_limits.run_cpu_shares(lab, shares=(1024, 1)), r"shares="),
    (lambda lab: cgroups_and_limits.run_noisy_neighbour(lab, neighbour_threads=0), r"neighbour_threads=0"),
    (lambda lab: cgroups_and_limits.run_noisy_neighbour(lab, neighbour_cpus=1.0), r"neighbour_cpus=1.0"),
    (lambda lab: cgroups_and_limits.run_noisy_neighbour(lab, neighbour_shares=1), r"neighbour_shares=1"),
    (lambda lab: cgroups_and_limits.run_noisy_neighbour(lab, repeats=0), r"repeats=0"),
    (lambda lab: cgroups_and_limits.run_memory_neighbour(lab, fence_mib=64), r"(?s)fence_mib=64.*above 96"),
    (lambda lab: cgroups_and_limits.run_memory_neighbour(lab, file_mib=0), r"file_mib=0"),
    (lambda lab: cgroups_and_limits.run_memory_neighbour(lab, neighbour_limit_mib=2), r"neighbour_limit_mib=2"),
    (lambda lab: cgroups_and_limits.run_pids_neighbour(lab, fence_pids=20), r"(?s)fence_pids=20.*above 25"),
    (lambda lab: cgroups_and_limits.run_pids_neighbour(lab, victim_attempts=0), r"victim_attempts=0"),
    (lambda lab: cgroups_and_limits.run_io(lab, write_mib=128), r"write_mib=128"),
    (lambda lab: cgroups_and_limits.run_io(lab, limit_iops=0), r"limit_iops=0"),
    (lambda lab: cgroups_and_limits.run_pids(lab, pids_limit=0), r"pids_limit=0"),
    (lambda lab: cgroups_and_limits.run_pids(lab, attempts=0), r"attempts=0"),
])
def test_bad_input_is_refused_before_the_session_is_used(call: Callable[[object], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message) as refused:
        call(Untouchable())
    assert refused.value.hint  # says what is allowed


def test_an_engine_with_another_cgroup_driver_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lab:
        engine = object()
        live = True

        def require_root(self, why: str) -> None:
            pass

    monkeypatch.setattr(rig, "info", lambda client: type("Info", (), {"cgroup_driver": "none"})())
    monkeypatch.setattr(cgroups.CgroupLayout, "from_system", lambda: pytest.fail("touched the cgroups"))
    with pytest.raises(HostUnsupported, match="'none'") as refused, rig.stress_rig(Lab()):  # type: ignore[arg-type]
        pass
    assert "replay" in refused.value.hint


def test_doctor_names_the_cgroup_drivers_07_runs_on_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.app import doctor

    monkeypatch.setattr(doctor.engine, "connect", lambda timeout_s: object())
    for driver, ok in (("cgroupfs", True), ("systemd", True), ("none", False)):
        monkeypatch.setattr(doctor.engine, "info", lambda client, d=driver: type("Info", (), {"cgroup_driver": d})())
        check = doctor.CHECKERS["engine"](cgroups_and_limits.DRIVERS)
        assert check.ok is ok and check.detail.startswith(driver)
        assert "native.cgroupdriver=cgroupfs" in check.fix


def _v1_group_at_its_limit(tmp_path: Path, memsw_limit: int, failcnt: int) -> cgroups.Cgroup:
    """A v1 memory group as a 32 MiB ramp leaves it at its OOM kill, with the counters this host's kernel (6.18)
    showed for it: a group under memory = memsw = 32 MiB read failcnt 0 and memsw.failcnt 0 (the memsw counter is
    charged first and fails first; this kernel counts failures of the memory counter only); under memsw = 64 MiB
    the memory counter failed first and failcnt read 66."""
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text(
        "35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory\n")
    group = root / "sys/fs/cgroup/memory/ramp"
    group.mkdir(parents=True)
    for name, value in {"memory.limit_in_bytes": 32 * MIB, "memory.memsw.limit_in_bytes": memsw_limit,
                        "memory.usage_in_bytes": 32 * MIB, "memory.max_usage_in_bytes": 32 * MIB,
                        "memory.failcnt": failcnt, "memory.memsw.failcnt": 0}.items():
        (group / name).write_text(f"{value}\n")
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    return cgroups.CgroupLayout.from_system(root).open("ramp")


def test_at_a_v1_limit_the_watermark_moves_where_the_failure_count_does_not(tmp_path: Path) -> None:
    same = _v1_group_at_its_limit(tmp_path / "same", memsw_limit=32 * MIB, failcnt=0)
    assert same.memory_events() == {"max": 0, "oom_kill": 1}  # no failure counted …
    assert sampler._memory_peak(same) == (32 * MIB,)  # … while the watermark stands at the limit
    more = _v1_group_at_its_limit(tmp_path / "more", memsw_limit=64 * MIB, failcnt=66)
    assert more.memory_events() == {"max": 66, "oom_kill": 1}


def _ramp_run(samples: pd.DataFrame) -> cgroups_and_limits.MemoryRun:
    """A 16 MiB ramp killed at its limit: hand-made outcome, the given samples."""
    outcome = pd.DataFrame([{c: 0 for c in OUTCOME_COLUMNS}]).assign(
        variant="ramp", cgroup_version="v1", memory_limit_bytes=16 * MIB, fence_limit_bytes=32 * MIB,
        exit_code=137, kill_t_s=0.305, last_step_t_s=0.3, clock_offset_s=0.00056, clock_uncertainty_s=2e-6)
    return cgroups_and_limits.MemoryRun(samples, pd.DataFrame(columns=["t_s", "event", "allocated_mib"]),
                                        pd.DataFrame(columns=["t_s", "action", "exit_code"]), outcome)


def test_limit_reached_in_the_sample_where_the_watermark_meets_the_limit() -> None:
    # A ramp of 4 MiB steps under 16 MiB, sampled every 0.1 s; the failure count stays 0 throughout (v1,
    # memsw = memory): the limit is reached in the sample at 0.3 s, where the watermark first equals 16 MiB.
    samples = pd.DataFrame({"t_s": [0.0, 0.1, 0.2, 0.3, 0.31],
                            "memory_bytes": [4 * MIB, 8 * MIB, 12 * MIB, 16 * MIB, 0],
                            "peak_bytes": [4 * MIB, 8 * MIB, 12 * MIB, 16 * MIB, 16 * MIB],
                            "limit_hits": [0] * 5, "oom_kills": [0, 0, 0, 0, 1]})
    run = _ramp_run(samples)
    assert run.limit_reached_t_s == 0.3
    line = run._limit_line()
    assert "watermark at the limit came at t = 0.300 s" in line and "read 0 (cgroup v1" in line
    assert run.time_to_kill_ms == pytest.approx(5.0) and run.kill_uncertainty_ms == pytest.approx(0.003)
    never = _ramp_run(samples.assign(peak_bytes=12 * MIB))
    assert pd.isna(never.limit_reached_t_s) and "never reached" in never._limit_line()


def test_the_oom_kill_counter_witness_reads_the_fence_on_v2_only() -> None:
    # On v2 the fence's memory.events counts its descendants' kills; a systemd scope can vanish before the sampler
    # reads its own count (in the guest's two full recordings 2 of 5 ramps, then 5 of 5, read 0). On v1 the kill
    # counts only in the victim's group, so a fence's count is not the container's.
    samples = pd.DataFrame({"t_s": [0.0], "memory_bytes": [0], "peak_bytes": [0], "limit_hits": [0],
                            "oom_kills": [0]})

    def witness(version: str, group: int, fence: int) -> tuple[str, bool]:
        run = _ramp_run(samples)
        run.outcome.loc[0, ["cgroup_version", "group_oom_kills", "fence_oom_kills"]] = [version, group, fence]
        row = run.witnesses().set_index("witness").loc["cgroup oom_kill counter"]
        return row["says"], bool(row["saw_oom_kill"])

    says, saw = witness("v2", 0, 1)
    assert saw and says == ("0 in the container's group (last sample before it vanished), 1 in the fence (its "
                            "descendants' kills, read after the exit)")
    assert witness("v2", 1, 1)[1] and not witness("v2", 0, 0)[1]
    assert witness("v1", 1, 0) == ("1 in the container's group (last sample before it vanished)", True)
    assert not witness("v1", 0, 1)[1]


def _neighbour(shares: dict[str, list[float]]) -> cgroups_and_limits.NeighbourResult:
    """A victim whose rate alone is 1000 units/s and, in each condition and round, the given share of the pair's
    CPU time, its work rate following it; straight lines from 0 at 0 s to 2 s. The neighbour uses the rest of one
    CPU."""
    neighbour = {"alone": (float("nan"), float("nan")), "beside an unlimited neighbour": (1024, float("nan")),
                 "beside a neighbour with --cpus 0.25": (1024, 0.25)}  # its shares and cpus
    rounds = len(next(iter(shares.values())))
    per = {"alone": [1.0] * rounds, **shares}
    work = [{"round": r, "condition": c, "neighbour_threads": 0 if c == "alone" else 8,
             "neighbour_shares": neighbour[c][0], "neighbour_cpus": neighbour[c][1], "t_s": t,
             "work_units": 1000 * share * t}
            for c, values in per.items() for r, share in enumerate(values) for t in (0.0, 2.0)]
    cpu = [{"round": r, "condition": c, "container": role, "t_s": t, "cpu_s": part * t}
           for c, values in per.items() for r, share in enumerate(values)
           for role, part in (("victim", share), ("neighbour", 1 - share)) if part or role == "victim"
           for t in (0.0, 2.0)]
    return cgroups_and_limits.NeighbourResult(pd.DataFrame(work), pd.DataFrame(cpu))


def test_expected_share_by_weight_and_quota() -> None:
    nan = float("nan")
    assert cpu.expected_share(nan, nan, 1.0) == 1.0  # alone
    assert cpu.expected_share(1024, nan, 0.7) == 0.5  # equal weights, whatever the pair gets
    assert cpu.expected_share(256, nan, 1.0) == pytest.approx(0.8)  # 1024 / (1024 + 256)
    assert cpu.expected_share(1024, 0.25, 1.0) == pytest.approx(0.75)  # the quota binds: 1 − 0.25 / 1
    assert cpu.expected_share(1024, 0.25, 0.5) == pytest.approx(0.5)  # half a core: by weight 0.25 = the quota
    assert cpu.expected_share(1024, 0.25, 0.4) == pytest.approx(0.5)  # by weight 0.2 < the quota: weight binds


def test_neighbour_summary_on_known_shares() -> None:
    # Five rounds; beside the unlimited neighbour the victim got 0.40 … 0.60 of the pair's CPU time, median 0.52;
    # beside the capped one 0.70 … 0.78, median 0.74. Five sorted values: the interval is [min, max] (93.75 %).
    result = _neighbour({"beside an unlimited neighbour": [0.52, 0.40, 0.60, 0.55, 0.50],
                         "beside a neighbour with --cpus 0.25": [0.74, 0.70, 0.78, 0.72, 0.75]})
    summary = result.summary
    assert summary.loc["beside an unlimited neighbour", ["cpu_share", "low", "high"]].tolist() == pytest.approx(
        [0.52, 0.40, 0.60])
    assert summary.loc["beside a neighbour with --cpus 0.25", "cpu_share"] == pytest.approx(0.74)
    assert summary.loc["beside a neighbour with --cpus 0.25", "kept"] == pytest.approx(0.74)  # rate follows CPU
    assert summary["rounds"].tolist() == [5, 5, 5] and summary.loc["alone", "cpu_share"] == 1.0
    assert result.worst_miss == pytest.approx(0.02)  # |0.52 − 0.50| beats |0.74 − 0.75|
    # Shared per thread (2 victim threads against 8) it would have got 0.20: 30 points from the expected 0.50.
    per_thread = _neighbour({"beside an unlimited neighbour": [0.20], "beside a neighbour with --cpus 0.25": [0.75]})
    assert per_thread.worst_miss == pytest.approx(0.30)
    assert per_thread.worst_miss > cgroups_and_limits.NEIGHBOUR_TOLERANCE


def test_shares_ratio_is_the_median_of_per_round_ratios_over_the_overlap() -> None:
    # Three rounds on one CPU, 1024 against 512 shares. The pair runs from 0 to 2 s; in round r the first container
    # does 200, 180, 190 units/s and the second 100 (work ratios 2.0, 1.8, 1.9: median 1.9, 5 % under 2.0 —
    # within 15 %). Its CPU time follows: 2/3, 0.64, 0.655 of the CPU. Three sorted ratios: [min, max], 75 %.
    first_rates, cpu_first = [200, 180, 190], [2 / 3, 180 / 280, 190 / 290]
    work, samples = [], []
    for r, (rate, cpu_part) in enumerate(zip(first_rates, cpu_first, strict=True)):
        for name, shares, per_s, part in (("shares=1024", 1024, rate, cpu_part),
                                          ("shares=512", 512, 100, 1 - cpu_part)):
            work += [{"round": r, "container": name, "shares": shares, "t_s": t, "work_units": per_s * t}
                     for t in (0.0, 1.0, 2.0)]
            samples += [{"round": r, "container": name, "shares": shares, "t_s": t, "cpu_s": part * t}
                        for t in (0.0, 2.0)]
    result = cgroups_and_limits.SharesResult(pd.DataFrame(samples), pd.DataFrame(work))
    assert result.ratios["work_ratio"].tolist() == pytest.approx([2.0, 1.8, 1.9])
    assert result.work_ratio == pytest.approx(1.9) and result.shares_ratio == 2.0 and result.within_tolerance
    assert result.work_ratio_interval == pytest.approx((1.8, 2.0, 0.75))
    assert result.cpu_ratio == pytest.approx(1.9)  # CPU time in the same ratio as the work
    assert result.summary["work_per_s"].tolist() == pytest.approx([190, 100])
    assert "[1.80, 2.00] (75% interval over 3 rounds" in result.conclusion()
    assert len(result.first_work) == 6 and result.window(2) == (0.0, 2.0)


def test_memory_neighbour_summary_and_verdict_on_a_known_table() -> None:
    # A 64 MiB file, all of it cached after the victim's read; the unlimited neighbour leaves 8 MiB of it (1/8),
    # the limited one all 64 (1); re-reads 150 ms and 50 ms against first reads of 100 ms.
    table = pd.DataFrame([
        {"condition": memory_neighbour.UNLIMITED, "neighbour_limit_bytes": float("nan"),
         "resident_after_neighbour_bytes": 8 * MIB, "neighbour_touched_mib": 184, "reread_s": 0.15},
        {"condition": "neighbour with --memory 32m", "neighbour_limit_bytes": 32 * MIB,
         "resident_after_neighbour_bytes": 64 * MIB, "neighbour_touched_mib": 24, "reread_s": 0.05},
    ]).assign(fence_bytes=192 * MIB, file_bytes=64 * MIB, resident_after_read_bytes=64 * MIB, neighbour_exit_code=137,
              first_read_s=0.1)
    result = cgroups_and_limits.MemoryNeighbourResult(table)
    assert result.kept(memory_neighbour.UNLIMITED) == 0.125 and result.kept(result.limited_condition) == 1.0
    assert result.summary["reread_over_first_read"].tolist() == pytest.approx([1.5, 0.5])
    ledger = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_memory_neighbour(ledger, result)
    row = ledger.frame().set_index("id").loc["limits.memory_neighbour"]
    assert row["verdict"] == "holds" and row["value"] == 0.125  # 1/8 < 1/2 evicted, 1 ≥ 0.9 kept
    nothing_evicted = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_memory_neighbour(nothing_evicted, cgroups_and_limits.MemoryNeighbourResult(
        table.assign(resident_after_neighbour_bytes=64 * MIB)))
    assert nothing_evicted.frame().iloc[0]["verdict"] == "does not hold"


def _io_writes(buffered_mib_per_s: float, direct_mib_per_s: float = 4.0) -> cgroups_and_limits.IoResult:
    """8 MiB written in 1 MiB steps at a steady rate per condition, each ending with a 0.5 s fsync (a buffered
    writer's 2 s, as its writeback waits for the 4 MiB/s throttle)."""
    conditions = [("O_DIRECT, no limit", True, float("nan"), 400.0, 0.0),
                  ("O_DIRECT, --device-write-bps 4mb", True, 4 * MIB, direct_mib_per_s, 0.0),
                  ("page cache, --device-write-bps 4mb", False, 4 * MIB, buffered_mib_per_s, 2.0)]
    rows = [{"condition": name, "direct": direct, "limit_bps": bps, "limit_iops": float("nan"), "t_s": mib / rate,
             "event": "wrote", "mib": mib} for name, direct, bps, rate, _ in conditions for mib in range(9)]
    rows += [{"condition": name, "direct": direct, "limit_bps": bps, "limit_iops": float("nan"),
              "t_s": 8 / rate + fsync, "event": "synced", "mib": 8} for name, direct, bps, rate, fsync in conditions]
    return cgroups_and_limits.IoResult(pd.DataFrame(rows))


def test_io_summary_and_verdict_on_known_writes() -> None:
    escaped = _io_writes(buffered_mib_per_s=400.0)
    row = escaped.summary.loc["page cache, --device-write-bps 4mb"]
    # 8 MiB at 400 MiB/s: 0.02 s of writes, then 2 s of fsync: 8 / 2.02 = 3.96 MiB/s overall.
    assert (row["write_mib_per_s"], row["fsync_s"]) == pytest.approx((400.0, 2.0))
    assert row["overall_mib_per_s"] == pytest.approx(8 / 2.02)
    assert "100× the limit: buffered writes escape" in escaped.conclusion()
    ledger = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_io(ledger, escaped)
    assert ledger.verdict("limits.io_bandwidth").value == "holds with caveat"  # O_DIRECT held, buffered escaped
    held = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_io(held, _io_writes(buffered_mib_per_s=4.2))  # 5 % over: within 15 %
    assert held.verdict("limits.io_bandwidth").value == "holds"
    unthrottled = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_io(unthrottled, _io_writes(buffered_mib_per_s=400.0, direct_mib_per_s=6.0))  # 50 % over
    assert unthrottled.verdict("limits.io_bandwidth").value == "does not hold"


@pytest.mark.root
def test_a_loop_device_of_a_killed_maker_is_detached_by_the_next_command(tmp_path: Path) -> None:
    backing = tmp_path / "disk.img"
    script = ("import os, signal, sys; from pathlib import Path; from labkit.instruments import loopdev; "
              f"cm = loopdev.attached(Path({str(backing)!r}), 16); device = cm.__enter__(); "
              "print(device.path, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    device = child.stdout.strip()
    assert child.returncode == -signal.SIGKILL and device.startswith("/dev/loop")
    assert backing.exists() and str(backing) in subprocess.run(["losetup", "--list"], capture_output=True,
                                                                text=True).stdout
    assert any(str(backing) in line for line in undo.undo_orphans())
    assert not backing.exists() and str(backing) not in subprocess.run(["losetup", "--list"], capture_output=True,
                                                                        text=True).stdout


def test_pids_neighbour_verdict_on_known_tables() -> None:
    # Parent group of 48 pids: the unlimited neighbour's PID 1 and 46 children fill it beside the victim's PID 1,
    # whose 8 forks all fail; the neighbour limited to 16 (PID 1 + 15) leaves room for all 8.
    table = pd.DataFrame([
        {"condition": "neighbour without --pids-limit", "neighbour_pids_limit": float("nan"), "neighbour_forked": 46,
         "victim_forked": 0, "victim_eagain": 8},
        {"condition": "neighbour with --pids-limit 16", "neighbour_pids_limit": 16, "neighbour_forked": 15,
         "victim_forked": 8, "victim_eagain": 0},
    ]).assign(fence_pids=48, victim_pids_limit=9, victim_attempts=8)
    ledger = ClaimLedger(cgroups_and_limits.STEM)
    claims.check_pids_neighbour(ledger, cgroups_and_limits.PidsNeighbourResult(table))
    assert ledger.verdict("limits.pids_neighbour").value == "holds"
    room = ClaimLedger(cgroups_and_limits.STEM)  # a parent group large enough for both: nothing fails
    claims.check_pids_neighbour(room, cgroups_and_limits.PidsNeighbourResult(table.assign(victim_forked=8)))
    assert room.verdict("limits.pids_neighbour").value == "does not hold"


def test_the_recorded_ramp_was_killed_and_all_five_witnesses_saw_it(replay: LabSession) -> None:
    ramp = cgroups_and_limits.run_memory_ramp(replay)
    assert ramp.killed and ramp.witnesses_agree


def test_a_replay_names_the_recording_host_s_cores_not_its_own(replay: LabSession,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # a reader's machine with more cores than ours
    quota = cgroups_and_limits.run_cpu_quota(replay)
    cores = replay.provenance["fingerprint"]["cores"]  # the recording host's, as its banner gives them
    assert quota.host_cores == cores != 64
    assert f"cores of this host's {cores}, throttled" in quota.conclusion()


# ---------------------------------------------------------------- live, against known answers


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[LabSession]:
    lab = open_live(cgroups_and_limits.LAB, tmp_path)
    yield lab
    assert leftovers(docker_client, lab.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labkit_groups(lab.run_id) == []


def _labkit_groups(run_id: str) -> list[str]:
    """Directories of run `run_id` in any mounted cgroup hierarchy, read from the mount table by hand."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")[1].split()
        if fields[0] in ("cgroup", "cgroup2"):
            mount_point = Path(line.split()[4])
            found += [str(p) for p in (mount_point / "labkit").glob(f"{run_id}*")]
    return found


@pytest.mark.docker
@pytest.mark.root
def test_live_ramp_is_killed_at_its_limit_and_every_witness_sees_it(live: LabSession) -> None:
    ramp = cgroups_and_limits.run_memory_ramp(live, memory_limit_mib=32, step_mib=4, step_interval_ms=50)
    r = ramp.record
    assert int(r["exit_code"]) == 137 and bool(r["oom_killed"]) and int(r["oom_events"]) == 1
    assert int(r["group_oom_kills"]) == 1 and int(r["kernel_memcg_kills"]) == 1 and int(r["kernel_global_kills"]) == 0
    assert int(r["fence_oom_kills"]) == (1 if r["cgroup_version"] == "v2" else 0)  # hierarchical on v2 only
    assert ramp.witnesses_agree
    assert int(r["allocated_mib_last"]) < 32 <= int(r["allocated_mib_last"]) + 4  # the step that crossed 32 MiB
    # The kernel's high watermark reached the limit exactly (32 MiB = 8192 pages, page-aligned); a sample shows it
    # up to one interval later, possibly after the kill.
    assert ramp.samples["peak_bytes"].max() == 32 * MIB and not pd.isna(ramp.limit_reached_t_s)
    # On the calibrated clock the kill comes after the step that crossed the limit began (before it, the clock
    # offset would be wrong); how long after is a time: notebook 07 reports it.
    assert ramp.time_to_kill_ms > -ramp.kill_uncertainty_ms
    assert abs(r["clock_offset_s"]) < 1.0 and 0 < r["clock_uncertainty_s"] < 0.01


@pytest.mark.docker
@pytest.mark.root
def test_live_swap_flag_is_read_back_and_changes_nothing_without_swap(live: LabSession) -> None:
    swap = cgroups_and_limits.run_memory_swap(live, memory_limit_mib=32, swap_mib=32, step_interval_ms=50)
    r = swap.record
    assert r["swap_limit_read_bytes"] == 32 * MIB
    if r["host_swap_bytes"] == 0:
        assert swap.killed and int(r["allocated_mib_last"]) < 32


@pytest.mark.docker
@pytest.mark.root
def test_live_container_without_a_limit_grows_to_its_parent_s_limit(live: LabSession) -> None:
    unlimited = cgroups_and_limits.run_memory_unlimited(live, fence_mib=48, step_mib=4, step_interval_ms=50)
    r = unlimited.record
    assert pd.isna(r["memory_limit_bytes"]) and unlimited.killed
    assert 44 * MIB <= r["sampled_peak_bytes"] <= 48 * MIB
    assert int(r["kernel_global_kills"]) == 0


@pytest.mark.docker
@pytest.mark.root
def test_live_page_cache_fills_the_limit_and_nothing_is_killed(live: LabSession) -> None:
    cache = cgroups_and_limits.run_page_cache(live, memory_limit_mib=32, file_mib=96, passes=2)
    r = cache.record
    assert cache.survived and int(r["bytes_read"]) == 2 * 96 * MIB
    # A 96 MiB file through a 32 MiB limit: cache is charged and the kernel's watermark reaches the limit exactly.
    assert r["max_file_bytes"] >= 16 * MIB and cache.reached_limit and r["watermark_bytes"] == 32 * MIB


@pytest.mark.docker
@pytest.mark.root
def test_live_child_over_the_limit_dies_and_pid1_survives(live: LabSession) -> None:
    r = cgroups_and_limits.run_child_oom(live, memory_limit_mib=32, step_interval_ms=20).record
    assert int(r["child_signal"]) == 9 and int(r["exit_code"]) == 0 and bool(r["pid1_survived"])
    assert int(r["group_oom_kills"]) == 1
    assert int(r["fence_oom_kills"]) == (1 if r["cgroup_version"] == "v2" else 0)  # hierarchical on v2 only


@pytest.mark.docker
@pytest.mark.root
def test_live_cpu_quota_and_shares_within_tolerance(live: LabSession) -> None:
    cpu = cgroups_and_limits.run_cpu_quota(live, cpus=(0.5,), seconds=2)
    summary = cpu.summary.set_index("condition")
    half, free = summary.loc["--cpus 0.5"], summary.loc["no --cpus"]
    # The quota is a ceiling whatever else runs: a two-thread program without it would use up to 2 cores.
    assert half["cpu_cores"] <= 0.5 * (1 + cgroups_and_limits.CPU_TOLERANCE), cpu.summary
    assert half["throttled_periods"] > 0  # and it bit: some periods ran out of quota
    if free["cpu_cores"] >= 0.5 * (1 + cgroups_and_limits.CPU_TOLERANCE):  # the host had the room to reach it
        assert cpu.worst_deviation <= cgroups_and_limits.CPU_TOLERANCE, cpu.summary
    shares = cgroups_and_limits.run_cpu_shares(live, shares=(1024, 512), seconds=2)
    assert shares.within_tolerance, shares.summary


@pytest.mark.docker
@pytest.mark.root
def test_live_fork_loop_stops_at_the_pids_limit(live: LabSession) -> None:
    pids = cgroups_and_limits.run_pids(live, pids_limit=16, attempts=40)
    r = pids.record
    assert pids.stopped_at_limit and (int(r["forked"]), int(r["eagain"])) == (15, 25)
    assert int(r["pids_limit_hits"]) == 25 and int(r["exit_code"]) == 0
    assert r["host_processes_during"] >= r["host_processes_before"] + 16


@pytest.mark.docker
@pytest.mark.root
def test_live_interrupted_experiment_leaves_no_container_and_no_cgroup(
        docker_client: docker.DockerClient, tmp_path: Path) -> None:
    # A slow ramp in its own process, interrupted (SIGINT, as Ctrl-C) once its fence and container exist.
    run_id, child = interrupt_experiment(
        "cgroups_and_limits", "run_memory_unlimited(lab, fence_mib=256, step_mib=6, step_interval_ms=1000)", tmp_path,
        signal.SIGINT, lambda run_id: bool(_labkit_groups(run_id) and leftovers(docker_client, run_id)["containers"]),
        "its fence and container exist", within_s=60)
    assert child.returncode != 0
    assert leftovers(docker_client, run_id)["containers"] == []
    assert _labkit_groups(run_id) == []


@pytest.mark.docker
@pytest.mark.root
def test_a_knob_turned_in_the_parameters_cell_reaches_the_prose(
        docker_client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Notebook 07 executed live in quick mode as `labkit run` does, with --pids-limit 24 instead of 32: PID 1 and
    # 23 children fill 24 tasks, so 23 of the 100 forks succeed and 77 fail — numbers no default could produce.
    import nbformat
    import papermill

    from labkit.app.kernels import kernel_config
    from labkit.instruments import engine

    run_id = engine.new_run_id()
    monkeypatch.setenv("LABKIT_RUN_ID", run_id)
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path / "results"))
    notebook = ROOT / "notebooks" / f"{cgroups_and_limits.STEM}.ipynb"
    executed = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), cwd=str(notebook.parent), kernel_name="python3",
                               parameters={"quick": True, "mode": "live", "pids_limit": 24}, progress_bar=False,
                               config=kernel_config())
    prose = "\n".join("".join(output.get("data", {}).get("text/markdown", ""))
                      for cell in nbformat.read(executed, as_version=4).cells for output in cell.get("outputs", []))
    assert "Of 100 forks, 23 succeeded and 77 failed with EAGAIN" in prose
    assert "the limit of 24" in prose and "under --pids-limit 24" in prose  # the conclusion and the ledger
    assert leftovers(docker_client, run_id) == {"containers": [], "networks": [], "volumes": []}
    assert _labkit_groups(run_id) == []


# ---------------------------------------------------------------- cgroup v2 only: memory.oom.group and PSI


def _child(version: str, oom_group: object, pid1_survived: bool, group_kills: int = 1
           ) -> cgroups_and_limits.ChildOomResult:
    return cgroups_and_limits.ChildOomResult(pd.DataFrame([{
        "cgroup_version": version, "memory_limit_bytes": 64 * MIB, "exit_code": 0 if pid1_survived else 137,
        "oom_killed": True, "oom_events": 1, "group_oom_kills": group_kills,
        "fence_oom_kills": 1 if version == "v2" else 0, "oom_group": oom_group, "kernel_memcg_kills": 1,
        "child_signal": 9, "child_exit": 0, "pid1_survived": pid1_survived}]))


def test_the_child_oom_prose_gives_both_counters_on_v2_and_the_groups_alone_on_v1() -> None:
    # CI's guest run read 0 in the container's group: PID 1 exited before the sampler's next read of the scope
    assert ("read 0 in the container's group (last sample before it vanished), 1 in the fence (its descendants' "
            "kills, read after the exit) —") in _child("v2", 0, True, group_kills=0).conclusion()
    v1 = _child("v1", pd.NA, True).conclusion()
    assert "read 1 in the container's group (last sample before it vanished) —" in v1


def test_the_child_oom_prose_says_what_memory_oom_group_was() -> None:
    assert "has no such setting, so that is not measured" in _child("v1", pd.NA, True).conclusion()
    assert ("left the container's `memory.oom.group` at **0**, so the kernel killed one process, the child, and "
            "PID 1 lived on") in _child("v2", 0, True).conclusion()
    assert "at **1**, so the kernel killed the whole group, PID 1 included" in _child("v2", 1, False).conclusion()


def _ramp(pressure: bool) -> cgroups_and_limits.MemoryRun:
    t_s = [i / 10 for i in range(11)]
    stalled = [0.0] * 6 + [0.05, 0.1, 0.15, 0.2, 0.2]  # 200 ms of stalls, all after the limit (t = 0.5 s)
    samples = pd.DataFrame({"t_s": t_s, "memory_bytes": [min(i, 5) * 12 * MIB for i in range(11)],
                            "peak_bytes": [min(i, 5) * 12 * MIB + (4 * MIB if i >= 5 else 0) for i in range(11)],
                            "pressure_some_s": stalled if pressure else [float("nan")] * 11,
                            "pressure_full_s": [s / 2 for s in stalled] if pressure else [float("nan")] * 11})
    outcome = pd.DataFrame([{"cgroup_version": "v2" if pressure else "v1", "memory_limit_bytes": 64 * MIB,
                             "fence_limit_bytes": 128 * MIB, "sampler_hz": 10.0}])
    return cgroups_and_limits.MemoryRun(samples, pd.DataFrame(), pd.DataFrame(), outcome)


def test_memory_pressure_is_told_from_the_samples_and_its_absence_on_v1() -> None:
    assert not _ramp(False).has_pressure and "keeps no pressure stall information" in _ramp(False).pressure_note()
    note = _ramp(True).pressure_note()
    assert "for **200.0 ms** in all (20.0% of the time) and all of them for 100.0 ms" in note
    assert "100% of that stall time came after the charge first stood at the limit (t = 0.50 s)" in note


def test_an_oom_kill_the_engine_missed_is_a_disagreeing_witness() -> None:
    # CI's guest (cgroup v2) once read exit 137 with OOMKilled false: the shim reported the OOM after the exit
    def ramp(flag: bool, events: int) -> cgroups_and_limits.MemoryRun:
        outcome = pd.DataFrame([{"cgroup_version": "v2", "memory_limit_bytes": 64 * MIB, "exit_code": 137,
                                 "oom_killed": flag, "oom_events": events, "group_oom_kills": 0,
                                 "fence_oom_kills": 1, "kernel_memcg_kills": 1, "kernel_global_kills": 0}])
        return cgroups_and_limits.MemoryRun(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), outcome)

    assert ramp(True, 1).killed and ramp(True, 1).witnesses_agree
    for missed in (ramp(False, 1), ramp(True, 0)):
        assert missed.killed and not missed.witnesses_agree
    saw = ramp(False, 1).witnesses().set_index("witness")["saw_oom_kill"]
    assert not saw["engine State.OOMKilled"] and saw["cgroup oom_kill counter"] and saw["kernel log"]
