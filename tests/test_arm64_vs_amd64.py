"""Notebook 11's lab: bad input refused before anything runs; the paired slowdown on known numbers; the program
built natively and cross-built prints the same; recorded results replay into the same claims; and a live quick
run whose tables show exec format error and its recovery, emulation slower than native, a manifest list that
resolves per platform, nothing left behind and the binfmt entry enabled afterwards."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import arch, images, registry
from labkit.instruments.shell import run
from labkit.labs import arm64_vs_amd64
from tests.conftest import leftovers, missing

ROOT = Path(__file__).resolve().parent.parent


LAB = arm64_vs_amd64.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, sizes={arm64_vs_amd64.LOOP: 0}),
     r"(?s)sizes\['interpreter loop'\]=0: a workload needs a size ≥ 1.*E.g. 'interpreter loop': 100000"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, sizes={arm64_vs_amd64.HASH: -1}),
     r"sizes\['sha256 of a buffer'\]=-1"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, sizes={"fft": 10}), r"(?s)unknown workloads \['fft'\].*Use"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, repeats=0), r"repeats=0"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, warmup=-1), r"warmup=-1"),
    (lambda lab: arm64_vs_amd64.run_builds(lab, functions=0), r"(?s)functions=0.*E.g. functions=150"),
    (lambda lab: arm64_vs_amd64.run_builds(lab, repeats=0), r"repeats=0"),
    (lambda lab: arm64_vs_amd64.run_manifest_list(lab, port=80), r"port=80.*1024 to 65535"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_an_unknown_platform_is_refused_with_the_choices() -> None:
    for choose in (images.busybox_base, arm64_vs_amd64.builder_base, arm64_vs_amd64.cross_compiler):
        with pytest.raises(BadParameter, match=r"(?s)platform='linux/s390x'.*linux/amd64"):
            choose("linux/s390x")
    assert images.busybox_base(arch.ARM64) == "busybox-arm64"
    assert arm64_vs_amd64.cross_compiler(arch.ARM64) == "aarch64-linux-gnu-gcc"
    assert arm64_vs_amd64.cross_compiler(arch.AMD64) == "x86_64-linux-gnu-gcc"


def test_binfmt_misc_unavailable_is_refused_with_the_fix() -> None:
    not_mounted = ROOT / "tests" / "fixtures" / "arch" / "not-mounted" / "binfmt_misc"
    with pytest.raises(HostUnsupported, match=r"(?s)binfmt_misc is not mounted.*Fix: mount -t binfmt_misc"):
        arch.require_emulation(not_mounted)


def test_slowdown_is_the_median_of_ratios_paired_within_a_round() -> None:
    # Round 2 is slow for both (a noisy machine): pairing within the round keeps its ratio at 4, not 40.
    native, emulated = [0.10, 0.10, 1.00, 0.10, 0.10], [0.40, 0.50, 4.00, 0.30, 0.40]
    samples = pd.DataFrame([
        {"workload": arm64_vs_amd64.LOOP, "size": 10, "unit": "iterations", "platform": platform, "emulated": foreign,
         "repeat": repeat, "position": 0, "wall_s": wall_s, "output_sha256": "same"}
        for foreign, platform, series in ((False, arch.AMD64, native), (True, arch.ARM64, emulated))
        for repeat, wall_s in enumerate(series)])
    result = arm64_vs_amd64.EmulationResult(samples)
    assert sorted(result.ratios["slowdown"].round(6)) == [3.0, 4.0, 4.0, 4.0, 5.0]
    row = result.summary.loc[arm64_vs_amd64.LOOP]
    assert (row["slowdown"], row["ci_low"], row["ci_high"]) == pytest.approx((4.0, 3.0, 5.0))
    assert row["n"] == 5 and row["same_output"] and result.emulated_platform == arch.ARM64


def _emulation(slowdowns: dict[str, list[float]]) -> arm64_vs_amd64.EmulationResult:
    """Paired rounds of each workload: native 0.1 s, emulated 0.1 s × the round's slowdown."""
    return arm64_vs_amd64.EmulationResult(pd.DataFrame([
        {"workload": workload, "size": 1, "unit": "u", "platform": platform, "emulated": foreign, "repeat": repeat,
         "position": 0, "wall_s": 0.1 * (slowdown if foreign else 1.0), "output_sha256": "same"}
        for workload, series in slowdowns.items() for repeat, slowdown in enumerate(series)
        for foreign, platform in ((False, arch.AMD64), (True, arch.ARM64))]))


@pytest.mark.parametrize(("gzip", "verdict"), [
    ([2.8, 2.9, 3.0, 3.1, 3.4], Verdict.HOLDS),  # as recorded: every interval at or above 2×
    ([1.2, 1.3, 1.4, 1.5, 1.6], Verdict.FAILS),  # wholly below 2×: slower, but not much slower
    ([1.5, 1.8, 2.2, 2.5, 3.0], Verdict.INCONCLUSIVE),  # the interval straddles 2×
])
def test_much_slower_under_emulation_can_hold_fail_or_stay_undecided(gzip: list[float], verdict: Verdict) -> None:
    steady = [11.0, 12.0, 12.0, 13.0, 13.0]
    samples = {arm64_vs_amd64.LOOP: steady, arm64_vs_amd64.HASH: steady, arm64_vs_amd64.GZIP: gzip}
    assert _emulation(samples).much_slower == verdict


def test_the_cross_build_beats_emulation_only_when_every_build_does() -> None:
    def builds(cross_s: list[float], emulated_s: list[float]) -> arm64_vs_amd64.BuildResult:
        rows = [{"method": method, "platform": "linux/arm64", "repeat": i, "wall_s": wall_s, "compile_s": 1.0,
                 "image_architecture": "arm64", "output": "checksum 1", "functions": 1}
                for method, series in ((arm64_vs_amd64.CROSS_BUILD, cross_s),
                                       (arm64_vs_amd64.EMULATED_BUILD, emulated_s))
                for i, wall_s in enumerate(series)]
        return arm64_vs_amd64.BuildResult(pd.DataFrame(rows), pd.DataFrame())

    assert builds([3.8, 4.3, 5.1], [22.4, 22.9, 27.8]).cross_always_faster  # as recorded
    # Faster by the medians (4 s against 20 s), but one emulated build beat a cross build.
    assert not builds([3.0, 4.0, 6.0], [5.0, 20.0, 21.0]).cross_always_faster


def test_the_program_prints_the_same_natively_and_cross_built_under_emulation(tmp_path: Path) -> None:
    foreign = arch.foreign_platform()
    compiler = arm64_vs_amd64.cross_compiler(foreign)
    if not arch.check_emulation(foreign).ok or not (Path("/usr/bin") / compiler).exists():
        missing(f"{compiler} and binfmt emulation of {foreign} (`labkit setup 11`)")
    (tmp_path / "program.c").write_text(arm64_vs_amd64.program_source(20))
    run(["gcc", "-O2", "-static", "-o", str(tmp_path / "native"), str(tmp_path / "program.c")], 120)
    run([compiler, "-O2", "-static", "-o", str(tmp_path / "cross"), str(tmp_path / "program.c")], 120)
    native = run([str(tmp_path / "native")], 30).stdout
    assert native.startswith("checksum ") and run([str(tmp_path / "cross")], 30).stdout == native
    assert (tmp_path / "cross").read_bytes()[18] == {arch.ARM64: 183, arch.AMD64: 62}[foreign]  # ELF e_machine


# ---------------------------------------------------------------- live: notebook 11 in quick mode


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / arm64_vs_amd64.STEM


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
    result = arm64_vs_amd64.EmulationResult(_table(executed, "emulation"))
    assert (result.summary.loc[list(arm64_vs_amd64.CPU_BOUND), "slowdown"] > 1).all()
    assert result.summary["same_output"].all()


@pytest.mark.docker
def test_builds_record_their_platform_and_print_the_same(executed: Path) -> None:
    result = arm64_vs_amd64.BuildResult(_table(executed, "builds"), _table(executed, "default_platform"))
    native, foreign = (p.split("/")[1] for p in (arch.host_platform(), arch.foreign_platform()))
    assert list(result.summary["image_architecture"]) == [native, foreign, foreign]
    assert result.same_output and result.builds["output"].iloc[0].startswith("checksum ")
    assert result.recorded(arm64_vs_amd64.DEFAULT_PLATFORM) == native
    assert result.recorded(arch.foreign_platform()) == foreign


@pytest.mark.docker
def test_the_manifest_list_resolves_to_each_platform(executed: Path) -> None:
    pulls = _table(executed, "manifest")
    assert sorted(pulls["platform"]) == sorted(arch.PLATFORMS)
    assert registry.ManifestResult(pulls).resolves
    assert (pulls["list_media_type"] == "application/vnd.docker.distribution.manifest.list.v2+json").all()


@pytest.mark.docker
def test_nothing_is_left_behind(executed: Path, docker_client: docker.DockerClient) -> None:
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert not [i for i in docker_client.images.list() if any("127.0.0.1:" in t for t in i.tags)]
    assert not list(Path("/tmp").glob("labkit-registry-*"))
    assert not list((Path.home() / ".docker" / "manifests").glob("127.0.0.1*"))  # no local manifest list kept


def test_the_arm64_and_amd64_recipes_differ_only_in_their_architecture_and_how_made() -> None:
    from labkit.instruments import images

    arm64, amd64 = images.recipe("busybox-arm64"), images.recipe("busybox-amd64")
    assert dict(arm64.inputs)["arch"] == "arm64" and dict(amd64.inputs)["arch"] == "amd64"
    assert {k: v for k, v in arm64.inputs if k != "arch"} == {k: v for k, v in amd64.inputs if k != "arch"}
    assert arm64.digest != amd64.digest
    builder, builder_arm64 = images.recipe("c-builder"), images.recipe("c-builder-arm64")
    # The amd64 builder is a copy of the host's root with apt-get (its packages are its debootstrap's: see
    # test_derived_bases.py); the arm64 one is debootstrapped whole. Their other inputs are the same.
    made_how = ("arch", "root", "apt_leftovers")
    assert [i for i in builder.inputs if i[0] not in made_how] == [i for i in builder_arm64.inputs if i[0] != "arch"]
    assert images.root_of("c-builder") == "debian-minbase" and images.root_of("c-builder-arm64") is None
    assert images.DEBIAN_BASES["c-builder-arm64"].platform == arch.ARM64
    assert images.DEBIAN_PACKAGE_BASES["busybox-arm64"].platform == arch.ARM64


def test_notebook_11_names_and_links_only_notebooks_that_exist() -> None:
    # Its "What's next" once named a "12 · Compose" that was never written: every "NN · " it names must be a
    # notebook NN-*.ipynb, and every relative link a file.
    notebooks = ROOT / "notebooks"
    text = "".join("".join(cell["source"]) for cell in json.loads((notebooks / "11-arm64-vs-amd64.ipynb")
                   .read_text())["cells"] if cell["cell_type"] == "markdown")
    named = set(re.findall(r"\b(\d\d) · ", text))
    assert named, "the notebook names no other notebook; the pattern no longer matches its headings"
    assert {n for n in named if not list(notebooks.glob(f"{n}-*.ipynb"))} == set()
    links = re.findall(r"\]\(([^)#:]+)\)", text)
    assert [link for link in links if not (notebooks / link).exists()] == []
