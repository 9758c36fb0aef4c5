"""Notebook 01's lab: bad parameters are refused before anything runs; results replay into the same objects."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labkit.app.claims import ClaimLedger
from labkit.app.session import LabSession, open_session
from labkit.labs import anatomy


@pytest.fixture(scope="module")
def replay() -> LabSession:
    # A replay session would hand back the recorded tables: only validation can stop these calls.
    return open_session(anatomy.TOPIC, mode="replay")


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: anatomy.run_namespaces(lab, base="alpine"), r"base='alpine'.*choose one of"),
    (lambda lab: anatomy.run_namespaces(lab, memory_limit_mib=4), r"memory_limit_mib=4.*6 MiB"),
    (lambda lab: anatomy.run_privileges(lab, memory_limit_mib=-1), r"memory_limit_mib=-1"),
    (lambda lab: anatomy.run_from_scratch(lab, memory_limit_mib=2), r"memory_max_bytes"),
    (lambda lab: anatomy.run_startup(lab, repeats=0), r"repeats=0"),
    (lambda lab: anatomy.run_startup(lab, repeats=-3), r"repeats=-3"),
    (lambda lab: anatomy.run_startup(lab, warmup=-1), r"warmup=-1"),
    (lambda lab: anatomy.run_startup(lab, memory_limit_mib=5), r"memory_limit_mib=5"),
    (lambda lab: anatomy.run_vm_boot(lab, repeats=0), r"repeats=0"),
    (lambda lab: anatomy.run_vm_boot(lab, memory_mib=32), r"memory_mib must be >= 64"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(replay)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"mode='vm'.*auto.*live.*replay"):
        open_session(anatomy.TOPIC, mode="vm")


def test_recorded_results_replay_into_the_notebooks_objects_and_claims(replay: LabSession) -> None:
    ns = anatomy.run_namespaces(replay)
    privileges = anatomy.run_privileges(replay)
    from_scratch = anatomy.run_from_scratch(replay)
    startup = anatomy.run_startup(replay)
    boot = anatomy.run_vm_boot(replay)
    assert list(ns.verdicts().loc[anatomy.DEFAULT, list(anatomy.ISOLATED_KINDS)]) == ["new"] * 5
    assert privileges.effective("--cap-drop ALL") == set()
    assert from_scratch.beside_docker(ns).new_kinds(anatomy.FROM_SCRATCH) == list(anatomy.ISOLATED_KINDS)
    assert startup.summary.loc["fork/exec", "ratio_to_fork_exec"] == 1.0
    assert startup.median_s("fork/exec") < startup.median_s("docker SDK")
    ledger = ClaimLedger()
    anatomy.check_claims(ledger, ns, privileges, from_scratch, startup, boot)
    recorded = replay.replay.read_table("claims") if replay.replay else None
    assert recorded is not None
    assert list(ledger.frame()["verdict"]) == list(recorded["verdict"])
