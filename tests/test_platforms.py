"""Notebook 11's lab: bad input refused before anything runs; the paired slowdown on known numbers; the program
built natively and cross-built prints the same; recorded results replay into the same claims; and a live quick
run whose tables show exec format error and its recovery, emulation slower than native, a manifest list that
resolves per platform, nothing left behind and the binfmt entry enabled afterwards."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.app.claims import ClaimLedger
from labkit.app.session import LabSession, open_session
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import arch
from labkit.instruments.shell import run
from labkit.labs import platforms
from tests.conftest import leftovers, missing

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def replay() -> LabSession:
    # A replay session hands back the recorded tables: only validation can stop these calls.
    return open_session(platforms.STEM, mode="replay")


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: platforms.run_emulation_cost(lab, sizes={platforms.LOOP: 0}),
     r"(?s)sizes\['interpreter loop'\]=0: a workload needs a size ≥ 1.*E.g. 'interpreter loop': 100000"),
    (lambda lab: platforms.run_emulation_cost(lab, sizes={platforms.HASH: -1}), r"sizes\['sha256 of a buffer'\]=-1"),
    (lambda lab: platforms.run_emulation_cost(lab, sizes={"fft": 10}), r"(?s)unknown workloads \['fft'\].*Use"),
    (lambda lab: platforms.run_emulation_cost(lab, repeats=0), r"repeats=0"),
    (lambda lab: platforms.run_emulation_cost(lab, warmup=-1), r"warmup=-1"),
    (lambda lab: platforms.run_builds(lab, functions=0), r"(?s)functions=0.*E.g. functions=150"),
    (lambda lab: platforms.run_builds(lab, repeats=0), r"repeats=0"),
    (lambda lab: platforms.run_manifest_list(lab, port=80), r"port=80.*1024 to 65535"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_a_port_in_use_is_refused_before_anything_starts(replay: LabSession) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadParameter, match=rf"port={port}: something already listens"):
            platforms.run_manifest_list(replay, port=port)


def test_an_unknown_platform_is_refused_with_the_choices() -> None:
    for choose in (platforms.busybox_base, platforms.builder_base, platforms.cross_compiler):
        with pytest.raises(BadParameter, match=r"(?s)platform='linux/s390x'.*linux/amd64"):
            choose("linux/s390x")
    assert platforms.busybox_base(arch.ARM64) == "busybox-arm64"
    assert platforms.cross_compiler(arch.ARM64) == "aarch64-linux-gnu-gcc"
    assert platforms.cross_compiler(arch.AMD64) == "x86_64-linux-gnu-gcc"


def test_binfmt_misc_unavailable_is_refused_with_the_fix() -> None:
    not_mounted = ROOT / "tests" / "fixtures" / "arch" / "not-mounted" / "binfmt_misc"
    with pytest.raises(HostUnsupported, match=r"(?s)binfmt_misc is not mounted.*Fix: mount -t binfmt_misc"):
        platforms.require_emulation(not_mounted)


def test_slowdown_is_the_median_of_ratios_paired_within_a_round() -> None:
    # Round 2 is slow for both (a noisy machine): pairing within the round keeps its ratio at 4, not 40.
    native, emulated = [0.10, 0.10, 1.00, 0.10, 0.10], [0.40, 0.50, 4.00, 0.30, 0.40]
    samples = pd.DataFrame([
        {"workload": platforms.LOOP, "size": 10, "unit": "iterations", "platform": platform, "emulated": foreign,
         "repeat": repeat, "position": 0, "wall_s": wall_s, "output_sha256": "same"}
        for foreign, platform, series in ((False, arch.AMD64, native), (True, arch.ARM64, emulated))
        for repeat, wall_s in enumerate(series)])
    result = platforms.EmulationResult(samples)
    assert sorted(result.ratios["slowdown"].round(6)) == [3.0, 4.0, 4.0, 4.0, 5.0]
    row = result.summary.loc[platforms.LOOP]
    assert (row["slowdown"], row["ci_low"], row["ci_high"]) == pytest.approx((4.0, 3.0, 5.0))
    assert row["n"] == 5 and row["same_output"] and result.emulated_platform == arch.ARM64


def test_the_program_prints_the_same_natively_and_cross_built_under_emulation(tmp_path: Path) -> None:
    foreign = arch.foreign_platform()
    compiler = platforms.cross_compiler(foreign)
    if not arch.check_emulation(foreign).ok or not (Path("/usr/bin") / compiler).exists():
        missing(f"{compiler} and binfmt emulation of {foreign} (`labkit setup 11`)")
    (tmp_path / "program.c").write_text(platforms.program_source(20))
    run(["gcc", "-O2", "-static", "-o", str(tmp_path / "native"), str(tmp_path / "program.c")], 120)
    run([compiler, "-O2", "-static", "-o", str(tmp_path / "cross"), str(tmp_path / "program.c")], 120)
    native = run([str(tmp_path / "native")], 30).stdout
    assert native.startswith("checksum ") and run([str(tmp_path / "cross")], 30).stdout == native
    assert (tmp_path / "cross").read_bytes()[18] == {arch.ARM64: 183, arch.AMD64: 62}[foreign]  # ELF e_machine


def test_recorded_results_replay_into_the_same_claims(replay: LabSession) -> None:
    exec_format = platforms.run_exec_format(replay)
    cost = platforms.run_emulation_cost(replay)
    builds = platforms.run_builds(replay)
    manifest = platforms.run_manifest_list(replay)
    ledger = ClaimLedger(platforms.STEM)
    platforms.check_claims(ledger, exec_format, cost, builds, manifest)
    assert replay.replay is not None
    recorded = replay.replay.read_table("claims")
    pd.testing.assert_frame_equal(ledger.frame()[["id", "verdict"]], recorded[["id", "verdict"]])


# ---------------------------------------------------------------- live: notebook 11 in quick mode


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / platforms.STEM


def _table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv")


@pytest.mark.docker
def test_exec_format_error_is_reproduced_and_recovered(executed: Path) -> None:
    runs = _table(executed, "exec_format").set_index(["entry_state", "native"])
    failed, recovered = runs.loc[("disabled", False)], runs.loc[("enabled", False)]
    assert failed["exit_code"] != 0 and failed["exec_format_error"] and "exec format error" in failed["output"]
    assert recovered["exit_code"] == 0 and recovered["output"] == arch.UNAME_MACHINE[arch.foreign_platform()]
    assert (runs.xs(True, level="native")["output"] == os.uname().machine).all()  # native ran either way
    assert arch.read_binfmt().runs(arch.emulator_entry())  # enabled again after the run


@pytest.mark.docker
def test_emulated_is_slower_than_native_for_the_cpu_bound_workloads(executed: Path) -> None:
    result = platforms.EmulationResult(_table(executed, "emulation"))
    assert (result.summary.loc[list(platforms.CPU_BOUND), "slowdown"] > 1).all()
    assert result.summary["same_output"].all()


@pytest.mark.docker
def test_builds_record_their_platform_and_print_the_same(executed: Path) -> None:
    result = platforms.BuildResult(_table(executed, "builds"), _table(executed, "default_platform"))
    native, foreign = (p.split("/")[1] for p in (arch.host_platform(), arch.foreign_platform()))
    assert list(result.summary["image_architecture"]) == [native, foreign, foreign]
    assert result.same_output and result.builds["output"].iloc[0].startswith("checksum ")
    assert result.recorded(platforms.DEFAULT_PLATFORM) == native
    assert result.recorded(arch.foreign_platform()) == foreign


@pytest.mark.docker
def test_the_manifest_list_resolves_to_each_platform(executed: Path) -> None:
    pulls = _table(executed, "manifest")
    assert sorted(pulls["platform"]) == sorted(arch.PLATFORMS)
    assert platforms.ManifestResult(pulls).resolves
    assert (pulls["list_media_type"] == "application/vnd.docker.distribution.manifest.list.v2+json").all()


@pytest.mark.docker
def test_nothing_is_left_behind(executed: Path, docker_client: docker.DockerClient) -> None:
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert not [i for i in docker_client.images.list() if any("127.0.0.1:" in t for t in i.tags)]
    assert not list(Path("/tmp").glob("labkit-registry-*"))
    assert not list((Path.home() / ".docker" / "manifests").glob("127.0.0.1*"))  # no local manifest list kept


def test_the_arm64_and_amd64_recipes_differ_only_in_their_architecture() -> None:
    from labkit.instruments import images

    arm64, amd64 = images.recipe("busybox-arm64"), images.recipe("busybox-amd64")
    assert dict(arm64.inputs)["arch"] == "arm64" and dict(amd64.inputs)["arch"] == "amd64"
    assert {k: v for k, v in arm64.inputs if k != "arch"} == {k: v for k, v in amd64.inputs if k != "arch"}
    assert arm64.digest != amd64.digest
    builder, builder_arm64 = images.recipe("c-builder"), images.recipe("c-builder-arm64")
    assert [i for i in builder.inputs if i[0] != "arch"] == [i for i in builder_arm64.inputs if i[0] != "arch"]
    assert images.DEBIAN_BASES["c-builder-arm64"].platform == arch.ARM64
    assert images.DEBIAN_PACKAGE_BASES["busybox-arm64"].platform == arch.ARM64
