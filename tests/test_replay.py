"""Without an engine (Binder), notebooks replay the committed results and say so; doctor says what is missing.
Every lab on its recorded results: they replay into the recorded claims, and a taken port is refused first."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from labkit.app import catalog
from labkit.core.lab import Lab
from labkit.core.session import LabSession, open_session
from labkit.errors import BadParameter
from labkit.labs import (
    arm64_vs_amd64,
    build_cache,
    cgroups_and_limits,
    choosing_a_base_image,
    compose_and_the_single_box_path,
    image_layers,
    multi_stage_builds,
    networking,
    pitfalls_and_security,
    tags_digests_and_registries,
    the_lab_machine,
    the_quick_check,
    volumes_and_persistence,
    what_a_container_is,
    when_to_graduate,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDED = sorted(p.parent for p in (ROOT / "data" / "results").glob("*/provenance.json"))


@pytest.fixture
def no_engine(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}


def test_every_notebook_has_recorded_results_with_provenance() -> None:
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    assert {p.name for p in RECORDED} == notebooks
    for folder in RECORDED:
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["quick"] is False, f"{folder.name}: record a full-mode run"
        assert provenance["fingerprint"]["engine_version"] and provenance["ended_utc"]


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: p.name)
def test_notebook_replays_without_an_engine_under_a_banner(recorded: Path, no_engine: dict[str, str],
                                                            tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "run", recorded.name, "--mode", "auto",
                           "--output", str(tmp_path)], cwd=ROOT, env=no_engine, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    nb = nbformat.read(tmp_path / f"{recorded.name}.ipynb", as_version=4)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "REPLAYED RESULTS" in shown
    warned = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "stream" and o.get("name") == "stderr" and "Warning" in o.get("text", "")]
    assert not warned, f"a replay shows the reader warnings: {warned}"  # e.g. pandas' DtypeWarning on a big table
    provenance = json.loads((recorded / "provenance.json").read_text())
    assert provenance["started_utc"] in shown and provenance["run_id"] in shown


def test_live_mode_without_an_engine_fails_saying_how_to_start_one(no_engine: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "01", "--mode", "live", "--output", str(tmp_path)],
                          cwd=ROOT, env=no_engine, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "EngineUnavailable" in done.stdout + done.stderr
    executed = nbformat.read(next(tmp_path.glob("01-*.ipynb")), as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and "make lab" in "\n".join(errors[0]["traceback"])


def test_doctor_exits_non_zero_and_names_the_fix_when_the_engine_is_missing(no_engine: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "doctor"], cwd=ROOT, env=no_engine, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "[MISS] Docker Engine" in done.stdout
    assert "fix: make lab" in done.stdout
    assert "missing (required): Docker Engine" in done.stdout


# ---------------------------------------------------------------- every lab on its recorded results

# What each notebook runs, in order, and the claims it checks from the results (the recorded full run's knobs).
CHAPTERS: dict[str, Callable[[LabSession], None]] = {
    what_a_container_is.STEM: lambda lab: what_a_container_is.check_claims(
        lab.claims, what_a_container_is.run_namespaces(lab), what_a_container_is.run_privileges(lab),
        what_a_container_is.run_from_scratch(lab), what_a_container_is.run_startup(lab),
        what_a_container_is.run_vm_boot(lab), what_a_container_is.run_clock(lab)),
    image_layers.STEM: lambda lab: image_layers.check_claims(
        lab.claims, image_layers.run_layers(lab), image_layers.run_overlay(lab), image_layers.run_copy_up(lab),
        image_layers.run_reproducible(lab)),
    build_cache.STEM: lambda lab: build_cache.check_claims(
        lab.claims, build_cache.run_rebuilds(lab), build_cache.run_context(lab),
        build_cache.run_dev_dependencies(lab), build_cache.run_ignore_patterns(lab)),
    multi_stage_builds.STEM: lambda lab: multi_stage_builds.check_claims(
        lab.claims, multi_stage_builds.run_images(lab), multi_stage_builds.run_module_layer(lab, repeats=3),
        multi_stage_builds.run_stripping(lab), multi_stage_builds.run_runtime_bases(lab)),
    choosing_a_base_image.STEM: lambda lab: _choosing_a_base_image(
        lab, choosing_a_base_image.run_bases(lab, bases=choosing_a_base_image.BASES, pull_repeats=3)),
    tags_digests_and_registries.STEM: lambda lab: _tags_digests_and_registries(
        lab, tags_digests_and_registries.run_moved_tag(lab), tags_digests_and_registries.run_latest(lab),
        tags_digests_and_registries.run_manifest_list(lab)),
    cgroups_and_limits.STEM: lambda lab: cgroups_and_limits.check_claims(
        lab.claims, cgroups_and_limits.run_memory_ramp(lab), cgroups_and_limits.run_memory_unlimited(lab),
        cgroups_and_limits.run_cpu_quota(lab), cgroups_and_limits.run_noisy_neighbour(lab),
        cgroups_and_limits.run_pids(lab), cgroups_and_limits.run_memory_neighbour(lab),
        cgroups_and_limits.run_io(lab), cgroups_and_limits.run_pids_neighbour(lab)),
    networking.STEM: lambda lab: networking.check_claims(
        lab.claims, networking.run_exposure(lab, 18080), networking.run_names(lab), networking.run_outbound_nat(lab),
        networking.run_paths(lab, 18080, rounds=30, requests=60, concurrency=4, bulk_mib=32), lab.engine_version),
    pitfalls_and_security.STEM: lambda lab: pitfalls_and_security.check_claims(
        lab.claims, pitfalls_and_security.run_zombies(lab), pitfalls_and_security.run_stop(lab),
        pitfalls_and_security.run_users(lab), pitfalls_and_security.run_log_places(lab),
        pitfalls_and_security.run_log_growth(lab), pitfalls_and_security.run_clock(lab),
        pitfalls_and_security.run_defaults(lab), pitfalls_and_security.run_secrets(lab)),
    volumes_and_persistence.STEM: lambda lab: volumes_and_persistence.check_claims(
        lab.claims, volumes_and_persistence.run_survival(lab), volumes_and_persistence.run_bind_edits(lab),
        volumes_and_persistence.run_costs(lab), volumes_and_persistence.run_copy_up(lab),
        volumes_and_persistence.run_backup(lab), volumes_and_persistence.run_moved(lab),
        volumes_and_persistence.run_ownership(lab)),
    arm64_vs_amd64.STEM: lambda lab: arm64_vs_amd64.check_claims(
        lab.claims, arm64_vs_amd64.run_exec_format(lab), arm64_vs_amd64.run_emulation_cost(lab),
        arm64_vs_amd64.run_builds(lab), arm64_vs_amd64.run_manifest_list(lab)),
    compose_and_the_single_box_path.STEM: lambda lab: compose_and_the_single_box_path.check_claims(
        lab.claims, compose_and_the_single_box_path.run_bringup(lab, 18120, 5, 1.0),
        compose_and_the_single_box_path.run_state(lab, 18120, 3, 1.0),
        compose_and_the_single_box_path.run_failures(lab, 18120, 1.0, 10.0),
        compose_and_the_single_box_path.run_limits(lab), compose_and_the_single_box_path.run_ci_variant(lab),
        compose_and_the_single_box_path.run_deploy(lab, 18120, 1.0, 20, 12.0),
        compose_and_the_single_box_path.run_unit(lab, 18120, 1.0)),
    the_quick_check.STEM: lambda lab: the_quick_check.check_claims(
        lab.claims, the_quick_check.run_waterfall(lab), the_quick_check.run_lint(lab),
        the_quick_check.run_node_env(lab)),
    when_to_graduate.STEM: lambda lab: when_to_graduate.check_claims(
        lab.claims, when_to_graduate.run_orchestrator(lab, when_to_graduate.Knobs(
            3, 3, 3, 1.0, 5.0, 300.0, (1.0, 5.0), "stop-first")), when_to_graduate.run_portability(lab, 5)),
    the_lab_machine.STEM: lambda lab: the_lab_machine.check_claims(
        lab.claims, the_lab_machine.run_machine(lab, boots=3)),
}


def _tags_digests_and_registries(lab: LabSession, moved: tags_digests_and_registries.MovedTagResult,
                                 latest: tags_digests_and_registries.LatestResult, _manifest: object) -> None:
    """06 shows the manifest list (its section 3) but leaves its claim to 11's ledger."""
    tags_digests_and_registries.check_claims(lab.claims, moved, latest, tags_digests_and_registries.run_lint(lab),
                                             tags_digests_and_registries.run_release(lab),
                                             tags_digests_and_registries.run_rollback(lab),
                                             tags_digests_and_registries.run_login(lab))


def _choosing_a_base_image(lab: LabSession, table: choosing_a_base_image.BaseTable) -> None:
    choosing_a_base_image.check_claims(lab.claims, table, choosing_a_base_image.fit_pulls(table),
                                       choosing_a_base_image.run_startup(lab, bases=choosing_a_base_image.BASES),
                                       choosing_a_base_image.run_native_modules(lab))


LABS = catalog.all_labs()
# Claims a recording may still carry that one notebook now leaves to another's ledger (each claim is ledgered once).
LEDGERED_ELSEWHERE = {"tags.one_tag_per_platform": "11's manifest.one_tag_two_architectures"}


def test_every_lab_has_its_chapter_here() -> None:
    assert sorted(CHAPTERS) == [lab.stem for lab in LABS]


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.stem)
def test_recorded_results_replay_into_the_same_claims(lab: Lab) -> None:
    session = open_session(lab, mode="replay")
    CHAPTERS[lab.stem](session)
    assert session.replay is not None
    recorded = session.replay.read_table("claims")
    # A claim added since the recording is in the recomputed ledger only; every recorded one must come out the same.
    recomputed = session.claims.frame().set_index("id")
    recorded = recorded[~recorded["id"].isin(LEDGERED_ELSEWHERE)]
    assert set(recorded["id"]) <= set(recomputed.index)
    assert dict(zip(recorded["id"], recomputed.loc[recorded["id"], "verdict"], strict=True)) == dict(
        zip(recorded["id"], recorded["verdict"], strict=True))


# Each experiment that starts a registry on a port the reader chooses.
REGISTRY_ON_A_PORT = [(choosing_a_base_image, "run_bases"), (arm64_vs_amd64, "run_manifest_list"),
                      (tags_digests_and_registries, "run_moved_tag"),
                      (tags_digests_and_registries, "run_latest"), (tags_digests_and_registries, "run_release"),
                      (tags_digests_and_registries, "run_rollback"), (tags_digests_and_registries, "run_login")]


@pytest.mark.parametrize(("module", "experiment"), REGISTRY_ON_A_PORT,
                         ids=[f"{module.__name__.rsplit('.', 1)[1]}.{name}" for module, name in REGISTRY_ON_A_PORT])
def test_a_port_in_use_is_refused_before_anything_starts(module: ModuleType, experiment: str) -> None:
    session = open_session(module.LAB, mode="replay")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadParameter, match=rf"port={port}: something already listens"):
            getattr(module, experiment)(session, port=port)
