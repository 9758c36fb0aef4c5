"""Layer analysis of a recorded `docker save` tarball (tests/fixtures/layers/): sizes, whiteouts, a secret's layer."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from labkit.instruments import layers

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "layers"
PAYLOAD_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def saved() -> layers.SavedImage:
    return layers.read_saved(FIXTURES / "image.tar.gz")


def test_one_row_per_instruction_and_config_only_ones_have_no_layer(saved: layers.SavedImage) -> None:
    frame = saved.frame()
    assert len(frame) == 8 and len(saved.layers) == 6
    assert frame.loc[frame["empty_layer"], "created_by"].tolist() == ['CMD ["/bin/sh"]', "ENV MODE=fixture"]
    assert frame.loc[~frame["empty_layer"], "layer"].tolist() == list(range(6))


def test_layer_sizes_agree_with_the_engines_history(saved: layers.SavedImage) -> None:
    history = pd.read_csv(FIXTURES / "history.csv")
    frame = saved.frame()
    assert frame["created_by"].tolist() == history["created_by"].tolist()
    # Layers made by a build: the engine counts regular files only, exactly as labkit does.
    assert frame["content_bytes"].tolist() == history["size_bytes"].tolist()
    # The busybox --install layer holds only symlinks: 0 bytes to the engine, its targets' lengths apart.
    assert frame.loc[1, "symlink_bytes"] > 0 and frame.loc[1, "files"] == 0


def test_a_deleted_file_is_a_whiteout_and_its_bytes_still_ship(saved: layers.SavedImage) -> None:
    deleting = saved.layers[4]
    assert [(w.path, w.kind, w.hidden_path) for w in deleting.whiteouts] == [
        ("data/.wh.payload.bin", "whiteout", "data/payload.bin")]
    assert saved.hidden_bytes(deleting) == PAYLOAD_BYTES
    assert saved.layers[2].content_bytes == PAYLOAD_BYTES  # the layer below still carries it


def test_an_emptied_directory_is_an_opaque_marker(saved: layers.SavedImage) -> None:
    marker = saved.layers[5].whiteouts
    assert [(w.kind, w.hidden_path) for w in marker] == [("opaque", "app/cache")]
    assert saved.hidden_bytes(saved.layers[5]) == len("warm\n")


def test_the_secret_is_found_in_the_layer_that_copied_it(saved: layers.SavedImage) -> None:
    found = saved.find(".env")
    assert found.to_dict("records") == [{"layer": 3, "path": "app/.env", "kind": "file", "size_bytes": 37}]
    assert saved.find("nothing-here").empty
    assert "bin/busybox" in saved.paths


def test_the_merged_view_applies_whiteouts_and_opaque_directories(saved: layers.SavedImage) -> None:
    view = saved.merged()
    assert "data/payload.bin" not in view and "app/cache/entry" not in view
    assert view["app/cache/fresh"] == "file" and view["app/.env"] == "file" and view["bin/busybox"] == "file"
    assert view["bin/sh"] == "symlink" and view["app/cache"] == "dir"
    assert not any(".wh." in path for path in view)


def _saved_tar(tmp_path: Path, manifests: list[dict[str, object]]) -> Path:
    target = tmp_path / "two.tar"
    with tarfile.open(target, "w") as archive:
        data = json.dumps(manifests).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return target


def test_a_tarball_of_several_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 2 images"):
        layers.read_saved(_saved_tar(tmp_path, [{"Config": "a.json", "Layers": []}] * 2))
