"""Notebook 15's lab machine: bad settings refused before anything starts; the probe's parsers (on recorded cgroup
files), the verdicts and the conclusions' wording on known answers (each turned by one changed reading); the boot's
command line and marks; the sweep of a boot a SIGKILL left; and, live, the machine's known answers (cgroup v2
mounted, the systemd driver, the OOM kill counted in memory.events, a private cgroup namespace) and nothing left after
SIGINT, SIGTERM or SIGKILL."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pandas as pd
import pytest

from labkit import assets
from labkit.app import runner
from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import procfs, space
from labkit.instruments.host import HostFacts
from labkit.instruments.vm import guest, kernel
from labkit.labs import the_lab_machine
from labkit.labs.the_lab_machine import machine as machine_module
from labkit.labs.the_lab_machine.machine import _probe_rows
from tests.conftest import interrupt_experiment, leftovers

LAB = the_lab_machine.LAB  # what the `replay` fixture (conftest.py) replays
SCOPE = "/sys/fs/cgroup/system.slice/docker-" + "a" * 64 + ".scope"
FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
# This host: a VM (its CPU reports a hypervisor) whose /dev/kvm is nested; and a bare-metal host with real KVM.
NESTED_VM = HostFacts(virtualised=True, pid1_ns_readable=False, kvm_modules=("kvm_pvm",), bounding_capabilities=40)
BARE_METAL = HostFacts(virtualised=False, pid1_ns_readable=True, kvm_modules=("kvm_intel",), bounding_capabilities=41)
DIRECT_BOOT = ("SeaBIOS (version 1.16.2-debian-1.16.2-1)", "Booting from ROM...", "[    0.000000] Linux version 6.1")
DISK_BOOT = ("SeaBIOS (version 1.16.2-debian-1.16.2-1)", "Booting from Hard Disk...", "GRUB loading.")
IMAGE = {"kernel_package": "linux-image-6.1.0-57-amd64", "made_utc": "2026-12-05T20:15:59Z", "debootstrap_s": 47.8,
         "kernel_s": 22.3, "disk_s": 4.1, "disk_used_bytes": 1239552000, "docker_version": "20.10.24+dfsg1-1",
         "systemd_version": "252.39-1~deb12u2", "python3_version": "3.11.2-1+b1"}


def _probe_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("probe", assets.FOLDER / "lab_machine" / "probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- refused before anything starts


@pytest.mark.parametrize(("settings", "message"), [
    ({"memory_mib": 512}, r"memory_mib must be >= 1024"),
    ({"cpus": 0}, r"cpus must be between 1"),
    ({"cpus": 10_000}, r"cpus must be between 1"),
    ({"timeout_s": 0}, r"timeout_s must be > 0"),
    ({"boots": 0}, r"boots=0: need a whole number >= 1"),
])
def test_bad_settings_are_refused(replay: LabSession, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        the_lab_machine.run_machine(replay, **settings)


def test_an_unknown_accelerator_is_refused() -> None:
    with pytest.raises(BadParameter, match="accel must be one of"):
        guest.validate_run("hvf", 2048, 1, 60)


# ---------------------------------------------------------------- the instrument, without booting


def _made(tmp_path: Path) -> guest.GuestImage:
    return guest.GuestImage(tmp_path, tmp_path / "disk.img", tmp_path / "vmlinuz", tmp_path / "initrd.img",
                            {"kernel_release": "6.1.0-57-amd64"})


def test_the_kernel_is_fetched_into_a_fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by make bench: on an empty cache folder, 15 asked for 01's kernel before anything made its folder."""
    folders: list[bool] = []

    def download(cache_dir: Path) -> dict[str, object]:
        folders.append(cache_dir.is_dir())
        return {"package": "linux-image-6.1.0-57-amd64"}

    monkeypatch.setattr(kernel, "_download_kernel", download)
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path / "empty-cache"))
    assert not guest.is_made() and folders == [True]


def test_the_disk_is_booted_behind_a_snapshot_with_no_network(tmp_path: Path) -> None:
    argv = guest.qemu_argv(_made(tmp_path), tmp_path / "share", "tcg", 2048, 2)
    assert "-snapshot" in argv and argv[argv.index("-nic") + 1] == "none" and "-no-reboot" in argv
    assert f"file={tmp_path / 'disk.img'},if=virtio,format=raw" in argv
    assert f"local,path={tmp_path / 'share'},mount_tag=labkit,security_model=none" in argv
    assert argv[argv.index("-m") + 1] == "2048" and argv[argv.index("-smp") + 1] == "2"


def test_the_recipe_hash_follows_the_kernel() -> None:
    assert guest.recipe_hash("linux-image-6.1.0-57-amd64") != guest.recipe_hash("linux-image-6.1.0-58-amd64")
    assert guest.recipe_hash("linux-image-6.1.0-57-amd64") == guest.recipe_hash("linux-image-6.1.0-57-amd64")


def test_the_job_lines_are_those_between_docker_answering_and_the_job_ending() -> None:
    run = guest.GuestRun("tcg", {}, {}, True, 0, {}, (
        "[ 1.0] Linux version 6.1", "LABKIT mark default-target 30.1", "LABKIT mark docker-ready 31.2",
        "Traceback: boom", "[  OK  ] Started something", "LABKIT mark job-done 50.0", "reboot: Power down"))
    assert run.job_lines() == ["Traceback: boom", "[  OK  ] Started something"]
    match = guest.MARK_RE.search("LABKIT mark docker-ready 31.25")
    assert match is not None and match.groups() == ("docker-ready", "31.25")


def test_a_boot_left_by_a_sigkill_is_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_STATE", str(tmp_path / "state"))
    folder = guest.runs_parent() / "r20261205-dead00-0123abcd"
    (folder / "share").mkdir(parents=True)
    # Stands in for a QEMU whose maker was SIGKILLed: a process whose arguments name the run's folder.
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(folder / "tmp")])
    try:
        time.sleep(0.2)  # its exec done, so /proc shows its arguments
        assert orphan.pid in procfs.naming([str(folder)])
        assert guest.sweep("r20261205-other0") == [] and folder.exists()  # another run's folders stay
        assert guest.sweep("r20261205-dead00") == [f"lab machine run {folder}"]
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert not folder.exists() and not guest.runs_parent().exists()
    finally:
        orphan.kill()
        orphan.wait()


def _guest_as_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str) -> list[subprocess.Popen[str]]:
    """A boot whose "QEMU" is `script` (sh, started by the real spawn), its state below `tmp_path`."""
    monkeypatch.setenv("LABKIT_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(guest, "qemu_argv", lambda *args, **kwargs: ["/bin/sh", "-c", script])
    started: list[subprocess.Popen[str]] = []
    spawn = guest.shell.spawn

    def recorded(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        started.append(spawn(argv, **kwargs))
        return started[-1]

    monkeypatch.setattr(guest.shell, "spawn", recorded)
    return started


def test_a_guest_that_stalls_before_its_ready_mark_is_stopped_then_and_booted_again_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = _guest_as_script(monkeypatch, tmp_path, "echo '[ 0.1] Linux version 6.1'; "
                               "echo 'LABKIT mark docker-ready 0.5'; exec sleep 900")
    log, told = tmp_path / "console.log", []
    began = time.perf_counter()
    run = guest.run_job(_made(tmp_path), "true", {}, run_id="r-stall", accel="tcg", timeout_s=600,
                        ready=("lab-ready", 1.0), console_log=log, on_mark=lambda name, s: told.append(name))
    assert not run.completed and "lab-ready" not in run.marks and "off" not in run.marks
    assert run.stalls == guest.STALL_BOOTS == 2 and len(started) == 2
    assert 2.0 <= time.perf_counter() - began < 300  # each stopped at the 1 s bound, not at the 600 s timeout
    assert [proc.returncode for proc in started] == [-signal.SIGKILL] * 2
    assert told == ["docker-ready", "stalled", "docker-ready"]  # the caller hears of the stall before the boot
    lines = log.read_text().splitlines()
    assert lines[2] == "-- stalled: no lab-ready 1 s after QEMU started; the guest is booted again"
    boots = [lines[:2], lines[3:]]
    for timed in boots:  # every boot's lines, each after its seconds from that boot's start
        assert [line.split(maxsplit=1)[1] for line in timed] == ["[ 0.1] Linux version 6.1",
                                                                  "LABKIT mark docker-ready 0.5"]
        assert all(0 <= float(line.split()[0]) < 1.0 for line in timed)
    assert not guest.runs_parent().exists()  # both boots' folders removed


def test_a_boot_that_stalls_once_is_booted_again_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "booted-once"  # the first "boot" stalls; the second reaches the mark and powers off
    _guest_as_script(monkeypatch, tmp_path, f"if [ -e {marker} ]; then echo 'LABKIT mark lab-ready 0.2'; "
                     f"echo 'LABKIT mark job-done 0.3'; else touch {marker}; exec sleep 60; fi")
    run = guest.run_job(_made(tmp_path), "true", {}, run_id="r-once", accel="tcg", timeout_s=60,
                        ready=("lab-ready", 1.0))
    assert run.completed and run.stalls == 1 and "lab-ready" in run.marks


def test_the_ready_mark_lifts_the_bound_to_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _guest_as_script(monkeypatch, tmp_path, "echo 'LABKIT mark lab-ready 0.2'; sleep 1.5; "
                     "echo 'LABKIT mark job-done 1.7'")
    run = guest.run_job(_made(tmp_path), "true", {}, run_id="r-ready", accel="tcg", timeout_s=60,
                        ready=("lab-ready", 0.5))
    assert run.completed and run.marks["off"] >= 1.5  # it ran on past the 0.5 s bound once ready


def test_a_ready_bound_beyond_the_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="within timeout_s"):
        guest.run_job(_made(tmp_path), "true", {}, run_id="r-bad", accel="tcg", timeout_s=60,
                      ready=("lab-ready", 61.0))


def test_the_whole_disk_is_named_for_a_partition(tmp_path: Path) -> None:
    device = os.stat(tmp_path).st_dev
    sys_root = tmp_path / "sys"
    partition = sys_root / "devices" / "virtual" / "vdz" / "vdz1"
    partition.mkdir(parents=True)
    (partition / "partition").write_text("1\n")
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / f"{os.major(device)}:{os.minor(device)}").symlink_to(partition)
    assert space.whole_disk(tmp_path, sys_root) == Path("/dev/vdz")
    (partition / "partition").unlink()
    assert space.whole_disk(tmp_path, sys_root) == Path("/dev/vdz1")
    with pytest.raises(BadParameter, match="no block device"):
        space.whole_disk(tmp_path, tmp_path / "empty-sys")


# ---------------------------------------------------------------- the probe's parsers


def test_the_probe_reads_v1_and_v2_files() -> None:
    probe = _probe_module()
    assert probe.keyed("low 0\nhigh 0\nmax 18\noom 1\noom_kill 1\n") == {
        "low": 0, "high": 0, "max": 18, "oom": 1, "oom_kill": 1}
    assert probe.keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2
    pressure = ("some avg10=0.00 avg60=0.00 avg300=0.00 total=8277\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=8100\n")
    assert probe.stall_us(pressure, "some") == 8277 and probe.stall_us(pressure, "full") == 8100
    assert probe.stall_us("", "some") is None


# ---------------------------------------------------------------- verdicts on known answers


def _probe(machine: str, **changes: Any) -> dict[str, Any]:
    """What the probe reports on a v1 host with cgroupfs, or on a v2 guest with systemd, as measured here."""
    v2 = machine == "guest"
    oom = {"waited_s": 1.3, "cgroup": SCOPE if v2 else "/sys/fs/cgroup/memory/docker/" + "b" * 64,
           "pid1_running": True, "oom_killed_flag": False, "child_exit": 137, "oom_events": 1 if v2 else None,
           "oom_kills": 1, "limit_hits": 18, "peak_bytes": 64 << 20, "limit_bytes": str(64 << 20),
           "swap_limit": "0", "oom_group": "0" if v2 else "", "pressure_some_us": 8277 if v2 else None,
           "pressure_full_us": 8277 if v2 else None}
    sync_s = changes.pop("sync_s", 2.1 if v2 else 0.0)
    writes = [{"kind": kind, "limit_bps": limit, "bytes": 2 << 20,
               "seconds": (sync_s if kind == "buffered, then sync" else 2.05) if limit else 0.01,
               "rate_bps": None}
              for kind in ("buffered, then sync", "buffered + fsync", "direct") for limit in (0, 1 << 20)]
    own = "cgroup:[4026531835]"
    namespaces = [{"mode": mode, "namespace": own if shared else "cgroup:[4026532244]", "shared_with_host": shared,
                   "sees_path": "/" if not shared else "/docker/x", "cgroup_lines": 1}
                  for mode, shared in (("default", not v2), ("host", True), ("private", False))]
    facts = {"cgroup_fs": "cgroup2fs" if v2 else "tmpfs", "cgroup_driver": "systemd" if v2 else "cgroupfs",
             "cgroup_version": "2" if v2 else "1", "server_version": "20.10.24+dfsg1",
             "kernel": "6.1.0-57-amd64" if v2 else "6.18.44", "operating_system": "Debian", "own_cgroupns": own}
    probe: dict[str, Any] = {"facts": facts, "cgroupns": namespaces, "oom": oom, "writes": writes}
    for key, value in changes.items():
        section, field = key.split("__")
        probe[section][field] = value
    return probe


def _result(boot_s: float = 33.4, accelerator: str = "tcg", host: dict[str, Any] | None = None,
            guest_probe: dict[str, Any] | None = None, host_facts: HostFacts | None = NESTED_VM,
            console: tuple[str, ...] = DIRECT_BOOT) -> the_lab_machine.MachineResult:
    rows: dict[str, list[dict[str, object]]] = {"facts": [], "cgroupns": [], "oom": [], "writes": []}
    for probe, machine, boot in ((host or _probe("host"), "host", 0), (guest_probe or _probe("guest"), "guest", 1)):
        for table, found in _probe_rows(probe, machine, boot).items():
            rows[table] += found
    offsets = {"kernel": -28.7, "systemd": -20.1, "default-target": 0.0, "docker-ready": 1.2, "image-ready": 6.0,
               "job-done": 60.0, "off": 62.0}
    marks = pd.DataFrame([{"boot": 1, "accelerator": accelerator, "mark": mark, "host_s": boot_s + offset,
                           "guest_uptime_s": None} for mark, offset in offsets.items()])
    lines = pd.DataFrame([{"boot": 1, "line": line} for line in console])
    facts, cgroupns, oom, writes = (pd.DataFrame(rows[t]) for t in ("facts", "cgroupns", "oom", "writes"))
    return the_lab_machine.MachineResult(pd.DataFrame([IMAGE]), marks, lines, facts, cgroupns, oom, writes, host_facts)


def _verdicts(result: the_lab_machine.MachineResult) -> dict[str, Verdict]:
    ledger = ClaimLedger(the_lab_machine.STEM)
    the_lab_machine.check_claims(ledger, result)
    return {claim.id: claim.verdict for claim in ledger}


def test_the_measured_answers_hold() -> None:
    verdicts = _verdicts(_result())
    assert verdicts.pop("machine.vm_minutes") == Verdict.FAILS  # 33 s: seconds, not minutes
    assert set(verdicts.values()) == {Verdict.HOLDS}, verdicts


@pytest.mark.parametrize(("result", "claim", "expected"), [
    (_result(boot_s=75.0), "machine.vm_minutes", Verdict.INCONCLUSIVE),  # a minute, but emulated
    (_result(boot_s=75.0, accelerator="kvm"), "machine.vm_minutes", Verdict.HOLDS),
    (_result(guest_probe=_probe("guest", oom__oom_group="1", oom__pid1_running=False)),
     "machine.oom_kills_one_process", Verdict.FAILS),
    (_result(guest_probe=_probe("guest", oom__oom_kills=0)), "machine.cgroup_v2_memory", Verdict.FAILS),
    (_result(guest_probe=_probe("guest", oom__peak_bytes=(64 << 20) + 4096)), "machine.cgroup_v2_memory",
     Verdict.FAILS),
    (_result(guest_probe=_probe("guest", oom__pressure_some_us=0)), "machine.memory_pressure", Verdict.FAILS),
    (_result(guest_probe=_probe("guest", oom__pressure_some_us=None)), "machine.memory_pressure",
     Verdict.INCONCLUSIVE),
    (_result(guest_probe=_probe("guest", sync_s=0.2)), "machine.cgroup_v2_io", Verdict.FAILS),
    (_result(guest_probe=_probe("guest", sync_s=0.2)), "machine.writeback_charged_on_v2", Verdict.FAILS),
    (_result(host=_probe("host", sync_s=2.1)), "machine.writeback_charged_on_v2", Verdict.FAILS),
    (_result(guest_probe=_probe("guest", facts__cgroup_driver="cgroupfs")), "machine.systemd_driver",
     Verdict.FAILS),
    (_result(guest_probe=_probe("guest", oom__cgroup="/sys/fs/cgroup/docker/" + "c" * 64)),
     "machine.systemd_driver", Verdict.FAILS),
])
def test_one_changed_reading_turns_its_claim(result: the_lab_machine.MachineResult, claim: str,
                                             expected: Verdict) -> None:
    assert _verdicts(result)[claim] == expected


def test_a_shared_default_namespace_in_the_guest_turns_its_claim() -> None:
    shared = _probe("guest")
    shared["cgroupns"][0].update({"namespace": "cgroup:[4026531835]", "shared_with_host": True,
                                  "sees_path": "/system.slice/docker-x.scope"})
    assert _verdicts(_result(guest_probe=shared))["machine.cgroupns_private_on_v2"] == Verdict.FAILS


def test_on_a_v2_host_the_v1_comparisons_are_inconclusive_not_refuted() -> None:
    v2_host = _verdicts(_result(host=_probe("guest")))  # the host measured as the guest is: v2, systemd
    for claim in ("machine.writeback_charged_on_v2", "machine.cgroupns_private_on_v2"):
        assert v2_host[claim] == Verdict.INCONCLUSIVE, claim
        assert _verdicts(_result())[claim] == Verdict.HOLDS, claim  # on the v1 host they are decided
    assert v2_host["machine.systemd_driver"] == Verdict.HOLDS  # the guest's own claims stay decided


def test_a_write_faster_than_the_clock_step_counts_as_one_step() -> None:
    ratios = _result().write_ratio()
    assert ratios.loc["buffered, then sync", "host"] == pytest.approx(200.0)  # 2 MiB in ≤ 10 ms: at least 200×
    assert "≥ 200.00× (buffered, then sync)" in _result().io_conclusion()


def _claim(result: the_lab_machine.MachineResult, claim_id: str) -> Any:
    ledger = ClaimLedger(the_lab_machine.STEM)
    the_lab_machine.check_claims(ledger, result)
    return next(claim for claim in ledger if claim.id == claim_id)


def test_the_memory_cap_on_v2_is_a_demonstration() -> None:
    """memory.max is the engine's own setting read back and memory.peak <= memory.max is the kernel's rule."""
    assert _claim(_result(), "machine.cgroup_v2_memory").criterion.startswith("a demonstration")


@pytest.mark.parametrize(("host_facts", "accelerator", "console", "present", "absent"), [
    (NESTED_VM, "tcg", DIRECT_BOOT,
     ["under software emulation (TCG) inside a virtual machine", "nested, kvm_pvm", "hardware-speed KVM",
      "SeaBIOS booted from ROM", "-kernel/-initrd"], []),
    (BARE_METAL, "tcg", DIRECT_BOOT, ["under software emulation (TCG), every", "SeaBIOS booted from ROM"],
     ["virtual machine", "kvm_pvm"]),
    (None, "tcg", DISK_BOOT, ["under software emulation (TCG), every"], ["virtual machine", "SeaBIOS booted"]),
    (BARE_METAL, "kvm", DIRECT_BOOT, ["SeaBIOS booted from ROM"], ["emulation", "hardware-speed KVM"]),
])
def test_the_boot_says_what_it_does_not_show(host_facts: HostFacts | None, accelerator: str,
                                             console: tuple[str, ...], present: list[str],
                                             absent: list[str]) -> None:
    result = _result(accelerator=accelerator, host_facts=host_facts, console=console)
    caveat = _claim(result, "machine.vm_minutes").caveat
    for text in (result.boot_conclusion(), caveat):
        assert all(p in text for p in present), (present, text)
        assert not any(a in text for a in absent), (absent, text)
    assert "(hardware-speed KVM would be faster)" in _claim(result, "machine.vm_minutes").criterion


def test_a_minute_under_emulation_says_why_it_is_inconclusive() -> None:
    caveat = _claim(_result(boot_s=75.0), "machine.vm_minutes").caveat
    assert caveat.startswith("it took a minute or more, but hardware-speed KVM might not; it booted under software "
                             "emulation (TCG) inside a virtual machine")
    assert caveat.endswith("so a VM that boots from its disk takes longer than this")


def test_a_boot_without_seabios_from_rom_in_every_boot_is_not_called_direct() -> None:
    assert _result(console=DIRECT_BOOT).direct_boot()
    assert not _result(console=DISK_BOOT).direct_boot()
    assert not _result(console=("[    0.000000] Linux version 6.1",)).direct_boot()  # no SeaBIOS line at all


def test_the_machine_names_both_cgroup_versions_from_the_facts() -> None:
    assert _result().legend() == {"host": "host (v1, cgroupfs)", "guest": "guest (v2, systemd)"}
    made = _result().made_conclusion()
    assert "Its engine reports cgroup v2 with the systemd driver; " in made
    assert "cgroup v1 with the cgroupfs driver." in made
    v2_host = _result(host=_probe("host", facts__cgroup_version="2", facts__cgroup_driver="systemd"))
    assert v2_host.legend()["host"] == "host (v2, systemd)"
    assert "the same version, so the sections below compare two machines of one cgroup version" in (
        v2_host.made_conclusion())


def test_the_defaults_compare_the_two_machines() -> None:
    text = _result().defaults_conclusion()
    assert "Both machines run Docker 20.10.24+dfsg1." in text
    assert "The kernel differs: 6.18.44 on the host, 6.1.0-57-amd64 in the guest." in text
    assert "gets different answers on the two" in text and "no configuration" not in text
    assert "`/system.slice/docker-<id>.scope`" in text and "(`/docker/<id>`)" in text
    newer = _result(host=_probe("host", facts__server_version="24.0.7", facts__kernel="6.1.0-57-amd64"))
    assert "Docker differs: 24.0.7 on the host, 20.10.24+dfsg1 in the guest." in newer.defaults_conclusion()
    assert "Both machines run the kernel 6.1.0-57-amd64." in newer.defaults_conclusion()
    same_view = _probe("host")
    same_view["cgroupns"][0].update({"shared_with_host": False, "sees_path": "/"})
    assert "gets the same answer on both machines" in _result(host=same_view).defaults_conclusion()


def test_the_oom_conclusion_follows_the_readings() -> None:
    text = _result().oom_conclusion()
    assert text.count("the kernel killed the child alone") == 2
    assert "OOMKilled flag read false in the guest and false on the host" in text
    assert "while every container was still running" in text and "main process" not in text
    assert "the host's failcnt stayed 0" not in text  # the hand-made host counted 18 failed charges
    grouped = _result(guest_probe=_probe("guest", oom__oom_group="1", oom__pid1_running=False,
                                         oom__child_exit=None, oom__oom_killed_flag=True))
    text = grouped.oom_conclusion()
    assert "memory.oom.group was 1 and the child's exit read none, with PID 1 still running in 0 of 1 boot(s)" in text
    assert text.count("the kernel killed the child alone") == 1  # the host's only
    assert "OOMKilled flag read true in the guest" in text and "found PID 1 gone in 1 of 2 run(s)" in text


def test_a_v1_failure_count_of_zero_at_the_limit_is_called_no_witness() -> None:
    text = _result(host=_probe("host", oom__limit_hits=0)).oom_conclusion()
    assert "0 on the host (failcnt); the host's failcnt stayed 0 although its peak reached the limit" in text
    below = _result(host=_probe("host", oom__limit_hits=0, oom__peak_bytes=(64 << 20) - 4096)).oom_conclusion()
    assert "stayed 0" not in below


def test_the_writes_are_explained_only_when_they_fit_their_cgroup_version() -> None:
    text = _result().io_conclusion()
    assert "On the host (cgroup v1) they fit" in text and "flusher threads" in text
    assert "In the guest (cgroup v2) they fit" in text
    held_on_v1 = _result(host=_probe("host", sync_s=2.1)).io_conclusion()
    assert "On the host (cgroup v1) they do not fit what that version predicts" in held_on_v1
    assert "flusher threads" not in held_on_v1
    escaped_on_v2 = _result(guest_probe=_probe("guest", sync_s=0.2)).io_conclusion()
    assert "In the guest (cgroup v2) they do not fit" in escaped_on_v2 and "dirtied the pages" not in escaped_on_v2


def test_the_probe_reads_the_recorded_oom_groups(tmp_path: Path) -> None:
    """Known answers: tests/fixtures/cgroup/README.md (a v1 group and a v2 group in the lab machine, each OOM-killed
    at 8 MiB)."""
    probe = _probe_module()
    v2 = probe.v2_memory(str(FIXTURES / "v2-guest" / "sys" / "fs" / "cgroup" / "fixture" / "oom"))
    assert v2 == {"oom_events": 1, "oom_kills": 1, "limit_hits": 74, "peak_bytes": 8388608, "limit_bytes": "8388608",
                  "swap_limit": "0", "oom_group": "", "pressure_some_us": None, "pressure_full_us": None}
    v1_folder = tmp_path / "oom"
    shutil.copytree(FIXTURES / "v1" / "sys" / "fs" / "cgroup" / "memory" / "fixture" / "oom", v1_folder)
    v1 = probe.v1_memory(str(v1_folder))
    assert (v1["oom_kills"], v1["limit_hits"], v1["peak_bytes"], v1["limit_bytes"]) == (1, 36, 8388608, "8388608")
    (v1_folder / "memory.memsw.failcnt").write_text("5\n")  # hand-made: charges that failed at memory+swap
    assert probe.v1_memory(str(v1_folder))["limit_hits"] == 41


# ---------------------------------------------------------------- live: notebook 15 in quick mode


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / the_lab_machine.STEM


def _table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv", keep_default_na=False, na_values=[""])


@pytest.mark.docker
def test_the_guest_gives_the_known_v2_answers(executed: Path) -> None:
    facts = _table(executed, "facts")
    guest_facts = facts[facts["machine"] == "guest"].set_index("key")["value"].astype(str)
    assert guest_facts["cgroup_fs"] == "cgroup2fs" and guest_facts["cgroup_version"] == "2"
    assert guest_facts["cgroup_driver"] == "systemd"
    oom = _table(executed, "oom").set_index("machine")
    assert oom.loc["guest", "oom_kills"] >= 1 and oom.loc["guest", "oom_events"] >= 1  # memory.events
    assert str(oom.loc["guest", "cgroup"]).startswith("/sys/fs/cgroup/system.slice/docker-")
    namespaces = _table(executed, "cgroupns").set_index(["machine", "mode"])
    assert not namespaces.loc[("guest", "default"), "shared_with_host"]
    assert namespaces.loc[("guest", "default"), "sees_path"] == "/"
    assert namespaces.loc[("host", "default"), "shared_with_host"]  # this host is cgroup v1


@pytest.mark.docker
def test_the_boot_reaches_every_mark_in_order(executed: Path) -> None:
    marks = _table(executed, "boot_marks").set_index("mark")["host_s"]
    assert list(marks.sort_values().index) == list(the_lab_machine.MARKS)
    assert _table(executed, "guest_image")["kernel_release"].iloc[0] in "\n".join(
        _table(executed, "console")["line"].dropna().astype(str))  # a blank console line reads as missing


def _qemu_of(run_id: str) -> list[int]:
    """The QEMU processes booting the lab machine for run `run_id` (found by their run folder in their arguments)."""
    folders = [str(folder) for folder in guest.runs_parent().glob(f"{run_id}-*")] if run_id else []
    return [pid for pid in procfs.naming(folders) if _is_qemu(pid)] if folders else []


def _is_qemu(pid: int) -> bool:
    try:
        return any("qemu-system" in arg for arg in procfs.cmdline(pid))  # a zombie has no arguments
    except (procfs.ProcessGone, OSError):
        return False


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_boot_leaves_nothing(docker_client: docker.DockerClient, tmp_path: Path,
                                            signum: int) -> None:
    seen: list[int] = []

    def booting(run_id: str) -> bool:
        seen[:] = _qemu_of(run_id)
        return bool(seen)

    run_id, child = interrupt_experiment("the_lab_machine", "run_machine(lab, boots=1)", tmp_path, signum,
                                         booting, "QEMU booting the lab machine")
    assert child.returncode != 0
    deadline = time.monotonic() + 30
    while any(_is_qemu(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.1)  # QEMU exiting: killed by labkit, or by the kernel when its parent died (SIGKILL)
    assert not any(_is_qemu(pid) for pid in seen), "QEMU outlived the notebook"
    if signum == signal.SIGKILL:  # nothing could run in the child: its folder waits for the next sweep
        runner.sweep(run_id)
    assert list(guest.runs_parent().glob(f"{run_id}-*")) == []
    assert leftovers(docker_client, run_id) == {"containers": [], "networks": [], "volumes": []}


def test_the_probe_needs_only_the_standard_library() -> None:
    """It runs where labkit is not installed: nothing but the standard library (and the docker CLI)."""
    tree = ast.parse((assets.FOLDER / "lab_machine" / "probe.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.docker
def test_a_probe_failing_in_the_guest_is_reported_and_leaves_nothing(
        docker_client: docker.DockerClient, live: LabSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's job fails part-way: the error shows what it printed and its status; no QEMU, boot folder or
    container is left."""
    monkeypatch.setattr(machine_module, "_GUEST_SCRIPT", "echo broken-probe-{image} >&2; exit 3\n")
    with pytest.raises(RuntimeError, match=r"(?s)status 3.*broken-probe-labkit/busybox:guest"):
        the_lab_machine.run_machine(live, boots=1)
    assert _qemu_of(live.run_id) == [] and list(guest.runs_parent().glob(f"{live.run_id}-*")) == []
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
