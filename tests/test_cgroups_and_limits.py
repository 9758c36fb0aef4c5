"""Notebook 07's lab and instruments: the stress program's parsers, the kernel log, /proc/meminfo, bad input, and
each experiment live against known answers (exit 137, the pids limit, the CPU quota …), leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.session import LabSession, open_session
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import cgroups, elf, kernel_log, procfs, stress
from labkit.instruments.limits import MIB
from labkit.labs import cgroups_and_limits
from labkit.labs.cgroups_and_limits import rig
from labkit.labs.cgroups_and_limits.cpu import _work_rate
from tests.conftest import default_sigint, leftovers

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


def test_meminfo_in_bytes() -> None:
    info = procfs.parse_meminfo((FIXTURES / "proc" / "host-v1" / "meminfo").read_text())
    assert info["MemTotal"] == 24684092 * 1024 and info["MemAvailable"] == 23289280 * 1024
    assert info["SwapTotal"] == 0 and info["HugePages_Total"] == 0  # a count, not kB
    assert procfs.process_count(FIXTURES / "proc" / "host-v1") == 0  # no numeric entries in the fixture


# ---------------------------------------------------------------- bad input, refused before anything starts


class Untouchable:
    """Stands in for a session: any use of it fails the test, so a refusal must come first."""

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
    (lambda lab: cgroups_and_limits.run_pids(lab, pids_limit=0), r"pids_limit=0"),
    (lambda lab: cgroups_and_limits.run_pids(lab, attempts=0), r"attempts=0"),
])
def test_bad_input_is_refused_before_the_session_is_used(call: Callable[[object], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message) as refused:
        call(Untouchable())
    assert refused.value.hint  # says what is allowed


def test_an_engine_with_the_systemd_driver_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lab:
        engine = object()
        live = True

        def require_root(self, why: str) -> None:
            pass

    monkeypatch.setattr(rig, "info", lambda client: type("Info", (), {"cgroup_driver": "systemd"})())
    monkeypatch.setattr(cgroups.CgroupLayout, "from_system", lambda: pytest.fail("touched the cgroups"))
    with pytest.raises(HostUnsupported, match="systemd") as refused, rig.stress_rig(Lab()):  # type: ignore[arg-type]
        pass
    assert "replay" in refused.value.hint


def test_doctor_names_the_cgroup_driver_07_needs_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.app import doctor

    monkeypatch.setattr(doctor.engine, "connect", lambda timeout_s: object())
    for driver, ok in (("cgroupfs", True), ("systemd", False)):
        monkeypatch.setattr(doctor.engine, "info", lambda client, d=driver: type("Info", (), {"cgroup_driver": d})())
        check = doctor.CHECKERS["engine"](cgroups_and_limits.CGROUPFS)
        assert check.ok is ok and check.detail.startswith(driver)
        assert "native.cgroupdriver=cgroupfs" in check.fix


def test_the_recorded_ramp_was_killed_and_all_five_witnesses_saw_it(replay: LabSession) -> None:
    ramp = cgroups_and_limits.run_memory_ramp(replay)
    assert ramp.killed and ramp.witnesses_agree


# ---------------------------------------------------------------- live, against known answers


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[LabSession]:
    monkeypatch.setenv("LABKIT_RESULTS_DIR", str(tmp_path))
    lab = open_session(cgroups_and_limits.LAB, mode="live", quick=True)
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
    assert ramp.witnesses_agree
    assert r["sampled_peak_bytes"] <= 32 * MIB
    assert int(r["allocated_mib_last"]) < 32 <= int(r["allocated_mib_last"]) + 4  # the step that crossed 32 MiB
    # How soon the kill came and the sampler's rate are times: notebook 07 reports them, `make bench` the rate.
    assert r["sampler_hz"] > 0


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
    assert r["max_file_bytes"] >= 16 * MIB and r["peak_bytes"] <= 32 * MIB  # cache charged, capped at the limit


@pytest.mark.docker
@pytest.mark.root
def test_live_child_over_the_limit_dies_and_pid1_survives(live: LabSession) -> None:
    r = cgroups_and_limits.run_child_oom(live, memory_limit_mib=32, step_interval_ms=20).record
    assert int(r["child_signal"]) == 9 and int(r["exit_code"]) == 0 and bool(r["pid1_survived"])
    assert int(r["group_oom_kills"]) == 1


@pytest.mark.docker
@pytest.mark.root
def test_live_cpu_quota_and_shares_within_tolerance(live: LabSession) -> None:
    cpu = cgroups_and_limits.run_cpu_quota(live, cpus=(0.5,), seconds=2)
    assert cpu.worst_deviation <= cgroups_and_limits.CPU_TOLERANCE, cpu.summary
    half = cpu.summary.set_index("condition").loc["--cpus 0.5"]
    assert half["throttled_periods"] > 0.5  # a two-thread program runs out of a half-core quota most periods
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
    # A slow ramp in its own process, interrupted (SIGINT, as Ctrl-C) once its fence exists.
    script = ("import sys; from labkit.core.session import open_session; from labkit.labs import cgroups_and_limits; "
              "lab = open_session(cgroups_and_limits.LAB, mode='live'); print(lab.run_id, flush=True); "
              "cgroups_and_limits.run_memory_unlimited(lab, fence_mib=256, step_mib=6, step_interval_ms=1000)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "LABKIT_RESULTS_DIR": str(tmp_path)}, preexec_fn=default_sigint)
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    deadline = time.monotonic() + 60
    while not (_labkit_groups(run_id) and leftovers(docker_client, run_id)["containers"]):
        assert time.monotonic() < deadline and child.poll() is None, "the experiment never started"
        time.sleep(0.05)  # waiting for the experiment's fence and container to exist
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=60) != 0
    assert leftovers(docker_client, run_id)["containers"] == []
    assert _labkit_groups(run_id) == []
