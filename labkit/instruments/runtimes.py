"""Container runtimes besides Docker, run on an image `docker save` wrote: containerd through its own client
``ctr`` (the containerd under Docker, in a namespace of ours; Docker's own images live in ``moby``, untouched) and
podman (no daemon). Each is a context manager that loads the archive, yields a :class:`Runtime` that runs a
command in the image once per call, and removes what it loaded when the block ends; :func:`sweep` removes what a
killed run left (namespaces named ``labkit-<run id>-…``, podman images labelled with the run)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labkit.instruments import shell
from labkit.instruments.engine import LABEL_RUN, docker_cli

DOCKER, CONTAINERD, PODMAN = "docker", "containerd (ctr)", "podman"
# Where containerd listens: the one dockerd starts for itself, then a system-wide one.
CONTAINERD_SOCKETS = ("/var/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock")
NAMESPACE_PREFIX = "labkit-"
RUN_TIMEOUT_S = 120.0
CLEANUP_TIMEOUT_S = 60.0
# podman sends its events to journald by default, which needs systemd as PID 1; a file works everywhere.
PODMAN_BASE = ("--events-backend", "file")
# Rootful podman asks runc for 1048576 open files and more processes than the host's pid_max, which a root
# without CAP_SYS_RESOURCE (ours) may not grant: runc fails with EPERM. Linux's classic defaults sit below the
# hard limits hosts set, so lowering to them needs no privilege; they bound only what the command run here opens.
PODMAN_LIMITS = ("--ulimit", "nofile=1024:4096", "--ulimit", "nproc=4096:4096")


@dataclass(frozen=True)
class Runtime:
    """A runtime holding the image: its name, version, the image's config digest as it reports it, and `run`,
    which runs the command once in a new container and returns its output."""

    name: str
    version: str
    config_digest: str
    run: Callable[[], str]


class CannotRun(Exception):
    """A runtime that is installed but cannot run a container on this host (the reason is its own error)."""


def _text(argv: Sequence[str], timeout: float = RUN_TIMEOUT_S) -> str:
    return shell.run(argv, timeout).stdout.strip()


def _probed(runtime: Runtime) -> Runtime:
    """`runtime` after one run, or CannotRun with the runtime's own last error line."""
    try:
        runtime.run()
    except shell.CommandError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise CannotRun(f"installed, but could not run a container here: {lines[-1] if lines else exc}") from exc
    return runtime


def containerd_socket() -> str | None:
    """The first containerd socket that exists here (None where containerd is out of reach, e.g. inside Docker
    Desktop's VM)."""
    return next((s for s in CONTAINERD_SOCKETS if Path(s).is_socket()), None)


def unavailable() -> dict[str, str]:
    """The runtimes besides Docker that cannot be tried here, each with why."""
    missing = {}
    if shutil.which("ctr") is None:
        missing[CONTAINERD] = "ctr is not installed (Debian package containerd)"
    elif containerd_socket() is None:
        missing[CONTAINERD] = f"no containerd socket at {' or '.join(CONTAINERD_SOCKETS)}"
    if shutil.which("podman") is None:
        missing[PODMAN] = "podman is not installed (Debian package podman)"
    return missing


@contextmanager
def docker(image: str, command: Sequence[str]) -> Iterator[Runtime]:
    """Docker itself, for comparison: `command` in `image` with ``docker run --rm --network none``."""
    digest = _text([docker_cli(), "image", "inspect", "--format", "{{.Id}}", image])
    version = _text([docker_cli(), "version", "--format", "{{.Server.Version}}"])
    yield Runtime(DOCKER, f"Docker Engine {version}", digest,
                  lambda: _text([docker_cli(), "run", "--rm", "--network", "none", image, *command]))


def _ctr(namespace: str) -> list[str]:
    return [shell.require_program("ctr"), "--address", str(containerd_socket()), "--namespace", namespace]


@contextmanager
def containerd(archive: Path, run_id: str, scope_id: str, command: Sequence[str]) -> Iterator[Runtime]:
    """`archive` imported into containerd namespace ``labkit-<run_id>-<scope_id>``; `command` run with
    ``ctr run --rm`` (no network but loopback). CannotRun if containerd cannot run it here."""
    namespace = f"{NAMESPACE_PREFIX}{run_id}-{scope_id}"
    ctr = _ctr(namespace)
    try:
        _text([*ctr, "images", "import", str(archive)])
        reference = _text([*ctr, "images", "list", "--quiet"]).splitlines()[0]
        manifest_digest = _text([*ctr, "images", "list"]).splitlines()[1].split()[2]
        manifest = json.loads(_text([*ctr, "content", "get", manifest_digest]))
        version = _text([*ctr, "version"]).splitlines()
        server = next((line.split()[-1] for line in version[version.index("Server:"):] if "Version:" in line), "?")
        containers = iter(range(10**6))
        yield _probed(Runtime(CONTAINERD, f"containerd {server}", str(manifest["config"]["digest"]),
                              lambda: _text([*ctr, "run", "--rm", reference, f"{namespace}-{next(containers)}",
                                             *command])))
    finally:
        _remove_namespace(namespace)


def _remove_namespace(namespace: str) -> None:
    ctr = _ctr(namespace)
    for reference in shell.run([*ctr, "images", "list", "--quiet"], CLEANUP_TIMEOUT_S, check=False).stdout.split():
        shell.run([*ctr, "images", "remove", "--sync", reference], CLEANUP_TIMEOUT_S, check=False)
    shell.run([*ctr, "namespaces", "remove", namespace], CLEANUP_TIMEOUT_S, check=False)


@contextmanager
def podman(archive: Path, command: Sequence[str]) -> Iterator[Runtime]:
    """`archive` loaded into podman's store; `command` run with ``podman run --rm --network none`` under
    :data:`PODMAN_LIMITS` (without the image's health check, which podman runs from systemd timers). CannotRun if
    podman cannot run it here."""
    base = [shell.require_program("podman"), *PODMAN_BASE]
    loaded = _text([*base, "load", "--input", str(archive)])
    image = loaded.rsplit("Loaded image:", 1)[-1].strip().split(",")[0].strip()
    try:
        digest = _text([*base, "image", "inspect", "--format", "{{.Id}}", image])
        version = _text([*base, "version", "--format", "{{.Version}}"])
        yield _probed(Runtime(PODMAN, f"podman {version}", f"sha256:{digest.removeprefix('sha256:')}",
                              lambda: _text([*base, "run", "--rm", "--network", "none", "--no-healthcheck",
                                             *PODMAN_LIMITS, image, *command])))
    finally:
        shell.run([*base, "rmi", "--force", image], CLEANUP_TIMEOUT_S, check=False)


def sweep(run_id: str | None = None) -> list[str]:
    """Remove the containerd namespaces and podman images run `run_id` (every run when None) left; what went."""
    removed = []
    if shutil.which("ctr") is not None and containerd_socket() is not None:
        prefix = NAMESPACE_PREFIX + (f"{run_id}-" if run_id else "")
        listed = shell.run([*_ctr("default"), "namespaces", "list", "--quiet"], CLEANUP_TIMEOUT_S, check=False)
        for namespace in listed.stdout.split():
            if namespace.startswith(prefix):
                _remove_namespace(namespace)
                removed.append(f"containerd namespace {namespace}")
    if shutil.which("podman") is not None:
        base = [shell.require_program("podman"), *PODMAN_BASE]
        label = LABEL_RUN + (f"={run_id}" if run_id else "")
        found = shell.run([*base, "images", "--quiet", "--filter", f"label={label}"], CLEANUP_TIMEOUT_S, check=False)
        for image in dict.fromkeys(found.stdout.split()):
            shell.run([*base, "rmi", "--force", image], CLEANUP_TIMEOUT_S, check=False)
            removed.append(f"podman image {image}")
    return removed
