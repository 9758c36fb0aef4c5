"""Notebook 02's lab: parameters refused before anything runs; the comparisons computed from known rows; results
replay into the same claims and keep the properties the notebook promises."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.labs import image_layers

LAB = image_layers.LAB  # what the `replay` fixture (conftest.py) replays


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
    for sentence in (layered.conclusion(), overlay.conclusion(), copy_up.conclusion(), repro.conclusion()):
        assert sentence.startswith("**What we measured.**")


def test_recorded_layers_agree_two_ways_and_the_whiteout_hides_the_blob(replay: LabSession) -> None:
    layered = image_layers.run_layers(replay)
    made = layered.layers[~layered.layers["empty_layer"]]
    assert made["agree"].all()
    # Layers made by the build: the engine counts exactly the regular files' bytes.
    built = made[made["step"] > 0]
    assert (built["history_bytes"] == built["content_bytes"]).all()
    assert layered.wasted_bytes == layered.blob_bytes
    overlay = image_layers.run_overlay(replay)
    appended = overlay.row("appended to")
    assert appended["in_upper"] and appended["upper_bytes"] == appended["lower_bytes"] + 1
    assert overlay.row("deleted inside")["upper_kind"].startswith("whiteout")
