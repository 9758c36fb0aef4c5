"""Notebook 04's lab: unknown services refused before any build; claims and build-time summaries of hand-made tables
(expected values worked out in the comments), with builds whose logs contradict "cold" or "after an edit" named;
the go command's module hash against a go.sum line published for a real module; the probe's output read; a
recording made before sections 3-5 replayed without them."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger
from labkit.core.results import ResultStore
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import engine
from labkit.labs import multi_stage_builds
from labkit.labs.multi_stage_builds import module_layer, runtime_bases, stages
from tests.conftest import leftovers, open_live

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
GO_COPY, GO_BUILD = "COPY go.mod main.go ./", "RUN CGO_ENABLED=0 go build -o /server ."


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


@pytest.mark.parametrize(("single_mb", "multi_mb", "words"), [
    (640.0, 6.5, "98× smaller"),  # 98.46
    (12.5, 5.0, "2.50× smaller"),
    (197.4, 195.7, "0.9% smaller"),  # a factor of 1.01 would read as a misprint
])
def test_how_much_smaller_reads_as_a_factor_or_below_2_as_a_percentage(single_mb: float, multi_mb: float,
                                                                         words: str) -> None:
    assert stages._smaller(single_mb / multi_mb) == words


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


def test_a_cold_build_with_nothing_cached_read_back_from_csv_is_not_named(tmp_path: Path) -> None:
    # A cold build that took nothing from the cache has an empty cached_steps cell: pandas reads it back as NaN.
    builds = pd.DataFrame([_build("go", MULTI, 0, COLD, 20.0, "WORKDIR /src", ""),
                           _build("go", MULTI, 0, EDITED, 20.0, GO_COPY, "WORKDIR /src")],
                          columns=list(multi_stage_builds.BUILD_COLUMNS))
    builds.to_csv(tmp_path / "builds.csv", index=False)
    images = pd.DataFrame([_row("go", SINGLE, 640, 135, True), _row("go", MULTI, 6.5, 2, False)],
                          columns=list(multi_stage_builds.COLUMNS))
    assert multi_stage_builds.MultiStageResult(images, pd.read_csv(tmp_path / "builds.csv")).unexpected() == []


@pytest.mark.parametrize(("instruction", "service", "copies"), [
    ("COPY go.mod main.go ./", "go", True), ("COPY server.c ./", "c", True), ("COPY . .", "python", True),
    ("COPY app/ app/", "python", True),  # app/greeting.py is under app/
    ("COPY requirements.txt ./", "python", False), ("COPY --from=build /server /server", "go", False),
    ("RUN gcc -O2 -static -o /server server.c", "c", False), ("", "go", False),
])
def test_which_copy_takes_the_edited_file(instruction: str, service: str, copies: bool) -> None:
    assert multi_stage_builds._copies(instruction, multi_stage_builds.SERVICES[service]) is copies


# ---------------------------------------------------------------- section 3: the module download layer


def test_the_module_hash_is_the_go_commands() -> None:
    # golang.org/x/text v0.3.0 has no go.mod of its own; the go command hashes the one it makes up,
    # "module golang.org/x/text\n", and go.sum files everywhere carry the line
    # "golang.org/x/text v0.3.0/go.mod h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ=".
    assert module_layer.hash1({"go.mod": b"module golang.org/x/text\n"}) == \
        "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ="
    lines = multi_stage_builds.go_sum().splitlines()
    assert [line.split()[:2] for line in lines] == [["labkit.example/greet", "v1.0.0"],
                                                    ["labkit.example/greet", "v1.0.0/go.mod"]]


def test_the_module_proxy_has_the_layout_the_go_command_reads(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module_layer, "cache_dir", lambda: tmp_path)
    proxy = multi_stage_builds.module_proxy()
    versions = proxy / "labkit.example" / "greet" / "@v"
    assert (versions / "list").read_text() == "v1.0.0\n"
    with zipfile.ZipFile(versions / "v1.0.0.zip") as archive:
        assert sorted(archive.namelist()) == ["labkit.example/greet@v1.0.0/go.mod",
                                              "labkit.example/greet@v1.0.0/greet.go"]
    assert (versions / "v1.0.0.mod").read_text().startswith("module labkit.example/greet\n")
    assert multi_stage_builds.module_proxy() == proxy  # made once


def _module_build(dockerfile: str, repeat: int, build: str, download: str) -> dict[str, object]:
    return {"dockerfile": dockerfile, "repeat": repeat, "build": build, "wall_s": 2.0, "download": download,
            "download_s": 0.2 if download == "ran" else None, "first_executed": "COPY . .", "cached_steps": "",
            "output": "hello"}


def _modules(after_edit: dict[str, list[str]]) -> multi_stage_builds.ModuleResult:
    rows = [row for dockerfile, statuses in after_edit.items() for repeat, status in enumerate(statuses)
            for row in (_module_build(dockerfile, repeat, module_layer.FIRST, "ran"),
                        _module_build(dockerfile, repeat, module_layer.EDITED, status))]
    return multi_stage_builds.ModuleResult(pd.DataFrame(rows, columns=list(multi_stage_builds.MODULE_COLUMNS)))


@pytest.mark.parametrize(("after_edit", "expected"), [
    ({"download first": ["cached", "cached"], "everything first": ["ran", "ran"]}, "holds with caveat"),
    # one rebuild of the chapter's order ran the download again: not kept
    ({"download first": ["cached", "ran"], "everything first": ["ran", "ran"]}, "does not hold"),
    # the control kept it too: the order did not decide
    ({"download first": ["cached"], "everything first": ["cached"]}, "does not hold"),
])
def test_the_download_layer_claim_needs_the_order_to_decide(after_edit: dict[str, list[str]], expected: str) -> None:
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, _result(), modules=_modules(after_edit))
    assert ledger.verdict("multistage.go_mod_download_cached").value == expected


# ---------------------------------------------------------------- section 4: -s -w


def _stripping(unstripped_mb: float, stripped_mb: float, output: str = "ok") -> multi_stage_builds.StrippingResult:
    rows = [{"variant": "unstripped", "ldflags": "none", "binary_bytes": int(unstripped_mb * MB),
             "image_bytes": int(unstripped_mb * MB), "output": "ok"},
            {"variant": "stripped", "ldflags": '-ldflags="-s -w"', "binary_bytes": int(stripped_mb * MB),
             "image_bytes": int(stripped_mb * MB), "output": output}]
    return multi_stage_builds.StrippingResult(pd.DataFrame(rows, columns=list(multi_stage_builds.STRIPPING_COLUMNS)))


@pytest.mark.parametrize(("unstripped", "stripped", "output", "expected"), [
    (6.45, 4.46, "ok", "holds"),  # 1 - 4.46 / 6.45 = 30.9 %
    (6.45, 6.0, "ok", "does not hold"),  # 1 - 6.0 / 6.45 = 7.0 %, under the 10 % floor
    (6.45, 4.46, "", "does not hold"),  # smaller, but the stripped binary no longer answers its check
])
def test_stripping_must_save_a_tenth_and_still_run(unstripped: float, stripped: float, output: str,
                                                   expected: str) -> None:
    result = _stripping(unstripped, stripped, output)
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, _result(), stripping=result)
    assert ledger.verdict("multistage.ldflags_strip").value == expected
    assert result.saving == pytest.approx(1 - stripped / unstripped)


# ---------------------------------------------------------------- section 5: scratch against a static base

# What the probe printed on scratch in a live run (the port differs from run to run).
SCRATCH_PROBE = ('tls\tfailed\tGet "https://127.0.0.1:43099/": x509: certificate signed by unknown authority\n'
                 "timezone\tfailed\tunknown time zone Europe/Berlin\n")
STATIC_PROBE = ("tls\tok\t200 OK: hello over tls\n"
                "timezone\tok\t2026-07-01 12:00 UTC is 14:00 CEST in Europe/Berlin\n")
ENOENT = "exec /dynamic: no such file or directory"


def test_the_probe_output_is_read_line_by_line() -> None:
    assert runtime_bases.parse_probe(SCRATCH_PROBE) == {
        "tls": (False, 'Get "https://127.0.0.1:43099/": x509: certificate signed by unknown authority'),
        "timezone": (False, "unknown time zone Europe/Berlin")}
    assert runtime_bases.parse_probe(STATIC_PROBE)["timezone"] == (
        True, "2026-07-01 12:00 UTC is 14:00 CEST in Europe/Berlin")  # Berlin keeps summer time (UTC+2) in July
    assert runtime_bases.parse_probe("") == {}


def _runtime(scratch_probe: str, dynamic_on_scratch: tuple[int, str]) -> multi_stage_builds.RuntimeResult:
    rows = []
    for image, said in ((runtime_bases.SCRATCH, scratch_probe), (runtime_bases.STATIC, STATIC_PROBE)):
        rows += [{"image": image, "program": runtime_bases.PROBE, "check": check, "works": works, "exit_code": 0,
                  "detail": detail, "image_bytes": 5_100_000 if image == runtime_bases.SCRATCH else 6_630_000}
                 for check, (works, detail) in runtime_bases.parse_probe(said).items()]
    for image, (code, said) in ((runtime_bases.SCRATCH, dynamic_on_scratch), (runtime_bases.STATIC, (1, ENOENT)),
                                (runtime_bases.BUILDER, (0, "ok"))):
        rows.append({"image": image, "program": runtime_bases.DYNAMIC, "check": runtime_bases.RUNS,
                     "works": code == 0, "exit_code": code, "detail": said, "image_bytes": 20_000})
    return multi_stage_builds.RuntimeResult(pd.DataFrame(rows, columns=list(multi_stage_builds.RUNTIME_COLUMNS)))


def test_scratch_fails_the_tls_call_the_zone_lookup_and_the_dynamic_binary() -> None:
    result = _runtime(SCRATCH_PROBE, (1, ENOENT))
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, _result(), runtime=result)
    assert ledger.verdict("multistage.scratch_static_only").value == "holds"
    assert ledger.verdict("multistage.scratch_lacks_certs_and_zones").value == "holds with caveat"
    assert result.sizes()[runtime_bases.STATIC] - result.sizes()[runtime_bases.SCRATCH] == pytest.approx(1.53)
    assert "x509: certificate signed by unknown authority" in result.conclusion()


def test_a_scratch_that_worked_would_not_hold() -> None:
    # A dynamic binary that ran on scratch (a static one by mistake), and a probe whose TLS call worked there.
    result = _runtime(STATIC_PROBE, (0, "ok"))
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, _result(), runtime=result)
    assert ledger.verdict("multistage.scratch_static_only").value == "does not hold"
    assert ledger.verdict("multistage.scratch_lacks_certs_and_zones").value == "does not hold"
    # A failure of another kind (the engine refused to start it) is not the loader's ENOENT.
    refused = _runtime(SCRATCH_PROBE, (-1, "OCI runtime create failed: permission denied"))
    assert not refused.dynamic_enoent


def _result() -> multi_stage_builds.MultiStageResult:
    rows = [_row("go", SINGLE, 640, 135, True), _row("go", MULTI, 6.5, 2, False)]
    return multi_stage_builds.MultiStageResult(pd.DataFrame(rows, columns=list(multi_stage_builds.COLUMNS)),
                                               NO_BUILDS)


def test_a_recording_made_before_sections_3_to_5_replays_without_them(replay: LabSession, tmp_path: Path) -> None:
    assert replay.replay is not None
    older = tmp_path / multi_stage_builds.STEM
    shutil.copytree(replay.replay.folder, older)
    for table in ("module_builds", "stripping", "runtime_bases"):  # what a recording made before them lacks
        (older / f"{table}.csv").unlink(missing_ok=True)
    session = LabSession.replaying(multi_stage_builds.LAB, ResultStore(older))
    modules, stripping = multi_stage_builds.run_module_layer(session), multi_stage_builds.run_stripping(session)
    runtime = multi_stage_builds.run_runtime_bases(session)
    for section in (modules, stripping, runtime):
        assert not section.recorded and "Not in this recording" in section.conclusion()
    ledger = ClaimLedger(multi_stage_builds.STEM)
    multi_stage_builds.check_claims(ledger, multi_stage_builds.run_images(session), modules, stripping, runtime)
    assert {c.id for c in ledger} == {"multistage.go_700mb_to_10mb", "multistage.smaller",
                                      "multistage.attack_surface"}


@pytest.fixture
def live(docker_client: docker.DockerClient, tmp_path: Path) -> LabSession:
    return open_live(multi_stage_builds.LAB, tmp_path)


@pytest.mark.docker
def test_live_scratch_refuses_the_tls_call_the_zone_and_the_dynamic_binary(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    result = multi_stage_builds.run_runtime_bases(live)
    # Go 1.19 finds no CA file on scratch and verifies against an empty pool; the kernel's execve of an ELF file
    # whose interpreter (/lib64/ld-linux-x86-64.so.2) is missing returns ENOENT, which runc reports for the program.
    assert "x509: certificate signed by unknown authority" in result.row(runtime_bases.SCRATCH, runtime_bases.TLS)[
        "detail"]
    assert result.row(runtime_bases.SCRATCH, runtime_bases.TIMEZONE)["detail"] == "unknown time zone Europe/Berlin"
    assert result.row(runtime_bases.STATIC, runtime_bases.TLS)["detail"] == "200 OK: hello over tls"
    assert result.row(runtime_bases.STATIC, runtime_bases.TIMEZONE)["detail"].endswith("14:00 CEST in Europe/Berlin")
    assert result.row(runtime_bases.SCRATCH, runtime_bases.RUNS)["detail"] == "exec /dynamic: no such file or directory"
    assert result.works(runtime_bases.BUILDER, runtime_bases.RUNS)
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert docker_client.images.list(all=True, filters={"label": f"{engine.LABEL_RUN}={live.run_id}"}) == []
