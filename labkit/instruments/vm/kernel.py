"""Debian's kernel for the VM: found with `apt-cache depends`, fetched with `apt-get download`, unpacked with `dpkg -x`.

The kernel is never installed on the host: only its ``boot/vmlinuz-*`` is kept, in the cache folder, beside a
manifest (``kernel.json``) that lets later calls reuse it without touching apt.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import NotPrepared
from labkit.instruments import undo
from labkit.instruments.shell import require_program, run
from labkit.paths import atomic_write

KERNEL_METAPACKAGE = "linux-image-amd64"
"""The Debian package whose `Depends:` names the current versioned kernel package."""

_APT_TIMEOUT_S = 60.0
_DOWNLOAD_TIMEOUT_S = 900.0
_EXTRACT_TIMEOUT_S = 300.0
_KERNEL_DEP_RE = re.compile(r"^\s*\|?Depends:\s*<?(linux-image-\d[^\s>]*)>?\s*$", re.MULTILINE)


class VmAssetError(NotPrepared):
    """The kernel or the initramfs cannot be prepared, or is missing; the hint says what to do about it."""


@dataclass(frozen=True)
class VmAssets:
    """What a boot needs, all inside the cache folder.

    `kernel`: the bzImage (``vmlinuz-<release>``); `initramfs`: an uncompressed newc cpio archive;
    `kernel_package`: the Debian package it came from, e.g. ``linux-image-6.1.0-56-amd64``;
    `kernel_release`: the release the kernel reports (``uname -r``), e.g. ``6.1.0-56-amd64``.
    """

    kernel: Path
    initramfs: Path
    kernel_package: str
    kernel_release: str


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write `data` to `path` (atomically, :func:`labkit.paths.atomic_write`) unless it already holds these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write(path, data)


def kernel_package_from_depends(apt_cache_depends: str) -> str:
    """The versioned kernel package named in `apt-cache depends linux-image-amd64` output.

    E.g. ``  Depends: linux-image-6.1.0-56-amd64`` gives ``linux-image-6.1.0-56-amd64``.
    Raises VmAssetError when the output names none.
    """
    match = _KERNEL_DEP_RE.search(apt_cache_depends)
    if match is None:
        raise VmAssetError(
            f"`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image-<version> package:\n"
            f"{apt_cache_depends.strip()}",
            "Run `apt-get update` and try again.",
        )
    return match.group(1)


def _manifest_path(cache_dir: Path) -> Path:
    return cache_dir / "kernel.json"


def _cached_kernel(cache_dir: Path) -> dict[str, object] | None:
    manifest = _manifest_path(cache_dir)
    if not manifest.exists():
        return None
    info: dict[str, object] = json.loads(manifest.read_text())
    if not (cache_dir / str(info["kernel"])).is_file():
        return None
    return info


def _download_kernel(cache_dir: Path) -> dict[str, object]:
    """Download and unpack the kernel once; keep only boot/vmlinuz-* and a manifest (kernel.json)."""
    require_program("apt-get")
    require_program("dpkg")
    depends = run(["apt-cache", "depends", KERNEL_METAPACKAGE], _APT_TIMEOUT_S).stdout
    package = kernel_package_from_depends(depends)
    with undo.temporary_folder("download-", cache_dir) as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter_ns()
        # apt-get download writes into the working directory; `env -C` sets it without a shell.
        run(
            ["env", "-C", str(tmp), "apt-get", "download", package],
            _DOWNLOAD_TIMEOUT_S,
            hint="Check that the Debian mirror in /etc/apt/sources.list is reachable, then `apt-get update`.",
        )
        download_s = (time.perf_counter_ns() - started) / 1e9
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise VmAssetError(f"`apt-get download {package}` left {len(debs)} .deb files, expected 1")
        deb = debs[0]
        version = run(["dpkg-deb", "-f", str(deb), "Version"], _APT_TIMEOUT_S).stdout.strip()
        root = tmp / "root"
        run(["dpkg", "-x", str(deb), str(root)], _EXTRACT_TIMEOUT_S)
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise VmAssetError(f"{deb.name} holds {len(kernels)} boot/vmlinuz-* files, expected 1")
        release = kernels[0].name.removeprefix("vmlinuz-")
        kernel_dir = cache_dir / "kernel"
        kernel_dir.mkdir(exist_ok=True)
        os.replace(kernels[0], kernel_dir / kernels[0].name)
        info: dict[str, object] = {
            "package": package,
            "version": version,
            "release": release,
            "kernel": f"kernel/{kernels[0].name}",
            "deb_bytes": deb.stat().st_size,
            "download_s": round(download_s, 3),
        }
    _write_if_changed(_manifest_path(cache_dir), (json.dumps(info, indent=2) + "\n").encode())
    return info


def ensure_kernel(cache_dir: Path) -> dict[str, object]:
    """The manifest of the kernel kept in `cache_dir`, downloading the kernel first when there is none.

    Keys: ``package``, ``version``, ``release`` (``uname -r``), ``kernel`` (the bzImage's path relative to
    `cache_dir`), ``deb_bytes`` (size of the downloaded .deb in bytes), ``download_s`` (download time in seconds).
    The download (about 70 MB) happens once: delete `cache_dir` to fetch a newer kernel.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)  # a fresh cache: notebook 15 may ask before 01 made it
    return _cached_kernel(cache_dir) or _download_kernel(cache_dir)
