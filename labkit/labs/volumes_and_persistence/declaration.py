"""The lab's declaration (its notebook, tables, requirements) and the rig every experiment runs in: a scope whose
containers, volumes and image are removed at the end, a temporary folder of its own for bind mounts (the only place
a bind mount is ever made), the anonymous volumes it made (they carry no label) and SIGTERM turned into an exception
so that all of it is removed on a SIGTERM as on Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from labkit import assets
from labkit.core.lab import Lab
from labkit.core.session import LabSession
from labkit.errors import BadParameter, Terminated
from labkit.instruments import builds, images, space, undo
from labkit.instruments.containers import NO_DNS
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits

log = logging.getLogger("labkit.volumes")

STEM = "09-volumes-and-persistence"
PYTHON_BASE = "python-slim"  # the workloads are Python programs (standard library only)
TAR_BASE = "busybox"  # backup and restore with a throwaway container, as Docker's documentation does it
MIB = 2**20

# Where each kind of storage is mounted in the experiment's containers.
LAYER = "writable layer"
NAMED = "named volume"
ANONYMOUS = "anonymous volume (VOLUME)"
BIND = "bind mount"
TMPFS = "tmpfs"
HOST = "host directory"  # the floor: the same workload on the host, no container
MOUNT_POINTS = {LAYER: "/layer", NAMED: "/named", ANONYMOUS: "/anon", BIND: "/bind", TMPFS: "/tmpfs"}

# The image every experiment uses: an empty folder in the writable layer's place, a big file in a lower layer (for
# copy-up) and a VOLUME line (for the anonymous volume).
DOCKERFILE = assets.text("volumes/Dockerfile.experiment")
BIG_FILE = "/big.bin"
# The main process: idle until SIGTERM, which it obeys at once (a `sleep` as PID 1 would make every stop wait 10 s).
IDLE = ["python3", "-c", "import signal; signal.signal(signal.SIGTERM, lambda *_: exit(0)); signal.pause()"]
STOP_TIMEOUT_S = 10


LAB = Lab(
    stem=STEM,
    topic="Volumes and persistence",
    bases=(PYTHON_BASE, TAR_BASE),
    tables={
        "survival": ("storage", "event", "survived", "left_on_host", "host_path"),
        "anonymous": ("event", "volume", "exists_after", "dangling_after"),
        "locations": ("storage", "host_path", "under_docker_root", "docker_root"),
        "bind_edits": ("direction", "edit", "seconds", "poll_interval_s"),
        "costs": ("path", "repeat", "position", "metric", "seconds", "resident_fraction", "size_bytes", "count"),
        "fsync": ("path", "repeat", "commit", "seconds"),
        "copy_up": ("repeat", "write", "seconds", "file_bytes", "upper_bytes"),
        "backup": ("size_bytes", "repeat", "step", "seconds", "tar_bytes", "files", "checksums_equal"),
        "moved": ("step", "engine", "data_root", "mountpoint", "entries", "listing_equal", "seconds", "listing"),
        "ownership": ("case", "user", "directory_mode", "errno", "file_uid", "file_gid"),
    },
    headline="volumes.removed_with_container",
)


def limits_for(size_mib: int) -> Limits:
    """The budget of every container here: a tmpfs's files and the page cache count against the memory limit, so it
    holds 3 × `size_mib` (a file, its cache, a tmpfs copy) above 192 MiB for Python itself; 64 pids, one core."""
    return Limits.of(memory_mib=192 + 3 * size_mib, pids=64, cpus=1.0)


def positive_mib(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadParameter(f"{name}={value!r}: need a whole number of MiB >= 1.", f"E.g. {name}=16.")
    return value


def check_bind_parent(bind_parent: str) -> Path:
    """`bind_parent` as a Path: the folder the lab makes its own temporary folder in (every bind mount is a folder
    inside that one). Refused unless absolute, an existing directory, and not the root directory."""
    path = Path(bind_parent)
    if not path.is_absolute():
        raise BadParameter(f"bind_parent={bind_parent!r} is a relative path: what it points at depends on where "
                           "the kernel was started.", "Give an absolute path, e.g. bind_parent='/tmp'.")
    if not path.is_dir():
        raise BadParameter(f"bind_parent={bind_parent!r} is not an existing directory.",
                           "Create it first, or use the default (the system's temporary folder).")
    if path == Path("/"):
        raise BadParameter("bind_parent='/' is the root directory.", "Use a folder such as '/tmp'.")
    return path


def require_disk(lab: LabSession, bind_parent: Path, engine_copies: dict[space.Size, int],
                 folder_copies: dict[space.Size, int] | None = None) -> None:
    """Refuse, in a live session, sizes the engine's disk (and `bind_parent`'s) cannot hold with labkit's reserve."""
    if lab.live:
        space.require_disk((space.engine_storage(lab.engine), engine_copies), (bind_parent, folder_copies or {}))


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


@contextmanager
def terminable() -> Iterator[None]:
    """SIGTERM raises :class:`~labkit.errors.Terminated` (a KeyboardInterrupt) for the duration, so the cleanup
    of the `with` blocks inside runs as on Ctrl-C; the previous handler comes back after (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Rig:
    """One experiment's engine, scope, temporary folder (binds only below it) and anonymous volumes."""

    client: docker.DockerClient
    scope: Scope
    folder: Path
    anonymous: list[str]

    def build(self, base: str, big_mib: int) -> str:
        """The experiment's image (labelled: the scope removes it): :data:`DOCKERFILE` on `base`."""
        context = self.folder / "image"
        context.mkdir()
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=images.require_base(self.client, base).tag,
                                                              big_mib=big_mib))
        return builds.build(context, f"labkit-exp/{STEM}:{self.scope.scope_id}", self.scope).image_id

    def bind_folder(self, name: str, mode: int = 0o755) -> Path:
        """A new folder `name` inside the rig's temporary folder, to bind-mount."""
        folder = self.folder / name
        folder.mkdir(mode=mode)
        folder.chmod(mode)  # mkdir's mode passes through the umask
        return folder

    def volume(self, stem: str) -> str:
        """A new named volume, labelled on the scope."""
        return str(self.client.volumes.create(name=self.scope.name(stem), labels=self.scope.labels).name)

    def start(self, stem: str, image: str, limits: Limits, *, volume: str = "", bind: Path | None = None,
              tmpfs_mib: int = 0, argv: Sequence[str] = IDLE, **options: Any) -> Any:
        """A detached container of `image` running `argv`, with `volume` at /named, `bind` at /bind, a tmpfs of
        `tmpfs_mib` at /tmpfs (each when given), labelled on the scope; its anonymous volumes are noted at once."""
        volumes = {volume: {"bind": MOUNT_POINTS[NAMED], "mode": "rw"}} if volume else {}
        if bind is not None:
            if self.folder not in bind.parents:
                raise RuntimeError(f"refusing to bind {bind}: outside the lab's own folder {self.folder}")
            volumes[str(bind)] = {"bind": MOUNT_POINTS[BIND], "mode": "rw"}
        tmpfs = {MOUNT_POINTS[TMPFS]: f"size={tmpfs_mib}m"} if tmpfs_mib else {}
        container = self.client.containers.create(image, list(argv), labels=self.scope.labels,
                                                  name=self.scope.name(f"{stem}-{len(self.anonymous)}"),
                                                  dns=[NO_DNS], volumes=volumes, tmpfs=tmpfs,
                                                  **{**limits.sdk_kwargs(), **options})
        for mount in container.attrs.get("Mounts", []):
            if mount.get("Type") == "volume" and mount.get("Destination") == MOUNT_POINTS[ANONYMOUS]:
                self.anonymous.append(str(mount["Name"]))
                log.info("anonymous volume %s of container %s", mount["Name"], container.name)
        container.start()
        container.reload()
        return container


@contextmanager
def rig(lab: LabSession, bind_parent: Path) -> Iterator[Rig]:
    """The experiment's :class:`Rig`; everything in it is removed when the block ends, also on Ctrl-C or SIGTERM."""
    with terminable(), undo.temporary_folder("labkit-09-", bind_parent) as folder:
        log.info("bind folder %s", folder)
        anonymous: list[str] = []
        try:
            with lab.scope() as scope:
                yield Rig(lab.engine, scope, Path(folder), anonymous)
        finally:
            for name in anonymous:  # the scope removed its containers with -v; these are the ones left dangling
                with suppress(docker.errors.NotFound):
                    lab.engine.volumes.get(name).remove(force=True)


def exec_ok(container: Any, argv: Sequence[str], user: str = "") -> str:
    """`argv` run in `container` (as `user` when given); its output, or RuntimeError with it on a non-zero exit."""
    code, output = container.exec_run(list(argv), user=user)
    text = output.decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{list(argv)[:3]}… in {container.name} exited {code}: {text[-500:]}")
    return text


def docker_root(client: docker.DockerClient) -> str:
    return str(client.info().get("DockerRootDir", ""))


def host_path_exists(path: str) -> bool:
    return bool(path) and os.path.exists(path)
