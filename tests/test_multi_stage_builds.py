"""Notebook 04's lab: unknown services refused before any build; claims and build-time summaries of hand-made tables
(expected values worked out in the comments), with builds whose logs contradict "cold" or "after an edit" named."""

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
            "sbom_packages": packages, "sbom_tool": "syft", "layers": 3}


def _build(service: str, variant: str, repeat: int, build: str, wall_s: float, first: str,
           cached: str = "") -> dict[str, object]:
    return {"service": service, "variant": variant, "repeat": repeat, "build": build, "wall_s": wall_s,
            "cached": len([c for c in cached.split("; ") if c]), "executed": 4, "first_executed": first,
            "executed_steps": first, "cached_steps": cached}


NO_BUILDS = pd.DataFrame(columns=list(multi_stage_builds.BUILD_COLUMNS))


def test_claims_follow_the_sizes_and_the_tools_left_behind() -> None:
    rows = [_row("go", multi_stage_builds.SINGLE, 640, 135, True), _row("go", multi_stage_builds.MULTI, 6.5, 2, False),
            _row("c", multi_stage_builds.SINGLE, 437, 144, True), _row("c", multi_stage_builds.MULTI, 0.8, 0, False),
            _row("python", multi_stage_builds.SINGLE, 198, 120, True),
            _row("python", multi_stage_builds.MULTI, 190, 120, True)]
    result = multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS)),
                                                 NO_BUILDS)
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, result)
    verdicts = {c.id: c.verdict.value for c in ledger}
    # Both compiled services' final images are one binary on FROM scratch: small and bare by construction.
    assert verdicts == {"multistage.go_700mb_to_10mb": "holds", "multistage.smaller": "holds with caveat",
                        "multistage.attack_surface": "holds with caveat"}
    assert all("by construction" in c.caveat for c in ledger if c.id != "multistage.go_700mb_to_10mb")
    assert result.ratio("go") == pytest.approx(640 / 6.5)
    # A Go builder of 200 MB would not be "~700 MB": the order of magnitude is the claim.
    rows[0] = _row("go", multi_stage_builds.SINGLE, 200, 135, True)
    small = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(
        small, multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS)),
                                                    NO_BUILDS))
    assert small.verdict("multistage.go_700mb_to_10mb").value == "does not hold"
    # A compiled service whose final image is less than 10× smaller (here C's, 437 MB → 50 MB) fails "far smaller".
    rows[3] = _row("c", multi_stage_builds.MULTI, 50, 0, False)
    heavy = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(
        heavy, multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS)),
                                                    NO_BUILDS))
    assert heavy.verdict("multistage.smaller").value == "does not hold"


COLD, EDITED = multi_stage_builds.COLD, multi_stage_builds.EDITED
SINGLE, MULTI = multi_stage_builds.SINGLE, multi_stage_builds.MULTI
GO_COPY, GO_BUILD = "COPY go.mod main.go ./", "RUN CGO_ENABLED=0 go build -trimpath -o /server ."


def test_build_times_of_a_hand_made_table() -> None:
    images = pd.DataFrame([_row("go", SINGLE, 640, 135, True), _row("go", MULTI, 6.5, 2, False)],
                          columns=list(multi_stage_builds.COLUMNS))
    builds = pd.DataFrame([
        # three repeats; the multi-stage cold builds: 20, 22, 21 s → median 21; after an edit 19, 25, 20 → 20.
        *(_build("go", MULTI, r, COLD, w, "WORKDIR /src") for r, w in enumerate((20.0, 22.0, 21.0))),
        *(_build("go", MULTI, r, EDITED, w, GO_COPY, "WORKDIR /src") for r, w in enumerate((19.0, 25.0, 20.0))),
        # single-stage: one cold build whose WORKDIR BuildKit took from the cache (allowed, and reported).
        _build("go", SINGLE, 0, COLD, 23.0, GO_COPY, "WORKDIR /src"),
        _build("go", SINGLE, 0, EDITED, 24.0, GO_COPY, "WORKDIR /src"),
    ], columns=list(multi_stage_builds.BUILD_COLUMNS))
    result = multi_stage_builds.MultiStageResult(images, builds)
    times = result.times()
    # n = 3: the order-statistic interval is [min, max], coverage 1 - 2 · (1/2)^3 = 75 %.
    row = times.loc[("go", MULTI, COLD)]
    assert (row["n"], row["median_s"], row["ci_low_s"], row["ci_high_s"]) == (3, 21.0, 20.0, 22.0)
    assert row["coverage"] == pytest.approx(0.75)
    assert times.loc[("go", MULTI, EDITED), "median_s"] == 20.0
    assert times.loc[("go", SINGLE, COLD), "cached"] == "1–1"
    assert result.unexpected() == []
    text = result.conclusion()
    assert "98× smaller" in text  # 640 / 6.5 = 98.46
    assert "`WORKDIR /src` cached in 1 of 4" in text  # the single-stage cold build, of 4 cold builds
    assert "multi-stage after an edit 20.0 s" in text


def test_builds_that_are_not_what_they_are_called_are_named() -> None:
    images = pd.DataFrame([_row("go", SINGLE, 640, 135, True), _row("go", MULTI, 6.5, 2, False)],
                          columns=list(multi_stage_builds.COLUMNS))
    builds = pd.DataFrame([
        _build("go", SINGLE, 0, COLD, 20.0, GO_BUILD, f"WORKDIR /src; {GO_COPY}"),  # a COPY from the cache: not cold
        _build("go", SINGLE, 0, EDITED, 0.5, "RUN /server --check", f"WORKDIR /src; {GO_COPY}; {GO_BUILD}"),
        _build("go", MULTI, 0, COLD, 20.0, "WORKDIR /src"),
        _build("go", MULTI, 0, EDITED, 20.0, GO_COPY, "WORKDIR /src"),
    ], columns=list(multi_stage_builds.BUILD_COLUMNS))
    found = multi_stage_builds.MultiStageResult(images, builds).unexpected()
    assert found == [f"go single-stage cold (repeat 0): from the cache WORKDIR /src; {GO_COPY}",
                     "go single-stage after an edit (repeat 0): first executed 'RUN /server --check'"]


@pytest.mark.parametrize(("instruction", "service", "copies"), [
    ("COPY go.mod main.go ./", "go", True), ("COPY server.c ./", "c", True), ("COPY . .", "python", True),
    ("COPY app/ app/", "python", True),  # app/greeting.py is under app/
    ("COPY requirements.txt ./", "python", False), ("COPY --from=build /server /server", "go", False),
    ("RUN gcc -O2 -static -o /server server.c", "c", False), ("", "go", False),
])
def test_which_copy_takes_the_edited_file(instruction: str, service: str, copies: bool) -> None:
    assert multi_stage_builds._copies(instruction, multi_stage_builds.SERVICES[service]) is copies
