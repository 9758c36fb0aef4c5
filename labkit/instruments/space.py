"""Will it fit? Sizes a reader sets, checked against free disk and free memory before an experiment starts.

A lab knows how many copies of each unit of a size it writes at once (a blob in an image's layer, in the
engine's staging folder of ``docker save``, in the tarball that ``save`` streams to a temp folder …) and where.
:func:`require_disk` adds that up per file system and refuses, with :class:`~labkit.errors.BadParameter`, a size
that would leave less than :func:`disk_reserve` free there; :func:`require_memory` does the same for memory
against MemAvailable. Both name the parameter as the caller passed it and the largest value that fits. The
arithmetic (:func:`check_fits`) takes the free bytes as an argument, so it is tested without a disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker

from labkit.errors import BadParameter
from labkit.instruments import procfs
from labkit.instruments.engine import sdk_errors
from labkit.instruments.limits import MIB

UNITS = {"MiB": MIB, "bytes": 1}
GIB = 2**30
# Disk: dockerd and containerd keep their metadata databases, logs and staging folders on the same file system as
# the layers; when it fills, builds and container starts fail with errors that do not say why, and root (which
# dockerd is) writes into ext4's 5 % root reserve too. So labkit leaves 10 % of the disk free, at least 2 GiB
# on a small disk: room for what an experiment writes that no parameter sizes (a base image's layers in a
# `docker save`, build contexts, the results; the largest, node-full's save, is about 1 GB). On a large disk 10 % is
# far more than that — 25 GiB of a 252 GB disk refused an 8 MiB experiment with 24 GiB free — so at most 8 GiB.
DISK_RESERVE_FRACTION = 0.10
DISK_RESERVE_MIN_BYTES = 2 * GIB
DISK_RESERVE_MAX_BYTES = 8 * GIB
# Memory: while a container sits at its limit, the notebook's kernel, the sampler and dockerd still need room, and
# the host's OOM killer must not be the one to act; MemAvailable is itself an estimate. So 10 % of MemTotal, and at
# least 256 MiB, stay free.
MEMORY_RESERVE_FRACTION = 0.10
MEMORY_RESERVE_MIN_BYTES = 256 * MIB


@dataclass(frozen=True)
class Size:
    """A size the reader set: `value` in `unit` ("MiB" or "bytes"), named `parameter` as the caller passed it."""

    parameter: str
    value: int
    unit: str = "MiB"

    @property
    def unit_bytes(self) -> int:
        return UNITS[self.unit]

    def __str__(self) -> str:
        return f"{self.parameter}={self.value}"


def disk_reserve(total_bytes: int) -> int:
    """Bytes labkit leaves free on a file system of `total_bytes`: 10 % of it, at least 2 GiB and at most 8 GiB."""
    return min(max(int(total_bytes * DISK_RESERVE_FRACTION), DISK_RESERVE_MIN_BYTES), DISK_RESERVE_MAX_BYTES)


def memory_reserve(total_bytes: int) -> int:
    """Bytes of memory labkit leaves free on a host of MemTotal `total_bytes`: 10 % or 256 MiB, the larger."""
    return max(int(total_bytes * MEMORY_RESERVE_FRACTION), MEMORY_RESERVE_MIN_BYTES)


def check_fits(demand: Mapping[Size, int], *, free_bytes: int, reserve_bytes: int, where: str, remedy: str) -> None:
    """Nothing when the sizes in `demand`, each counted `demand[size]` times (the copies that exist at once), fit in
    `free_bytes` less `reserve_bytes`; else BadParameter naming the size that asks for most, what was found free
    `where` (e.g. "on the file system of /var/lib/docker"), and the largest value of it that fits beside the others
    as given. `remedy` is the other way out, for the hint (e.g. "make room on /var/lib/docker")."""
    needed = {size: size.value * size.unit_bytes * copies for size, copies in demand.items() if copies}
    budget = free_bytes - reserve_bytes
    if sum(needed.values()) <= budget:
        return
    culprit = max(needed, key=lambda size: needed[size])
    others = ", ".join(str(size) for size in needed if size != culprit)
    copies = demand[culprit]
    largest = (budget - sum(needed.values()) + needed[culprit]) // (culprit.unit_bytes * copies)
    counted = f" (each {culprit.unit.rstrip('s')} of {culprit.parameter} counts {copies} times)" if copies > 1 else ""
    found = (f"{culprit}{f' with {others}' if others else ''} does not fit: the experiment needs about "
             f"{_human(sum(needed.values()))}{counted} {where}, which has {_human(free_bytes)} free; labkit keeps "
             f"{_human(reserve_bytes)} of it free.")
    if largest >= 1:
        raise BadParameter(f"{found} The largest {culprit.parameter} that fits is {largest} ({culprit.unit}).",
                           f"Give {culprit.parameter}={largest} or less, or {remedy}.")
    raise BadParameter(f"{found} Not even {culprit.parameter}=1 fits.",
                       f"Lower {others}, or {remedy}." if others else f"{remedy[0].upper()}{remedy[1:]}.")


def require_disk(*writes: tuple[Path, Mapping[Size, int]]) -> None:
    """BadParameter (see :func:`check_fits`) unless every file system the `writes` land on keeps its
    :func:`disk_reserve` free. Each write is a folder and how many copies of each size land in it at once; folders
    on one file system (the engine's storage and /tmp often are) share its free space."""
    by_device: dict[int, tuple[list[Path], dict[Size, int]]] = {}
    for folder, demand in writes:
        folders, total = by_device.setdefault(os.stat(_existing(folder)).st_dev, ([], {}))
        if folder not in folders:
            folders.append(folder)
        for size, copies in demand.items():
            total[size] = total.get(size, 0) + copies
    for folders, total in by_device.values():
        usage = shutil.disk_usage(_existing(folders[0]))
        names = " and ".join(map(str, folders))
        check_fits(total, free_bytes=usage.free, reserve_bytes=disk_reserve(usage.total),
                   where=f"on the file system of {names}", remedy=f"make room on {names}")


def require_memory(demand: Mapping[Size, int], proc_root: Path = procfs.PROC) -> None:
    """BadParameter (see :func:`check_fits`) unless `demand` fits in this host's MemAvailable (``proc_root``'s
    meminfo) less :func:`memory_reserve`."""
    meminfo = procfs.read_meminfo(proc_root)
    check_fits(demand, free_bytes=meminfo["MemAvailable"], reserve_bytes=memory_reserve(meminfo["MemTotal"]),
               where="in memory (MemAvailable)", remedy="stop programs that hold memory")


def engine_storage(client: docker.DockerClient) -> Path:
    """The folder the engine writes images, containers and ``docker save``'s staging copies to: its DockerRootDir
    (e.g. /var/lib/docker) when that folder exists on this host. An engine in another machine or VM (a remote
    DOCKER_HOST, Docker Desktop) keeps its disk out of reach: then this is the temp folder, the nearest disk this
    host can check, which may not be the one the engine fills."""
    with sdk_errors("asking the engine where it keeps its data (docker info)"):
        root = Path(str(client.info().get("DockerRootDir", "")))
    return root if root.is_absolute() and root.is_dir() else Path(tempfile.gettempdir())


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists (a folder an experiment creates is on its parent's disk)."""
    return next(path for path in (folder, *folder.parents) if path.exists())


def _human(size_bytes: float) -> str:
    """`size_bytes` in MiB, GiB, TiB or PiB, one decimal."""
    value, unit = size_bytes / MIB, "MiB"
    for larger in ("GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:,.1f} {unit}"


def whole_disk(folder: Path, sys_root: Path = Path("/sys")) -> Path:
    """The block device (``/dev/vda``, never a partition of it) that holds `folder`: the device an IO limit such
    as ``--device-write-bps`` must name for writes to `folder` to count. BadParameter when `folder` is not on a
    block device (tmpfs, overlay of another machine)."""
    device = os.stat(_existing(folder)).st_dev
    node = sys_root / "dev" / "block" / f"{os.major(device)}:{os.minor(device)}"
    if not node.exists():
        raise BadParameter(f"{folder} is on no block device (device {os.major(device)}:{os.minor(device)}).",
                           "An IO limit needs a disk: point the engine's data-root at one.")
    real = node.resolve()
    disk = real.parent if (real / "partition").exists() else real
    return Path("/dev") / disk.name
