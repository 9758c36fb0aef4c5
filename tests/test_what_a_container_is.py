"""Notebook 01's lab: bad parameters are refused before anything runs; results replay into the same objects."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.results import ResultStore
from labkit.core.session import LabSession, open_session
from labkit.errors import BadParameter
from labkit.instruments import lsm, procfs
from labkit.labs import what_a_container_is
from labkit.labs.what_a_container_is import namespaces

LAB = what_a_container_is.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: what_a_container_is.run_namespaces(lab, base="alpine"), r"(?s)base='alpine'.*Choose one of"),
    (lambda lab: what_a_container_is.run_namespaces(lab, memory_limit_mib=4), r"(?s)memory_limit_mib=4.*6 MiB"),
    (lambda lab: what_a_container_is.run_privileges(lab, memory_limit_mib=-1), r"memory_limit_mib=-1"),
    # The engine path and the cgroup path share one floor and name the caller's parameter.
    (lambda lab: what_a_container_is.run_from_scratch(lab, memory_limit_mib=0), r"memory_limit_mib=0.*6 MiB"),
    (lambda lab: what_a_container_is.run_from_scratch(lab, memory_limit_mib=5), r"memory_limit_mib=5.*6 MiB"),
    (lambda lab: what_a_container_is.run_startup(lab, repeats=0), r"repeats=0"),
    (lambda lab: what_a_container_is.run_startup(lab, repeats=-3), r"repeats=-3"),
    (lambda lab: what_a_container_is.run_startup(lab, warmup=-1), r"warmup=-1"),
    (lambda lab: what_a_container_is.run_startup(lab, memory_limit_mib=5), r"memory_limit_mib=5"),
    (lambda lab: what_a_container_is.run_vm_boot(lab, repeats=0), r"repeats=0"),
    (lambda lab: what_a_container_is.run_vm_boot(lab, memory_mib=32), r"memory_mib"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(BadParameter, match=r"(?s)mode='vm'.*auto.*live.*replay"):
        open_session(what_a_container_is.LAB, mode="vm")


def test_replayed_objects_agree_with_the_raw_tables(replay: LabSession) -> None:
    ns = what_a_container_is.run_namespaces(replay)
    raw = pd.read_csv(replay.results_root / what_a_container_is.STEM / "namespaces.csv")
    default = raw[(raw["subject"] == what_a_container_is.DEFAULT) & (raw["inode"] != raw["host_inode"])]
    assert sorted(ns.new_kinds(what_a_container_is.DEFAULT)) == sorted(default["kind"])
    assert ns.parent_chain.split(" ← ")[1].startswith("containerd-shim")
    startup = what_a_container_is.run_startup(replay)
    samples = pd.read_csv(replay.results_root / what_a_container_is.STEM / "startup.csv")
    sdk = what_a_container_is.DOCKER_SDK
    assert startup.median_s(sdk) == samples.loc[samples["method"] == sdk, "wall_s"].median()
    boot = what_a_container_is.run_vm_boot(replay)
    assert boot.tried == len(pd.read_csv(replay.results_root / what_a_container_is.STEM / "vm_boot.csv"))


CHAPTER_NAMESPACE_CLAIMS = ("namespaces.six_kinds", "namespaces.host_network", "capabilities.net_raw")


def test_the_chapter_s_namespace_and_capability_claims_come_from_the_tables(replay: LabSession) -> None:
    ns, privileges = what_a_container_is.run_namespaces(replay), what_a_container_is.run_privileges(replay)
    rest = (what_a_container_is.run_from_scratch(replay), what_a_container_is.run_startup(replay),
            what_a_container_is.run_vm_boot(replay), what_a_container_is.run_clock(replay))
    recorded = ClaimLedger(what_a_container_is.STEM)
    what_a_container_is.check_claims(recorded, ns, privileges, *rest)
    # Recorded with Docker's defaults: no user namespace, CAP_NET_RAW kept, --network host shares the net namespace
    # and no other beyond a default container's.
    assert {i: recorded.verdict(i) for i in CHAPTER_NAMESPACE_CLAIMS} == dict.fromkeys(CHAPTER_NAMESPACE_CLAIMS,
                                                                                         Verdict.FAILS)
    assert "the host's: user" in next(c.measured for c in recorded if c.id == "namespaces.six_kinds")
    assert "shares net with the host beyond" in next(c.measured for c in recorded if c.id == "namespaces.host_network")
    # The same tables as a daemon with user namespaces remapped, a run that dropped NET_RAW and a host network flag
    # that shared every namespace would have recorded them: each claim holds.
    t, caps = ns.namespaces, privileges.capabilities
    remapped = t.assign(shared=t["shared"] & ((t["subject"] == what_a_container_is.HOST) | (t["kind"] != "user")))
    everything = remapped.assign(shared=remapped["shared"] | (remapped["subject"] == what_a_container_is.HOST_NETWORK))
    dropped = caps.assign(effective=caps["effective"] & ~((caps["subject"] == what_a_container_is.DEFAULT)
                                                          & (caps["capability"] == what_a_container_is.NET_RAW)))
    other = ClaimLedger(what_a_container_is.STEM)
    what_a_container_is.check_claims(other, replace(ns, namespaces=everything),
                                     what_a_container_is.PrivilegeResult(dropped), *rest)
    assert {i: other.verdict(i) for i in CHAPTER_NAMESPACE_CLAIMS} == dict.fromkeys(CHAPTER_NAMESPACE_CLAIMS,
                                                                                      Verdict.HOLDS)


def test_vm_lower_bound_counts_a_timeout_as_at_least_its_timeout() -> None:
    boots = pd.DataFrame({"repeat": [0, 1, 2, 3], "wall_s": [9.0, 10.0, 299.9, 0.4],
                          "marker_seen": [True, True, False, False], "timed_out": [False, False, True, False],
                          "timeout_s": [300.0] * 4, "accelerator": ["tcg"] * 4, "kernel_release": ["6.1"] * 4,
                          "kvm_probe": ["slow"] * 4})
    result = what_a_container_is.VmBootResult(boots)
    # reached: its time; timed out: at least the timeout; QEMU died early (0.4 s): no evidence of a boot time.
    assert result.lower_bound_s.tolist()[:3] == [9.0, 10.0, 300.0] and pd.isna(result.lower_bound_s.iloc[3])
    assert (result.reached, result.tried, result.median_s) == (2, 4, 10.0)


# ---------------------------------------------------------------- the clock and AppArmor, on hand-made tables

HOST_TIME_NS = 4026531834  # the initial time namespace's inode on this series' kernels (ls -l /proc/1/ns/time)


def _clock(own_ns: float, wall: float, since_boot: float) -> what_a_container_is.ClockResult:
    # The host read 1000.7 s then 1000.9 s around `date +%s` (so 1000 to 1000.9 in whole seconds), and 52.314 then
    # 52.329 s since boot around /proc/uptime (52.31 to 52.329 in hundredths).
    return what_a_container_is.ClockResult(pd.DataFrame([
        namespaces._clock_row(namespaces.TIME_NAMESPACE, own_ns, HOST_TIME_NS, HOST_TIME_NS),
        namespaces._clock_row(namespaces.TIME_FOR_CHILDREN, own_ns, HOST_TIME_NS, HOST_TIME_NS),
        namespaces._clock_row(namespaces.REALTIME, wall, 1000, 1000.9),
        namespaces._clock_row(namespaces.BOOTTIME, since_boot, 52.31, 52.329)]))


def _clock_verdict(clock: what_a_container_is.ClockResult, replay: LabSession) -> Verdict:
    ledger = ClaimLedger(what_a_container_is.STEM)
    what_a_container_is.claims.check_clock(ledger, clock, what_a_container_is.run_privileges(replay))
    return ledger.verdict("namespaces.time_is_the_host_s")


def test_the_clock_is_the_host_s_only_within_the_host_s_bracket(replay: LabSession) -> None:
    assert _clock_verdict(_clock(HOST_TIME_NS, 1000, 52.31), replay) == Verdict.HOLDS
    # Its own time namespace (what `unshare --time` would give); a wall clock a second ahead; uptime offset by 1 h.
    assert _clock_verdict(_clock(4026532300, 1000, 52.31), replay) == Verdict.FAILS
    assert _clock_verdict(_clock(HOST_TIME_NS, 1001, 52.31), replay) == Verdict.FAILS
    assert _clock_verdict(_clock(HOST_TIME_NS, 1000, 3652.31), replay) == Verdict.FAILS
    # A kernel without time namespaces (NaN links): one clock for all, the namespace test passes by construction.
    assert _clock(float("nan"), 1000, 52.31).shares_time_namespace


def _confinement(enabled: str, label: str, options: str) -> what_a_container_is.ConfinementResult:
    return what_a_container_is.ConfinementResult(pd.DataFrame([
        {"subject": subject, "apparmor_enabled": enabled, "apparmor_fs": enabled == "Y", "active_modules": "",
         "label": text, "engine_security_options": options}
        for subject, text in ((what_a_container_is.HOST, "unconfined"), (what_a_container_is.DEFAULT, label))]))


@pytest.mark.parametrize(("enabled", "label", "options", "confined"), [
    # An Ubuntu host as docker.io sets it up: the profile, enforced (docker info: name=apparmor).
    ("Y", "docker-default (enforce)", "name=apparmor;name=seccomp,profile=default", True),
    # AppArmor enabled, but the container started with --security-opt apparmor=unconfined, or the profile in
    # complain mode (it logs, it does not deny).
    ("Y", "unconfined", "name=apparmor;name=seccomp,profile=default", False),
    ("Y", "docker-default (complain)", "name=apparmor", False),
    # This series' machines: no AppArmor in the kernel, nothing to read.
    (lsm.NOT_IN_KERNEL, procfs.NO_SECURITY_LABEL, "name=seccomp,profile=default", False),
])
def test_a_container_is_confined_only_under_docker_s_enforced_profile(enabled: str, label: str, options: str,
                                                                      confined: bool) -> None:
    result = _confinement(enabled, label, options)
    assert result.confined == confined
    assert result.engine_lists_apparmor == options.startswith("name=apparmor")
    assert result.apparmor_enabled == (enabled == "Y")
    assert ("with no AppArmor in the kernel" in result.conclusion()) == (enabled != "Y")


def test_security_labels_and_time_links_are_read_from_a_made_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "7" / "ns").mkdir(parents=True)
    (tmp_path / "7" / "attr" / "apparmor").mkdir(parents=True)
    (tmp_path / "7" / "ns" / "time_for_children").write_text("time:[4026532301]\n")
    (tmp_path / "7" / "attr" / "current").write_text("system_u:system_r:container_t:s0\n")
    (tmp_path / "7" / "attr" / "apparmor" / "current").write_text("docker-default (enforce)\n")
    assert procfs.namespace_for_children("time", 7, tmp_path) == 4026532301
    assert procfs.namespace_for_children("pid", 7, tmp_path) is None  # no such link in this tree
    assert procfs.security_label(7, tmp_path) == "docker-default (enforce)"  # AppArmor's own file first
    (tmp_path / "7" / "attr" / "apparmor" / "current").unlink()
    assert procfs.security_label(7, tmp_path) == "system_u:system_r:container_t:s0"
    (tmp_path / "7" / "attr" / "current").unlink()
    assert procfs.security_label(7, tmp_path) == procfs.NO_SECURITY_LABEL
    with pytest.raises(procfs.ProcessGone):
        procfs.security_label(8, tmp_path)
    (tmp_path / "7" / "ns" / "time_for_children").write_text("pid:[4026531836]\n")
    with pytest.raises(ValueError, match="expected 'time'"):
        procfs.namespace_for_children("time", 7, tmp_path)


def test_apparmor_s_state_is_read_from_a_made_sys_tree(tmp_path: Path) -> None:
    assert lsm.host_modules(tmp_path) == lsm.HostModules(lsm.NOT_IN_KERNEL, False, lsm.NOT_READABLE)
    (tmp_path / lsm.APPARMOR_ENABLED).parent.mkdir(parents=True)
    (tmp_path / lsm.APPARMOR_ENABLED).write_text("Y\n")
    (tmp_path / lsm.APPARMOR_FS).mkdir(parents=True)
    (tmp_path / lsm.ACTIVE_LSMS).write_text("lockdown,capability,yama,apparmor\n")
    found = lsm.host_modules(tmp_path)
    assert found.apparmor and found.apparmor_fs and found.active == "lockdown,capability,yama,apparmor"


def test_a_recording_made_before_the_clock_and_apparmor_replays_saying_so(replay: LabSession,
                                                                         tmp_path: Path) -> None:
    assert replay.replay is not None
    older = tmp_path / what_a_container_is.STEM
    shutil.copytree(replay.replay.folder, older)
    for table in ("clock", "confinement"):  # what a recording made before these sections lacks
        (older / f"{table}.csv").unlink(missing_ok=True)
    session = LabSession.replaying(what_a_container_is.LAB, ResultStore(older))
    clock, confinement = what_a_container_is.run_clock(session), what_a_container_is.run_confinement(session)
    assert not clock.recorded and "not measured in the recording" in clock.conclusion()
    assert not confinement.recorded and "not read in the recording" in confinement.conclusion()
    ledger = ClaimLedger(what_a_container_is.STEM)
    what_a_container_is.check_claims(ledger, what_a_container_is.run_namespaces(session),
                                     what_a_container_is.run_privileges(session),
                                     what_a_container_is.run_from_scratch(session),
                                     what_a_container_is.run_startup(session), what_a_container_is.run_vm_boot(session),
                                     clock)
    assert "namespaces.time_is_the_host_s" not in {c.id for c in ledger}
