"""What an image's filesystem holds: files, setuid/setgid programs, shells, package managers, installed packages.

:func:`read_filesystem` is a pure reader of a flattened root filesystem tar (tested on tars the tests build);
:func:`inventory` feeds it ``docker export`` of a container created from the image and never started, so an
image without a shell (distroless, scratch) is read the same way as a full Debian. Used by notebook 05.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO

import docker

SHELLS = ("bin/sh", "bin/bash", "bin/dash", "bin/ash")
# A package manager is there when any of its programs is.
PACKAGE_MANAGERS: Mapping[str, tuple[str, ...]] = {
    "dpkg": ("usr/bin/dpkg",),
    "apt": ("usr/bin/apt-get", "usr/bin/apt"),
    "apk": ("sbin/apk",),
    "pip": ("usr/bin/pip3", "usr/bin/pip", "usr/local/bin/pip"),
    "npm": ("usr/bin/npm", "usr/local/bin/npm"),
}
DPKG_STATUS = "var/lib/dpkg/status"
# What the engine adds to every container it creates (empty placeholders it mounts over): not the image's.
ENGINE_MADE = frozenset({".dockerenv", "dev/console", "etc/hosts", "etc/hostname", "etc/resolv.conf"})
INSTALLED = "install ok installed"
MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class Inventory:
    """One image's filesystem: `files` regular files holding `file_bytes` bytes; `setuid` the regular files with
    the setuid or setgid bit; `shells` and `package_managers` present (symlinks followed, so busybox's applet
    links count); `packages` installed according to dpkg's status file (0 without one)."""

    files: int
    file_bytes: int
    setuid: tuple[str, ...]
    shells: tuple[str, ...]
    package_managers: tuple[str, ...]
    packages: int


def _normal(name: str) -> str:
    return posixpath.normpath(name.removeprefix("./").strip("/")) if name.strip("./") else ""


def _resolves(path: str, present: set[str], links: dict[str, str], hops: int = 0) -> bool:
    """Whether `path` (relative to /) names something, following symlinks in any of its components."""
    if hops > MAX_SYMLINK_HOPS:
        return False
    parts = path.split("/")
    for index in range(len(parts)):
        prefix = "/".join(parts[:index + 1])
        if prefix in links:
            target = links[prefix]
            base = "" if target.startswith("/") else posixpath.dirname(prefix)
            rest = "/".join(parts[index + 1:])
            resolved = _normal(posixpath.join("/", base, target, rest))
            return _resolves(resolved, present, links, hops + 1)
        if prefix not in present:
            return False
    return True


def count_installed(status: str) -> int:
    """Packages dpkg's status file marks ``install ok installed``."""
    return sum(1 for line in status.splitlines() if line.startswith("Status:") and line.split(":", 1)[1].strip()
               == INSTALLED)


def read_filesystem(stream: IO[bytes]) -> Inventory:
    """Read a root filesystem tar (``docker export``), streamed once; the files the engine adds to every
    container (:data:`ENGINE_MADE`) are left out."""
    present: set[str] = set()
    links: dict[str, str] = {}
    files = file_bytes = 0
    setuid: list[str] = []
    status = ""
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = _normal(member.name)
            if not name or name in ENGINE_MADE:
                continue
            present.add(name)
            if member.issym():
                links[name] = member.linkname
            elif member.isfile():
                files += 1
                file_bytes += member.size
                if member.mode & (stat.S_ISUID | stat.S_ISGID):
                    setuid.append(name)
                if name == DPKG_STATUS:
                    extracted = archive.extractfile(member)
                    status = extracted.read().decode(errors="replace") if extracted else ""
    shells = tuple(s for s in SHELLS if _resolves(s, present, links))
    managers = tuple(m for m, programs in PACKAGE_MANAGERS.items() if any(_resolves(p, present, links)
                                                                          for p in programs))
    return Inventory(files, file_bytes, tuple(sorted(setuid)), shells, managers, count_installed(status))


class _ChunkReader:
    """A read()-able view of an iterator of byte chunks (the SDK's export stream) for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def inventory(client: docker.DockerClient, image: str, labels: Mapping[str, str]) -> Inventory:
    """:func:`read_filesystem` of `image`: ``docker export`` of a container created from it with `labels` (never
    started: an image without a shell is read too), removed afterwards."""
    container = client.containers.create(image, labels=dict(labels), network_disabled=True)
    try:
        return read_filesystem(_ChunkReader(iter(container.export(chunk_size=1 << 20))))  # type: ignore[arg-type]
    finally:
        container.remove(force=True)
