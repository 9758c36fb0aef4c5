"""Notebook 02's lab: parameters refused before anything runs; the comparisons computed from known rows; results
replay into the same claims and keep the properties the notebook promises."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import layers
from labkit.labs import image_layers
from tests.conftest import missing

LAB = image_layers.LAB  # what the `replay` fixture (conftest.py) replays
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: image_layers.run_layers(lab, blob_mib=0), r"blob_mib=0"),
    (lambda lab: image_layers.run_layers(lab, big_mib=-1), r"big_mib=-1"),
    (lambda lab: image_layers.run_overlay(lab, big_mib=0), r"big_mib=0"),
    (lambda lab: image_layers.run_copy_up(lab, repeats=0), r"repeats=0"),
    (lambda lab: image_layers.run_copy_up(lab, repeats=-1), r"repeats=-1"),
])
def test_bad_parameters_are_refused_before_anything_runs(replay: LabSession, call: Callable[[LabSession], object],
                                                         message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def _repro_rows(variant: str, diff_ids: list[tuple[str, str]]) -> list[dict[str, object]]:
    return [{"variant": variant, "build": build, "step": step, "created_by": f"step {step}",
             "diff_id": pair[build], "image_id": f"{variant}-{build}",
             "other_mtimes": int(build == 1 and pair[0] != pair[1]), "example_paths": "out" if build else ""}
            for step, pair in enumerate(diff_ids) for build in (0, 1)]


def test_reproducibility_comparison_on_known_digests() -> None:
    rows = _repro_rows("as is", [("a", "a"), ("b", "c"), ("", "")]) + _repro_rows("normalised", [("a", "a"),
                                                                                                  ("d", "d")])
    result = image_layers.ReproducibleResult(pd.DataFrame(rows))
    table = result.comparison().set_index(["variant", "step"])
    assert table["layer"].to_dict() == {("as is", 0): "same", ("as is", 1): "differs", ("as is", 2): "no layer",
                                        ("normalised", 0): "same", ("normalised", 1): "same"}
    assert table.loc[("as is", 1), "other_mtimes"] == 1
    assert result.differing("as is") == ["step 1"] and result.differing("normalised") == []
    assert result.layers_made("as is") == 2 and not result.same_image("normalised")


def test_recorded_results_replay_into_what_the_notebook_shows(replay: LabSession) -> None:
    layered, overlay = image_layers.run_layers(replay), image_layers.run_overlay(replay)
    copy_up, repro = image_layers.run_copy_up(replay), image_layers.run_reproducible(replay)
    # What the notebook shows renders from replayed tables too (empty strings come back as NaN from CSV).
    assert len(layered.table()) == len(layered.layers) and "(the base, docker import)" in layered.table().index[0]
    # This engine's builders (BuildKit v0.8, the legacy builder of 20.10): WORKDIR of a folder that exists makes
    # an empty layer with BuildKit only; every build of section 1 and 5 is cold.
    assert "buildkit: a layer; legacy: no layer" in layered.conclusion()
    assert "buildkit cold, legacy cold" in layered.conclusion() and repro.cold
    assert "The builds were cold" in repro.conclusion()
    assert {"written inside", "appended to"} <= set(overlay.overlay["case"]) and copy_up.conclusion()


def test_recorded_layers_agree_two_ways_and_the_whiteout_hides_the_blob(replay: LabSession) -> None:
    layered = image_layers.run_layers(replay)
    assert layered.layers["agree"].all()
    # Layers made by the build hold no symlinks: the engine counts exactly the regular files' bytes; each tar is
    # larger than its contents (at least the 1,024-byte end marker).
    built = layered.layers[(layered.layers["step"] > 0) & ~layered.layers["empty_layer"]]
    assert (built["history_bytes"] == built["content_bytes"]).all()
    assert (built["tar_bytes"] >= built["content_bytes"] + 1024).all()
    assert layered.wasted_bytes == layered.blob_bytes
    overlay = image_layers.run_overlay(replay)
    appended = overlay.row("appended to")
    assert appended["in_upper"] and appended["upper_bytes"] == appended["lower_bytes"] + 1
    assert overlay.row("deleted inside")["upper_kind"].startswith("whiteout")


@pytest.mark.parametrize(("created_by", "expected"), [
    # As each builder wrote them into this engine's image configs (docker save, 2026-12-05).
    ("RUN /bin/sh -c head -c 1M /dev/urandom > /opt/blob.bin # buildkit", "RUN"),
    ("COPY app/ /app/ # buildkit", "COPY"), ("ENV GREETING=hello", "ENV"), ("WORKDIR /app", "WORKDIR"),
    ('CMD ["cat" "greeting.py"]', "CMD"),
    ("RUN |1 SOURCE_DATE_EPOCH=1700000000 /bin/sh -c ls -l /out/app # buildkit", "RUN"),
    ("/bin/sh -c head -c 1M /dev/urandom > /opt/blob.bin", "RUN"),
    ("|1 SOURCE_DATE_EPOCH=1700000000 /bin/sh -c ls", "RUN"),
    ("/bin/sh -c #(nop) COPY dir:2801a40df693 in /app/ ", "COPY"), ("/bin/sh -c #(nop)  ENV GREETING=hello", "ENV"),
    ("/bin/sh -c #(nop) WORKDIR /app", "WORKDIR"), ('/bin/sh -c #(nop)  CMD ["sh"]', "CMD"),
    ("/bin/sh -c #(nop)  LABEL labkit.lab=probe02", "LABEL"), ("", "FROM"), (float("nan"), "FROM"),
])
def test_the_instruction_is_read_from_either_builders_history(created_by: object, expected: str) -> None:
    assert image_layers.instruction(created_by) == expected


def test_history_size_is_the_files_plus_the_symlinks_not_the_tar() -> None:
    # The recorded base: 116,661,974 bytes of files + 8,963 of symlink targets = 116,670,937 = its history size;
    # its tar is 128,327,680. A COPY layer: 29 bytes of files, 3,584-byte tar, history 29.
    frame = pd.DataFrame({"history_bytes": [116_670_937, 116_670_937, 29, 3_584],
                          "content_bytes": [116_661_974, 116_661_974, 29, 29],
                          "symlink_bytes": [8_963, 0, 0, 0], "tar_bytes": [128_327_680] * 2 + [3_584] * 2})
    assert image_layers.history_matches_contents(frame).tolist() == [True, False, True, False]


def _steps(builder: str, made: dict[str, bool]) -> list[dict[str, object]]:
    # An empty layer's tar is 1,024 bytes (two zero blocks); a layer with entries is given 2,048.
    return [{"builder": builder, "step": step, "instruction": keyword, "created_by": keyword,
             "empty_layer": not layer, "tar_bytes": (1024 if keyword == "WORKDIR" else 2048) if layer else 0,
             "entries": 0 if keyword == "WORKDIR" or not layer else 2}
            for step, (keyword, layer) in enumerate(made.items())]


def _layered(buildkit: dict[str, bool], legacy: dict[str, bool], agree: bool = True,
             dive_wasted: int = 4) -> image_layers.LayerResult:
    rows = pd.DataFrame({"step": [0, 1], "created_by": ["", "RUN x"], "empty_layer": [False, False],
                         "layer": [0, 1], "history_bytes": [10, 5], "content_bytes": [10, 5], "symlink_bytes": [0, 0],
                         "tar_bytes": [2048, 2048], "files": [1, 1], "whiteouts": [0, 1], "hidden_bytes": [0, 4],
                         "agree": [True, agree]})
    images = pd.DataFrame({"variant": ["deleted in a later layer", "deleted in the same RUN"],
                           "image_bytes": [20, 16], "blob_bytes": [4, 4]})
    builds = pd.DataFrame({"variant": ["layered", "layered", "one-layer"],
                           "builder": ["buildkit", "legacy", "buildkit"], "no_cache": [True, True, False],
                           "executed": [5, 7, 0], "cached": [0, 0, 4],
                           "cached_steps": ["", "", "RUN x"]})
    dive = pd.DataFrame({"image_bytes": [15], "wasted_bytes": [dive_wasted], "efficiency": [0.7],
                         "duplicated": ["/opt/blob.bin×2=4;/etc×3=0"]})
    return image_layers.LayerResult(rows, images, pd.DataFrame(_steps("buildkit", buildkit) + _steps("legacy", legacy)),
                                    builds, dive)


WORKDIR_LAYER = {"FROM": True, "RUN": True, "COPY": True, "ENV": False, "WORKDIR": True, "CMD": False}
NO_CONFIG_LAYER = {**WORKDIR_LAYER, "WORKDIR": False}


@pytest.mark.parametrize(("buildkit", "legacy", "agree", "config_layers", "expected"), [
    # What this engine did: BuildKit commits an empty layer for WORKDIR, the legacy builder none → a caveat.
    (WORKDIR_LAYER, NO_CONFIG_LAYER, True, ["WORKDIR (buildkit)"], Verdict.CAVEAT),
    (NO_CONFIG_LAYER, NO_CONFIG_LAYER, True, [], Verdict.HOLDS),
    # A COPY that made no layer, or a history size that is not the files' bytes: the claim fails.
    ({**NO_CONFIG_LAYER, "COPY": False}, NO_CONFIG_LAYER, True, [], Verdict.FAILS),
    (NO_CONFIG_LAYER, NO_CONFIG_LAYER, False, [], Verdict.FAILS),
])
def test_one_layer_per_instruction_on_known_histories(replay: LabSession, buildkit: dict[str, bool],
                                                      legacy: dict[str, bool], agree: bool,
                                                      config_layers: list[str], expected: Verdict) -> None:
    layered = _layered(buildkit, legacy, agree)
    assert layered.config_layers == config_layers
    assert layered.per_builder().loc[(4, "WORKDIR"), "buildkit"] == (
        "layer: 1,024 B tar, 0 entries" if buildkit["WORKDIR"] else "none")
    ledger = ClaimLedger(image_layers.STEM)
    image_layers.check_claims(ledger, layered, image_layers.run_overlay(replay), image_layers.run_copy_up(replay),
                              image_layers.run_reproducible(replay))
    assert ledger.verdict("layers.per_instruction") == expected


@pytest.mark.parametrize(("dive_wasted", "expected"), [
    # The whiteout hides 4 bytes (hidden_bytes 0 + 4); dive counting the same 4 agrees, dive counting 9 (a file
    # rewritten in a later layer counts each copy) is 9 − 4 = +5 bytes apart.
    (4, "**4 bytes** wasted (efficiency 70.00%); the whiteout hides **4**: the same bytes"),
    (9, "**9 bytes** wasted (efficiency 70.00%); the whiteout hides **4**: they differ by +5 bytes: dive counts every"),
    (1, "**1 bytes** wasted (efficiency 70.00%); the whiteout hides **4**: they differ by -3 bytes: dive counts a"),
])
def test_dive_beside_the_whiteout_on_known_numbers(dive_wasted: int, expected: str) -> None:
    text = _layered(NO_CONFIG_LAYER, NO_CONFIG_LAYER, dive_wasted=dive_wasted).dive_conclusion()
    # dive's size (15) against the files of every layer (10 + 5 = 15), and its paths as recorded.
    assert expected in text and "15 bytes, the regular files of every layer (15 in our reading)" in text
    assert "holds is `/opt/blob.bin×2=4`" in text if dive_wasted == 4 else "holds is" not in text
    assert "dive also lists `/etc×3=0`" in text


def test_dive_on_the_recorded_fixture_image(tmp_path: Path) -> None:
    program = layers.dive_path()
    if program is None:
        missing(f"dive ({layers.DIVE_PACKAGE})")
    saved = tmp_path / "image.tar"  # dive reads no gzip: the fixture uncompressed
    saved.write_bytes(gzip.decompress((FIXTURES / "layers" / "image.tar.gz").read_bytes()))
    report = layers.dive(str(program), saved)
    # tests/fixtures/layers/README.md: a 64 KiB payload copied, then removed (a whiteout) → 65,536 wasted, the one
    # path with content that two layers name; /app/cache/entry ("warm\n", 5 bytes) hidden by an opaque directory
    # is not counted by dive but is by the whiteout reading: 65,536 + 5 = 65,541.
    assert report.wasted_bytes == 65_536 and report.duplicated["/data/payload.bin"] == (2, 65_536)
    assert sum(layers.read_saved(saved).hidden_bytes(layer) for layer in layers.read_saved(saved).layers) == 65_541
    # dive's size: the regular files of every layer, 1,982,256 (busybox) + 65,536 + 37 + 5 + 5 = 2,047,839.
    assert report.image_bytes == 2_047_839
    assert 1 - report.wasted_bytes / report.image_bytes == pytest.approx(report.efficiency, abs=1e-9)
