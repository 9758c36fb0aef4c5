"""Notebook 05's lab and its bases: bad input refused before anything runs; the filesystem inventory, the chapter's
table and the pull fit on known answers; a distroless tree copied with its symlinks; and a live quick run whose
tables order scratch < distroless-style < slim for the same app, with the registry gone afterwards."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.results import ResultStore
from labkit.core.session import LabSession
from labkit.errors import BadParameter, NotPrepared
from labkit.instruments import diskquiet, images, inventory
from labkit.labs import choosing_a_base_image
from tests.conftest import leftovers

LAB = choosing_a_base_image.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: choosing_a_base_image.run_bases(lab, bases=["alpine"]), r"(?s)\['alpine'\].*Choose from .*node-slim"),
    (lambda lab: choosing_a_base_image.run_bases(lab, bases=[]), r"bases=\[\]: need a non-empty list"),
    (lambda lab: choosing_a_base_image.run_bases(lab, bases="busybox"), r"bases='busybox'"),
    (lambda lab: choosing_a_base_image.run_bases(lab, bases=["busybox", "busybox"]), r"names a base twice"),
    (lambda lab: choosing_a_base_image.run_bases(lab, pull_repeats=0), r"pull_repeats=0"),
    (lambda lab: choosing_a_base_image.run_bases(lab, port=80), r"port=80.*1024 to 65535"),
    (lambda lab: choosing_a_base_image.run_bases(lab, settle_timeout_s=0), r"settle_timeout_s=0: need a positive"),
    (lambda lab: choosing_a_base_image.run_bases(lab, extra_images=["node:20"]), r"(?s)extra_images needs extra_argv"),
    (lambda lab: choosing_a_base_image.run_startup(lab, repeats=0), r"repeats=0"),
    (lambda lab: choosing_a_base_image.run_startup(lab, bases=["debian"]), r"\['debian'\]"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


@pytest.mark.docker
def test_an_image_not_in_the_engine_is_refused_with_the_pull_command(docker_client: docker.DockerClient) -> None:
    with pytest.raises(NotPrepared, match=r"(?s)'labkit-test/absent:1' is not in the engine.*docker pull"):
        choosing_a_base_image.validate_extra_images(docker_client, ["labkit-test/absent:1"])


@pytest.mark.parametrize(("name", "stands_in_for"), [
    ("debian-full", "buildpack-deps:bookworm"), ("debian-slim", "debian:bookworm-slim"),
    ("python-slim", "python:3.11-slim"), ("python-distroless", "gcr.io/distroless/python3-debian12"),
    ("node-full", "node:20"), ("node-slim", "node:20-slim"), ("node-distroless", "gcr.io/distroless/nodejs20"),
    ("scratch-static", "FROM scratch + a static Go binary"), ("musl-busybox", "alpine, the base of node:20-alpine")])
def test_every_base_of_05_is_a_recipe_that_says_what_it_stands_in_for(name: str, stands_in_for: str) -> None:
    recipe = images.recipe(name)
    assert "stands in for" in recipe.description and stands_in_for in recipe.description
    assert name in choosing_a_base_image.LAB.bases


@pytest.mark.parametrize(("description", "expected"), [
    # The stand-in's own name ends in ")": only the enclosing parenthesis's ")" goes, so one stays.
    ("Debian + nodejs (stands in for node:20 (Debian's nodejs 18, without npm))",
     "node:20 (Debian's nodejs 18, without npm)"),
    ("busybox-static on FROM scratch (stands in for busybox:1.36)", "busybox:1.36"),
    # Two "(stands in for" in one text: the last one names it.
    ("a copy (stands in for x) of y (stands in for z (v2))", "z (v2)"),
])
def test_the_stand_in_name_keeps_its_own_closing_parenthesis(description: str, expected: str) -> None:
    assert choosing_a_base_image.bases.stands_in_for(description) == expected


def test_recipes_built_on_another_base_change_with_it() -> None:
    distroless = images.DISTROLESS_BASES["python-distroless"]
    assert dict(distroless.recipe("python-distroless").inputs)["source"] == images.recipe("python-slim").digest
    static = images.STATIC_BASES["scratch-static"]
    assert dict(static.recipe("scratch-static").inputs)["builder"] == images.recipe("go-builder").digest
    with pytest.raises(BadParameter, match="has no root filesystem tree"):
        images.rootfs_dir("node-distroless")


def _tar(entries: list[tuple[str, str, Any]]) -> io.BytesIO:
    """A tar of (name, kind, detail): file → (content, mode), dir, symlink → target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind, detail in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                content, mode = detail
                data = content.encode()
                info.size, info.mode = len(data), mode
                archive.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, str(detail)
                archive.addfile(info)
    buffer.seek(0)
    return buffer


STATUS = ("Package: bash\nStatus: install ok installed\n\nPackage: gone\nStatus: deinstall ok config-files\n\n"
          "Package: dash\nStatus: install ok installed\n")


def test_the_inventory_follows_merged_usr_links_and_counts_setuid_and_packages() -> None:
    found = inventory.read_filesystem(_tar([
        ("bin", "symlink", "usr/bin"), ("usr", "dir", None), ("usr/bin", "dir", None),
        ("usr/bin/dash", "file", ("ELF", 0o755)), ("usr/bin/sh", "symlink", "dash"),
        ("usr/bin/su", "file", ("ELF", 0o4755)), ("usr/bin/wall", "file", ("ELF", 0o2755)),
        ("usr/bin/apt-get", "file", ("ELF", 0o755)), ("var/lib/dpkg/status", "file", (STATUS, 0o644)),
        (".dockerenv", "file", ("", 0o755)), ("etc/hosts", "file", ("", 0o644))]))
    assert found.shells == ("bin/sh", "bin/dash")
    assert found.setuid == ("usr/bin/su", "usr/bin/wall")
    assert found.package_managers == ("apt",)
    assert found.packages == 2
    assert found.files == 5  # .dockerenv and /etc/hosts are the engine's, not the image's


def test_the_inventory_of_a_lone_static_binary_has_nothing_else() -> None:
    found = inventory.read_filesystem(_tar([("app", "file", ("ELF", 0o755)),
                                            ("bin/sh", "symlink", "/nowhere/busybox")]))
    assert (found.files, found.shells, found.package_managers, found.packages, found.setuid) == (1, (), (), 0, ())


def test_a_distroless_tree_keeps_the_symlinks_on_the_way(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (source / "usr" / "bin").mkdir()
    (source / "lib").symlink_to("usr/lib")
    (source / "usr" / "lib" / "x86_64-linux-gnu" / "libc.so.6").write_text("libc")
    (source / "usr" / "bin" / "python3.11").write_text("python")
    (source / "usr" / "bin" / "python3").symlink_to("python3.11")
    (source / "lib64").symlink_to("/usr/lib/x86_64-linux-gnu")  # an absolute link resolves inside the tree
    images._place(source, target, "/usr/bin/python3")
    images._place(source, target, "/lib64/libc.so.6")
    assert os.readlink(target / "usr" / "bin" / "python3") == "python3.11"
    assert (target / "usr" / "bin" / "python3.11").read_text() == "python"
    assert os.readlink(target / "lib64") == "/usr/lib/x86_64-linux-gnu"
    assert (target / "usr" / "lib" / "x86_64-linux-gnu" / "libc.so.6").read_text() == "libc"
    assert not (target / "lib").exists()  # nothing asked for went through it


def _table(sizes_mb: dict[str, float], pulls: dict[str, list[float]]) -> choosing_a_base_image.BaseTable:
    bases = pd.DataFrame([{"base": b, "image": b, "stands_in_for": b, "size_bytes": mb * 1e6,
                           "compressed_bytes": mb * 1e6 / 2.5, "layers": 1, "files": 1, "file_bytes": 1,
                           "setuid_files": 0, "setuid_paths": "", "shells": "", "package_managers": "",
                           "packages": 0, "user": "", "app": "", "app_output": "hello"} for b, mb in sizes_mb.items()])
    transfers = pd.DataFrame([{"base": b, "action": "pull", "repeat": i, "wall_s": s,
                               "compressed_bytes": sizes_mb[b] * 1e6 / 2.5, "size_bytes": sizes_mb[b] * 1e6,
                               "same_image": True, "layers_reused": 0, "position": 0, "layers_before": 0}
                              for b, series in pulls.items() for i, s in enumerate(series)],
                             columns=list(choosing_a_base_image.LAB.tables["transfers"]))
    return choosing_a_base_image.BaseTable(bases, transfers)


def test_the_chapter_table_judges_each_stand_in_by_the_chapter_s_size() -> None:
    table = _table({"node-full": 800, "node-slim": 200, "node-distroless": 90, "scratch-static": 1.5}, {})
    chapter = table.chapter.set_index("image")
    assert chapter.loc["node:20", "verdict"] == Verdict.HOLDS.value  # 0.8× the chapter's ~1 GB
    assert chapter.loc["node:20-slim", "verdict"] == Verdict.HOLDS.value  # 0.8× its ~250 MB
    assert chapter.loc["gcr.io/distroless/nodejs20", "verdict"] == Verdict.HOLDS.value  # 0.75× its ~120 MB
    # One program on FROM scratch: the base adds nothing, by construction.
    assert chapter.loc["scratch + a static binary", "verdict"] == Verdict.CAVEAT.value
    assert chapter.loc["node:20-alpine", "verdict"] == Verdict.INCONCLUSIVE.value  # no offline stand-in
    assert table.node_family_ordered
    small = _table({"node-full": 400, "node-slim": 100, "scratch-static": 1.5}, {}).chapter.set_index("image")
    assert small.loc["node:20", "verdict"] == Verdict.FAILS.value  # 0.4× the chapter's size: off by over 2×
    swapped = _table({"node-full": 800, "node-slim": 80, "node-distroless": 90, "scratch-static": 1.5}, {})
    rows = swapped.chapter.set_index("image")
    assert rows.loc["node:20-slim", "verdict"] == Verdict.FAILS.value and not swapped.node_family_ordered
    wide = _table({"node-full": 800, "node-slim": 600, "scratch-static": 1.5}, {}).chapter.set_index("image")
    assert wide.loc["node:20-slim", "verdict"] == Verdict.FAILS.value  # 2.4× its ~250 MB


@pytest.mark.parametrize(("sizes_mb", "verdict"), [
    ({"node-full": 800, "node-slim": 200, "node-distroless": 90}, Verdict.HOLDS),
    ({"node-full": 285, "node-slim": 173, "node-distroless": 102}, Verdict.CAVEAT),  # the recorded run's sizes
    ({"node-full": 285, "node-slim": 100, "node-distroless": 40}, Verdict.FAILS),
])
def test_the_chapter_s_sizes_can_hold_or_fail(sizes_mb: dict[str, float], verdict: Verdict) -> None:
    table = _table({**sizes_mb, "scratch-static": 1.5}, {b: [1.0, 2.0] for b in (*sizes_mb, "scratch-static")})
    ledger = ClaimLedger(choosing_a_base_image.STEM)
    start = choosing_a_base_image.StartResult(pd.DataFrame({
        "method": ["node-full", "node-distroless"] * 2, "repeat": [0, 0, 1, 1], "position": [0, 1, 1, 0],
        "wall_s": [0.4, 0.4, 0.5, 0.5]}))
    choosing_a_base_image.check_claims(ledger, table, choosing_a_base_image.fit_pulls(table), start,
                                       _as_measured_here())
    assert ledger.verdict("size.chapter_sizes") == verdict
    assert ledger.verdict("size.base_ordering") == Verdict.CAVEAT  # the order is certain by construction


def test_the_pull_fit_recovers_a_known_line_and_its_fixed_cost() -> None:
    sizes = {"scratch-static": 1.0, "node-distroless": 40.0, "node-slim": 100.0, "node-full": 300.0}
    # pull = 0.5 s + 10 ms per compressed MB (compressed = size / 2.5), exactly
    table = _table(sizes, {b: [0.5 + 0.010 * mb / 2.5] * 2 for b, mb in sizes.items()})
    fit = choosing_a_base_image.fit_pulls(table)
    assert fit.intercept_s == pytest.approx(0.5) and fit.slope_s_per_mb == pytest.approx(0.010)
    assert fit.r_squared == pytest.approx(1.0) and fit.rank_correlation == pytest.approx(1.0)
    assert fit.per_base.index[0] == "scratch-static"
    assert fit.per_base["residual_s"].abs().max() < 1e-9
    assert fit.fixed_cost_s == pytest.approx(0.504) and fit.smallest == "scratch-static"
    assert fit.per_base.loc["node-full", "fixed_share"] == pytest.approx(0.504 / 1.7)
    with pytest.raises(BadParameter, match="at least two images"):
        choosing_a_base_image.fit_pulls(_table({"busybox": 2.0}, {"busybox": [0.3, 0.4]}))


def test_a_pull_that_found_its_layers_is_left_out_of_the_fit() -> None:
    sizes = {"scratch-static": 1.0, "node-slim": 100.0, "node-full": 300.0}
    table = _table(sizes, {b: [0.5 + 0.010 * mb / 2.5] for b, mb in sizes.items()})
    warm = table.transfers.assign(layers_reused=(table.transfers["base"] == "scratch-static").astype(int),
                                  wall_s=table.transfers["wall_s"].where(table.transfers["base"] != "scratch-static",
                                                                         0.01))
    fit = choosing_a_base_image.fit_pulls(choosing_a_base_image.BaseTable(table.bases, warm))
    assert fit.left_out == ("scratch-static",) and fit.intercept_s == pytest.approx(0.5)
    assert "scratch-static" not in fit.per_base.index


def test_the_recorded_full_run_orders_the_node_family_by_size(replay: LabSession) -> None:
    sizes = choosing_a_base_image.run_bases(replay, bases=choosing_a_base_image.BASES, pull_repeats=3).sizes["size_mb"]
    assert sizes["scratch-static"] < sizes["node-distroless"] < sizes["node-slim"] < sizes["node-full"]
    assert sizes["python-distroless"] < sizes["python-slim"] < sizes["debian-full"]


# ---------------------------------------------------------------- live: notebook 05 in quick mode


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / choosing_a_base_image.STEM


@pytest.mark.docker
def test_scratch_is_smaller_than_distroless_than_slim_for_the_same_app(executed: Path) -> None:
    bases = pd.read_csv(executed / "bases.csv").set_index("base")
    size = bases["size_bytes"]
    assert size["scratch-static"] < size["node-distroless"] < size["node-slim"]
    assert (bases["app_output"] == choosing_a_base_image.GREETING).all()
    assert (bases["compressed_bytes"] < bases["size_bytes"]).all()
    assert bases.loc["node-distroless", "shells"] != bases.loc["node-distroless", "shells"]  # NaN: no shell
    assert bases.loc["node-slim", "shells"].startswith("bin/sh") and bases.loc["node-slim", "packages"] > 50
    assert bases.loc["node-distroless", "user"] == "65532:65532"


@pytest.mark.docker
def test_every_cold_pull_gave_back_the_pushed_image(executed: Path) -> None:
    transfers = pd.read_csv(executed / "transfers.csv")
    assert set(transfers["action"]) == {"push", "pull"} and transfers["same_image"].all()
    assert (transfers["wall_s"] > 0).all()


@pytest.mark.docker
def test_the_registry_and_the_run_leave_nothing_behind(executed: Path, docker_client: docker.DockerClient) -> None:
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert not [i for i in docker_client.images.list() if any("127.0.0.1:" in t for t in i.tags)]
    assert not list(Path("/tmp").glob("labkit-registry-*"))
    for name in choosing_a_base_image.QUICK_BASES:  # every base is back under its own tag after its cold pulls
        assert images.find(docker_client, name) is not None


def test_start_times_are_grouped_by_the_runtime_that_prints() -> None:
    samples = pd.DataFrame([{"method": base, "repeat": r, "position": 0, "wall_s": wall}
                            for base, wall in (("node-slim", 0.5), ("node-full", 0.52), ("busybox", 0.38),
                                               ("scratch-static", 0.39)) for r in range(5)])
    start = choosing_a_base_image.StartResult(samples)
    assert start.by_runtime_ms() == pytest.approx({"sh": 380.0, "a static binary": 390.0, "node": 510.0})
    assert list(start.by_runtime_ms()) == ["sh", "a static binary", "node"]
    assert start.node_family() == ["node-full", "node-slim"] and start.size_decides is True


def _with_files(table: choosing_a_base_image.BaseTable, files: dict[str, int]) -> choosing_a_base_image.BaseTable:
    return choosing_a_base_image.BaseTable(table.bases.assign(files=table.bases["base"].map(files)), table.transfers)


@pytest.mark.parametrize(("pull_s", "better", "expected"), [
    # pull = 0.2 s + 1 ms per file exactly; the compressed sizes (0.4, 16, 40, 120 MB) do not follow the files
    # (1, 300, 3,600, 1,200): the file line fits exactly (R² 1), the bytes line does not → files, a caveat.
    ({"scratch-static": 0.201, "node-distroless": 0.5, "node-slim": 3.8, "node-full": 1.4}, "files", Verdict.CAVEAT),
    # pull = 0.5 s + 10 ms per compressed MB exactly: bytes fit exactly, and residuals 0 follow nothing → holds.
    ({"scratch-static": 0.504, "node-distroless": 0.66, "node-slim": 0.9, "node-full": 1.7}, "bytes", Verdict.HOLDS),
    # The better line (files) falls with its measure: the more files, the faster → does not hold.
    ({"scratch-static": 4.0, "node-distroless": 3.7, "node-slim": 0.4, "node-full": 2.8}, "files", Verdict.FAILS),
])
def test_the_pull_verdict_follows_the_better_of_bytes_and_files(pull_s: dict[str, float], better: str,
                                                                 expected: Verdict) -> None:
    sizes = {"scratch-static": 1.0, "node-distroless": 40.0, "node-slim": 100.0, "node-full": 300.0}
    files = {"scratch-static": 1, "node-distroless": 300, "node-slim": 3600, "node-full": 1200}
    table = _with_files(_table(sizes, {b: [s] * 2 for b, s in pull_s.items()}), files)
    fit = choosing_a_base_image.fit_pulls(table)
    assert fit.better_model == better
    ledger = ClaimLedger(choosing_a_base_image.STEM)
    start = choosing_a_base_image.StartResult(pd.DataFrame({
        "method": ["node-full", "node-distroless"] * 2, "repeat": [0, 0, 1, 1], "position": [0, 1, 1, 0],
        "wall_s": [0.4, 0.4, 0.5, 0.5]}))
    choosing_a_base_image.check_claims(ledger, table, fit, start, _as_measured_here())
    assert ledger.verdict("pull.smaller_faster") == expected


def test_one_swap_among_four_bases_is_a_rank_correlation_of_exactly_0_8() -> None:
    # Spearman: 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/(4·15) = 0.8 when two neighbours swap; the criterion's ≥ 0.8 holds.
    sizes = {"scratch-static": 1.0, "node-distroless": 40.0, "node-slim": 100.0, "node-full": 300.0}
    pulls = {"scratch-static": 0.3, "node-distroless": 1.2, "node-slim": 1.0, "node-full": 4.0}
    fit = choosing_a_base_image.fit_pulls(_table(sizes, {b: [s] * 2 for b, s in pulls.items()}))
    assert fit.rank_correlation == 0.8 and fit.faster_when_smaller


# ---------------------------------------------------------------- the musl base and native modules (issue 17)


def test_the_musl_base_is_musl_s_loader_and_busybox_from_debian_s_packages() -> None:
    recipe = images.recipe("musl-busybox")
    assert dict(recipe.inputs)["packages"] == "musl,busybox-static" and "FROM scratch" in recipe.description


def test_the_alpine_row_shows_the_musl_stand_in_s_size_without_judging_it() -> None:
    table = _table({"node-full": 800, "node-slim": 200, "musl-busybox": 2.8, "node-distroless": 90,
                    "scratch-static": 1.5}, {})
    alpine = table.chapter.set_index("image").loc["node:20-alpine"]
    # 2.8 MB against the chapter's ~150 MB would be 0.02×: it has no node, so it is shown and not judged.
    assert alpine["measured_mb"] == pytest.approx(2.8) and alpine["verdict"] == Verdict.INCONCLUSIVE.value
    assert "not judged" in alpine["why"] and "node" in alpine["why"]
    assert "node:20-alpine" not in set(table.sized_rows["image"])
    # The musl base sits between distroless (90) and scratch (1.5) by size, not where the chapter's alpine row
    # sits (above distroless): left out of the order, it does not make the four judged rows disagree.
    assert table.chapter.set_index("image").drop("node:20-alpine")["rank_agrees"].all()


def _native(loaded: dict[tuple[str, str], bool]) -> choosing_a_base_image.NativeResult:
    """A hand-made native_modules table: (base, module) → loaded; the failures carry the loader's error."""
    symbols = {"musl": "snprintf", "glibc": "snprintf@GLIBC_2.2.5", "glibc-hardened": "__snprintf_chk@GLIBC_2.3.4"}
    libc = {"musl-busybox": "musl", "debian-slim": "glibc"}
    rows = [{"base": base, "base_libc": libc[base], "loader_libc": libc[base], "module": module,
             "module_libc": module.split("-")[0], "hardened": module.endswith("hardened"),
             "libc_symbols": symbols[module], "exit_code": 0 if ok else 1, "loaded": ok,
             "output": "native module says hello" if ok else "Error relocating: symbol not found"}
            for (base, module), ok in loaded.items()]
    return choosing_a_base_image.NativeResult(pd.DataFrame(rows))


def _loads(on_musl: tuple[bool, bool, bool], on_glibc: tuple[bool, bool, bool]) -> dict[tuple[str, str], bool]:
    modules = ("musl", "glibc", "glibc-hardened")
    return {**{("musl-busybox", m): ok for m, ok in zip(modules, on_musl, strict=True)},
            **{("debian-slim", m): ok for m, ok in zip(modules, on_glibc, strict=True)}}


def _as_measured_here() -> choosing_a_base_image.NativeResult:
    """The native-module outcome this host gave: the plain glibc build loads on musl, the hardened one does not."""
    return _native(_loads((True, True, False), (False, True, True)))


@pytest.mark.parametrize(("on_musl", "on_glibc", "expected"), [
    # What this host gave: the plain glibc build loads on musl, the hardened one does not → "occasionally".
    ((True, True, False), (False, True, True), Verdict.CAVEAT),
    ((True, False, False), (False, True, True), Verdict.HOLDS),  # every glibc build trips
    ((True, True, True), (False, True, True), Verdict.FAILS),  # nothing tripped on musl
    ((False, False, False), (False, True, True), Verdict.FAILS),  # not even the musl build works on musl
    ((True, False, False), (False, True, False), Verdict.INCONCLUSIVE),  # a glibc build fails on glibc too
])
def test_the_native_module_verdict(on_musl: tuple[bool, bool, bool], on_glibc: tuple[bool, bool, bool],
                                   expected: Verdict) -> None:
    native = _native(_loads(on_musl, on_glibc))
    table = _table({"node-full": 800, "node-slim": 200, "scratch-static": 1.5},
                   {b: [1.0, 2.0] for b in ("node-full", "node-slim", "scratch-static")})
    ledger = ClaimLedger(choosing_a_base_image.STEM)
    start = choosing_a_base_image.StartResult(pd.DataFrame({
        "method": ["node-full", "node-slim"] * 2, "repeat": [0, 0, 1, 1], "position": [0, 1, 1, 0],
        "wall_s": [0.4, 0.4, 0.5, 0.5]}))
    choosing_a_base_image.check_claims(ledger, table, choosing_a_base_image.fit_pulls(table), start, native)
    assert ledger.verdict("musl.native_modules") == expected


def test_the_symbols_only_glibc_defines_name_the_hardened_build_s_checked_snprintf() -> None:
    native = _native(_loads((True, True, False), (False, True, True)))
    assert native.only_glibc_has("glibc-hardened") == ["__snprintf_chk"]
    assert native.only_glibc_has("glibc") == []  # snprintf@GLIBC_2.2.5 is musl's snprintf too
    assert native.glibc_builds_failing_on_musl == ["glibc-hardened"]
    assert "__snprintf_chk" in native.conclusion() and "1 of 2 glibc builds" in native.conclusion()


def test_an_older_recording_without_the_native_table_replays_without_it(tmp_path: Path) -> None:
    # A recording made before section 3 and the cold check existed: no native_modules.csv, and transfers without
    # position and layers_before. It must replay, with the musl claim left out rather than a crash.
    folder = tmp_path / choosing_a_base_image.STEM
    folder.mkdir()
    (folder / "provenance.json").write_text('{"run_id": "old", "experiments": {}}')
    sizes = {"node-full": 800.0, "node-slim": 200.0, "scratch-static": 1.5}
    old = _table(sizes, {b: [0.5 + 0.010 * mb / 2.5] * 2 for b, mb in sizes.items()})
    old.bases.to_csv(folder / "bases.csv", index=False)
    old.transfers.drop(columns=["position", "layers_before"]).to_csv(folder / "transfers.csv", index=False)
    session = LabSession.replaying(choosing_a_base_image.LAB, ResultStore(folder))
    native = choosing_a_base_image.run_native_modules(session)
    assert not native.recorded and "Not in this recording" in native.conclusion()
    table = choosing_a_base_image.run_bases(session, bases=list(sizes), pull_repeats=2)
    fit = choosing_a_base_image.fit_pulls(table)
    assert len(fit.points) == 6 and fit.checked_cold == 0  # none was checked then
    assert not fit.interleaved and "back to back" in fit.conclusion() and "No pull was checked" in fit.conclusion()
    start = choosing_a_base_image.StartResult(pd.DataFrame({
        "method": ["node-full", "node-slim"] * 2, "repeat": [0, 0, 1, 1], "position": [0, 1, 1, 0],
        "wall_s": [0.4, 0.4, 0.5, 0.5]}))
    ledger = ClaimLedger(choosing_a_base_image.STEM)
    choosing_a_base_image.check_claims(ledger, table, fit, start, native)
    assert "musl.native_modules" not in set(ledger.frame()["id"])


# ---------------------------------------------------------------- cold pulls, interleaved


def test_a_pull_whose_layers_were_still_in_the_engine_is_not_cold() -> None:
    sizes = {"scratch-static": 1.0, "node-slim": 100.0, "node-full": 300.0}
    table = _table(sizes, {b: [0.5 + 0.010 * mb / 2.5] * 2 for b, mb in sizes.items()})
    t = table.transfers.assign(layers_before=0)
    t.loc[(t["base"] == "node-slim") & (t["repeat"] == 1), "layers_before"] = 1  # one layer survived the rmi
    checked = choosing_a_base_image.BaseTable(table.bases, t)
    assert len(checked.cold_pulls) == 5 and checked.checked_cold == 5 and checked.warm_pulls == ["node-slim"]


def test_the_rounds_show_a_drift_over_the_run() -> None:
    sizes = {"scratch-static": 1.0, "node-distroless": 40.0, "node-slim": 100.0, "node-full": 300.0}
    # Round 0 pulls at 0.8× and round 1 at 1.2× of a base's own time t: each base's median is t (the mean of
    # two), so the rounds sit at 0.8× and 1.2× of it; with t = 0.5 s + 10 ms per compressed MB, round 0's own
    # line has slope 0.8 × 10 = 8 ms/MB and round 1's 12 ms/MB, both exact (R² 1).
    table = _table(sizes, {b: [f * (0.5 + 0.010 * mb / 2.5) for f in (0.8, 1.2)] for b, mb in sizes.items()})
    rounds = choosing_a_base_image.fit_pulls(table).per_round
    assert rounds["relative"].tolist() == pytest.approx([0.8, 1.2])
    assert rounds["slope_ms_per_mb"].tolist() == pytest.approx([8.0, 12.0])
    assert rounds["r_squared"].tolist() == pytest.approx([1.0, 1.0]) and rounds["n"].tolist() == [4, 4]
    assert "drifted" in choosing_a_base_image.fit_pulls(table).conclusion()


@pytest.mark.docker
def test_the_layer_check_finds_every_layer_of_an_image_in_the_engine(docker_client: docker.DockerClient) -> None:
    busybox = images.require_base(docker_client, "busybox")  # built by BuildKit: two layers
    diff_ids = docker_client.images.get(busybox.tag).attrs["RootFS"]["Layers"]
    assert len(diff_ids) == 2
    assert choosing_a_base_image.bases.layers_in_engine(docker_client, diff_ids) == 2
    # A layer on top of busybox's that nobody made: its chain ID names no folder in the store.
    absent = [*diff_ids, "sha256:" + "0" * 64]
    assert choosing_a_base_image.bases.layers_in_engine(docker_client, absent) == 2
    assert choosing_a_base_image.bases.layers_in_engine(docker_client, ["sha256:" + "1" * 64]) == 0


@pytest.mark.docker
def test_the_glibc_module_fails_on_the_musl_base_with_the_loader_s_error(executed: Path) -> None:
    modules = pd.read_csv(executed / "native_modules.csv").set_index(["base", "module"])
    assert modules.loc[("musl-busybox", "musl"), "loaded"]
    assert modules.loc[("musl-busybox", "musl"), "output"] == "native module says hello"
    hardened = modules.loc[("musl-busybox", "glibc-hardened")]
    assert not hardened["loaded"] and hardened["exit_code"] == 1
    # musl's dynamic loader's own words for a symbol it does not define
    assert hardened["output"] == ("Error relocating /native/module-glibc-hardened.so: __snprintf_chk: "
                                  "symbol not found")
    assert modules.loc[("debian-slim", "glibc-hardened"), "loaded"]  # the same file works on glibc
    assert "cannot open shared object file" in modules.loc[("debian-slim", "musl"), "output"]


@pytest.mark.docker
def test_every_pull_was_checked_and_the_two_witnesses_of_coldness_agree(executed: Path) -> None:
    pulls = pd.read_csv(executed / "transfers.csv").query("action == 'pull'")
    assert (pulls["layers_before"] >= 0).all()  # the engine's layer store was read before every pull
    # Layers counted in the engine before a pull are the ones the CLI then reports "Already exists", and none
    # counted means none reported (another notebook's BuildKit cache can hold a base's layer: then both say so).
    assert (pulls["layers_before"] == pulls["layers_reused"]).all()
    assert sorted(pulls["position"]) == list(range(len(pulls)))  # quick mode: one round, each base once
    assert pulls["settle_s"].notna().all()


def test_a_block_device_stat_line_gives_writes_discards_and_requests_in_flight() -> None:
    # A line shaped as this host's /sys/block/vda/stat, fields 1-17: reads 4 (ios merges sectors ticks),
    # writes 4, in flight, io_ticks, time_in_queue, discards 4, flushes 2. Writes: field 7 = 9,000 sectors;
    # in flight: field 9 = 3; discards completed: field 12 = 77.
    line = "  100 5 2000 40 300 7 9000 120 3 500 700 77 0 5000 90 12 6\n"
    assert diskquiet.parse_block_stat(line) == diskquiet.BlockStat(written_sectors=9000, discards=77, in_flight=3)
    # A kernel older than 4.18 prints 11 fields and no discard count.
    assert diskquiet.parse_block_stat("1 2 3 4 5 6 7 8 9 10 11").discards == 0
    with pytest.raises(BadParameter, match="not a block device stat line"):
        diskquiet.parse_block_stat("cpu 1 2 3")


def test_settle_refuses_a_quiet_time_longer_than_its_limit(tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match=r"quiet_s=5.*timeout_s=1"):
        diskquiet.settle(tmp_path, quiet_s=5, timeout_s=1)
