"""Notebook 01's lab: bad parameters are refused before anything runs; results replay into the same objects."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from labkit.app.claims import ClaimLedger
from labkit.app.session import LabSession, open_session
from labkit.errors import BadParameter
from labkit.labs import anatomy


@pytest.fixture(scope="module")
def replay() -> LabSession:
    # A replay session would hand back the recorded tables: only validation can stop these calls.
    return open_session(anatomy.STEM, mode="replay")


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: anatomy.run_namespaces(lab, base="alpine"), r"(?s)base='alpine'.*Choose one of"),
    (lambda lab: anatomy.run_namespaces(lab, memory_limit_mib=4), r"(?s)memory_limit_mib=4.*6 MiB"),
    (lambda lab: anatomy.run_privileges(lab, memory_limit_mib=-1), r"memory_limit_mib=-1"),
    # The engine path and the cgroup path share one floor and name the caller's parameter.
    (lambda lab: anatomy.run_from_scratch(lab, memory_limit_mib=0), r"memory_limit_mib=0.*6 MiB"),
    (lambda lab: anatomy.run_from_scratch(lab, memory_limit_mib=5), r"memory_limit_mib=5.*6 MiB"),
    (lambda lab: anatomy.run_startup(lab, repeats=0), r"repeats=0"),
    (lambda lab: anatomy.run_startup(lab, repeats=-3), r"repeats=-3"),
    (lambda lab: anatomy.run_startup(lab, warmup=-1), r"warmup=-1"),
    (lambda lab: anatomy.run_startup(lab, memory_limit_mib=5), r"memory_limit_mib=5"),
    (lambda lab: anatomy.run_vm_boot(lab, repeats=0), r"repeats=0"),
    (lambda lab: anatomy.run_vm_boot(lab, memory_mib=32), r"memory_mib"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(BadParameter, match=r"(?s)mode='vm'.*auto.*live.*replay"):
        open_session(anatomy.STEM, mode="vm")


def test_recorded_results_replay_into_the_same_claims(replay: LabSession) -> None:
    ns = anatomy.run_namespaces(replay)
    privileges = anatomy.run_privileges(replay)
    from_scratch = anatomy.run_from_scratch(replay)
    startup = anatomy.run_startup(replay)
    boot = anatomy.run_vm_boot(replay)
    ledger = ClaimLedger(anatomy.STEM)
    anatomy.check_claims(ledger, ns, privileges, from_scratch, startup, boot)
    assert replay.replay is not None
    recorded = replay.replay.read_table("claims")
    pd.testing.assert_frame_equal(ledger.frame()[["id", "verdict"]], recorded[["id", "verdict"]])


def test_replayed_objects_agree_with_the_raw_tables(replay: LabSession) -> None:
    ns = anatomy.run_namespaces(replay)
    raw = pd.read_csv(replay.results_root / anatomy.STEM / "namespaces.csv")
    default = raw[(raw["subject"] == anatomy.DEFAULT) & (raw["inode"] != raw["host_inode"])]
    assert sorted(ns.new_kinds(anatomy.DEFAULT)) == sorted(default["kind"])
    assert ns.parent_chain.split(" ← ")[1].startswith("containerd-shim")
    startup = anatomy.run_startup(replay)
    samples = pd.read_csv(replay.results_root / anatomy.STEM / "startup.csv")
    assert startup.median_s(anatomy.DOCKER_SDK) == samples.loc[samples["method"] == anatomy.DOCKER_SDK,
                                                               "wall_s"].median()
    boot = anatomy.run_vm_boot(replay)
    assert boot.tried == len(pd.read_csv(replay.results_root / anatomy.STEM / "vm_boot.csv"))


def test_vm_lower_bound_counts_a_timeout_as_at_least_its_timeout() -> None:
    boots = pd.DataFrame({"repeat": [0, 1, 2, 3], "wall_s": [9.0, 10.0, 299.9, 0.4],
                          "marker_seen": [True, True, False, False], "timed_out": [False, False, True, False],
                          "timeout_s": [300.0] * 4, "accelerator": ["tcg"] * 4, "kernel_release": ["6.1"] * 4,
                          "kvm_probe": ["slow"] * 4})
    result = anatomy.VmBootResult(boots)
    # reached: its time; timed out: at least the timeout; QEMU died early (0.4 s): no evidence of a boot time.
    assert result.lower_bound_s.tolist()[:3] == [9.0, 10.0, 300.0] and pd.isna(result.lower_bound_s.iloc[3])
    assert (result.reached, result.tried, result.median_s) == (2, 4, 10.0)
