"""Notebook 15's lab machine: bad settings refused before anything starts; the probe's parsers and the verdicts on
known answers (each claim turned by one changed reading); the boot's command line and marks; the sweep of a boot a
SIGKILL left; and, live, the machine's known answers (cgroup v2 mounted, the systemd driver, the OOM kill counted in
memory.events, a private cgroup namespace) and nothing left after SIGINT, SIGTERM or SIGKILL."""

from __future__ import annotations

import ast
import importlib.util
import os
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
from labkit.instruments.vm import guest, kernel
from labkit.labs import the_lab_machine
from labkit.labs.the_lab_machine import machine as machine_module
from labkit.labs.the_lab_machine.machine import _probe_rows
from tests.conftest import interrupt_experiment, leftovers

LAB = the_lab_machine.LAB  # what the `replay` fixture (conftest.py) replays
SCOPE = "/sys/fs/cgroup/system.slice/docker-" + "a" * 64 + ".scope"


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
            guest_probe: dict[str, Any] | None = None) -> the_lab_machine.MachineResult:
    rows: dict[str, list[dict[str, object]]] = {"facts": [], "cgroupns": [], "oom": [], "writes": []}
    for probe, machine, boot in ((host or _probe("host"), "host", 0), (guest_probe or _probe("guest"), "guest", 1)):
        for table, found in _probe_rows(probe, machine, boot).items():
            rows[table] += found
    offsets = {"kernel": -28.7, "systemd": -20.1, "default-target": 0.0, "docker-ready": 1.2, "image-ready": 6.0,
               "job-done": 60.0, "off": 62.0}
    marks = pd.DataFrame([{"boot": 1, "accelerator": accelerator, "mark": mark, "host_s": boot_s + offset,
                           "guest_uptime_s": None} for mark, offset in offsets.items()])
    return the_lab_machine.MachineResult(pd.DataFrame([{}]), marks,
                                         *(pd.DataFrame(rows[t]) for t in ("facts", "cgroupns", "oom", "writes")))


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


def test_a_write_faster_than_the_clock_step_counts_as_one_step() -> None:
    ratios = _result().write_ratio()
    assert ratios.loc["buffered, then sync", "host"] == pytest.approx(200.0)  # 2 MiB in ≤ 10 ms: at least 200×
    assert "≥ 200.00× (buffered, then sync)" in _result().io_conclusion()


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
