"""Notebook 01's lab: bad parameters are refused before anything runs; results replay into the same objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession, open_session
from labkit.errors import BadParameter
from labkit.labs import what_a_container_is

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
            what_a_container_is.run_vm_boot(replay))
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
