"""Notebook 04's lab: unknown services refused before any build; claims computed from known rows; recorded results
replay into the same claims and keep what the notebook promises (each multi-stage image smaller than its twin)."""

from __future__ import annotations

import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.labs import multi_stage_builds

MB = 10**6


LAB = multi_stage_builds.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize("services", [["rust"], [], ["go", "java"]])
def test_unknown_services_are_refused_before_any_build(replay: LabSession, services: list[str]) -> None:
    with pytest.raises(BadParameter, match=r"(?s)services=.*Choose from \['go', 'c', 'python'\]"):
        multi_stage_builds.run_images(replay, services=services)


def _row(service: str, variant: str, size_mb: float, packages: int, tools: bool) -> dict[str, object]:
    return {"service": service, "variant": variant, "base": f"{service}-builder", "image_bytes": int(size_mb * MB),
            "files": 10_000 if tools else 5, "has_shell": tools, "has_package_manager": tools,
            "sbom_packages": packages, "sbom_tool": "syft", "cold_s": 10.0, "warm_s": 9.0, "layers": 3}


def test_claims_follow_the_sizes_and_the_tools_left_behind() -> None:
    rows = [_row("go", multi_stage_builds.SINGLE, 640, 135, True), _row("go", multi_stage_builds.MULTI, 6.5, 2, False),
            _row("c", multi_stage_builds.SINGLE, 437, 144, True), _row("c", multi_stage_builds.MULTI, 0.8, 0, False),
            _row("python", multi_stage_builds.SINGLE, 198, 120, True),
            _row("python", multi_stage_builds.MULTI, 190, 120, True)]
    result = multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS)))
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, result)
    verdicts = {c.id: c.verdict.value for c in ledger}
    # Both compiled services' final images are one binary on FROM scratch: small and bare by construction.
    assert verdicts == {"multistage.go_700mb_to_10mb": "holds", "multistage.smaller": "holds with caveat",
                        "multistage.attack_surface": "holds with caveat"}
    assert all("by construction" in c.caveat for c in ledger if c.id != "multistage.go_700mb_to_10mb")
    assert result.ratio("go") == pytest.approx(640 / 6.5)
    assert "rebuilt after a one-line edit in 9.0 s" in result.conclusion()
    cold_only = multi_stage_builds.MultiStageResult(result.images.assign(warm_s=float("nan")))
    assert "rebuilt" not in cold_only.conclusion()  # quick mode measures no warm rebuild
    # A Go builder of 200 MB would not be "~700 MB": the order of magnitude is the claim.
    rows[0] = _row("go", multi_stage_builds.SINGLE, 200, 135, True)
    small = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(
        small, multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS))))
    assert small.verdict("multistage.go_700mb_to_10mb").value == "does not hold"
    # A compiled service whose final image is less than 10× smaller (here C's, 437 MB → 50 MB) fails "far smaller".
    rows[3] = _row("c", multi_stage_builds.MULTI, 50, 0, False)
    heavy = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(
        heavy, multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS))))
    assert heavy.verdict("multistage.smaller").value == "does not hold"


def test_recorded_results_replay_into_what_the_notebook_shows(replay: LabSession) -> None:
    assert multi_stage_builds.run_images(replay).conclusion().startswith("**What we measured.**")


def test_recorded_multi_stage_images_are_smaller_and_the_scratch_ones_hold_no_tools(replay: LabSession) -> None:
    result = multi_stage_builds.run_images(replay)
    assert set(result.services) == set(multi_stage_builds.SERVICES)
    for service in result.services:
        assert result.ratio(service) > 1, service
    for service in ("go", "c"):
        multi = result.row(service, multi_stage_builds.MULTI)
        assert not multi["has_shell"] and not multi["has_package_manager"] and multi["files"] < 10
