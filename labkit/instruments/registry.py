"""A real image registry on this machine: Debian's ``docker-registry`` (the distribution registry) on 127.0.0.1.

:func:`running` starts one with its own config and storage folder on a free loopback port (or the port asked
for, refused with the fix when something already listens there), waits until it answers, and on exit — also
on an exception or Ctrl-C — stops it and removes its storage. The registry process also dies with the Python
process that started it (``PR_SET_PDEATHSIG``), so even a killed notebook kernel leaves no registry running, and its
storage folder is journalled (:mod:`labkit.instruments.undo`) for the next labkit command to remove.

The engine treats ``127.0.0.0/8`` as an insecure registry by default, so pushing to and pulling from
``127.0.0.1:<port>`` needs no daemon change. Used by notebooks 05, 06 and 11; notebook 13 runs one inside its swarm
manager's namespace, on the nodes' LAN (whose daemons treat that LAN as the host's engine treats 127.0.0.1).
Nothing happens at import.

:func:`busybox_under_one_tag` pushes one busybox per platform, joins them under one tag with a manifest list
and pulls that tag once per platform (notebooks 06 and 11).
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import arch, containers, images, netns, ports, shell, undo
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.limits import Limits
from labkit.instruments.shell import require_program, run, spawn

log = logging.getLogger("labkit.registry")

HOST = "127.0.0.1"
NAMESPACE_PORT = 5000  # the registry's usual port, free in a namespace of ours
PROGRAM = "docker-registry"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1
# What a client accepts when it asks for a manifest: a manifest list (index) or a single image's manifest.
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json")

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {host}:{port}
"""
# Basic auth against an htpasswd file (bcrypt entries only): every request without valid credentials answers 401.
AUTH_CONFIG = """\
auth:
  htpasswd:
    realm: labkit
    path: {htpasswd}
"""
HTPASSWD = "htpasswd"  # apache2-utils: writes the bcrypt entry the registry reads


@dataclass(frozen=True)
class Registry:
    """A running local registry: `address` is ``<host>:<port>`` (``127.0.0.1`` unless it runs in a namespace of
    ours); its blobs live under `storage`."""

    port: int
    storage: Path
    pid: int
    host: str = HOST

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def reference(self, repository: str, tag: str) -> str:
        """The image reference of `repository`:`tag` in this registry, e.g. ``127.0.0.1:41234/lab/app:1.0``."""
        return f"{self.address}/{repository}:{tag}"

    def get(self, path: str, accept: tuple[str, ...] = ()) -> tuple[dict[str, str], Any]:
        """GET ``/v2/<path>`` and return (headers, parsed JSON body)."""
        request = urllib.request.Request(f"http://{self.address}/v2/{path}", headers={"Accept": ", ".join(accept)})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(response.headers), json.loads(response.read() or b"{}")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        """The manifest (or manifest list) that `reference` (a tag or ``sha256:`` digest) names, with its
        ``mediaType`` as the registry served it."""
        headers, body = self.get(f"{repository}/manifests/{reference}", MANIFEST_TYPES)
        return {**body, "mediaType": body.get("mediaType", headers.get("Content-Type", ""))}

    def tags(self, repository: str) -> list[str]:
        return list(self.get(f"{repository}/tags/list")[1].get("tags") or [])

    def status(self, method: str, path: str) -> tuple[int, dict[str, str]]:
        """The HTTP status and headers (names in lower case) of `method` ``/v2/<path>`` sent with no credentials
        and no body (an error status is an answer here, not an exception)."""
        request = urllib.request.Request(f"http://{self.address}/v2/{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as answer:
            return int(answer.code), {k.lower(): v for k, v in answer.headers.items()}

    def point_tag(self, repository: str, tag: str, source: str) -> str:
        """Make `tag` name the manifest `source` (a tag or digest) names, by copying its bytes unchanged (what a
        CI job on another machine does when it re-points a tag; no engine is involved); return the digest."""
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        url = f"http://{self.address}/v2/{repository}/manifests"
        with urllib.request.urlopen(urllib.request.Request(f"{url}/{source}", headers=accept), timeout=10) as got:
            body, media_type = got.read(), got.headers["Content-Type"]
        put = urllib.request.Request(f"{url}/{tag}", data=body, method="PUT", headers={"Content-Type": media_type})
        with urllib.request.urlopen(put, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port` (a connection to it is accepted)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((HOST, port)) == 0


def validate_port(port: int | None) -> None:
    """BadParameter for a port outside 1024–65535 or one already in use, with the fix."""
    if port is None:
        return
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
        raise BadParameter(f"port={port!r}: need a whole number from 1024 to 65535.",
                           "Pass port=None to let labkit pick a free one.")
    if port_in_use(port):
        raise BadParameter(f"port={port}: something already listens on {HOST}:{port}.",
                           f"Pass port=None to let labkit pick a free one, or stop what listens there "
                           f"(`ss -ltnp 'sport = :{port}'` names it).")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends it SIGTERM when our process dies, however it dies.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(host: str, port: int) -> bool:
    """The registry is up: /v2/ answers 200, or 401 when it asks for credentials."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v2/", timeout=2) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as answer:
        return int(answer.code) == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def htpasswd_entry(user: str, password: str) -> str:
    """An htpasswd line for `user` with a bcrypt hash of `password` (the only hash the registry accepts); the
    password goes to htpasswd on stdin, never on a command line other processes can read."""
    return run([require_program(HTPASSWD), "-niB", user], 60, input_text=password + "\n").stdout.strip()


@contextmanager
def running(port: int | None = None, timeout_s: float = START_TIMEOUT_S,
            htpasswd: str = "", inside: netns.Neighbour | None = None) -> Iterator[Registry]:
    """A registry on 127.0.0.1:`port` (a free port when None) with a fresh storage folder; stopped and its
    storage removed when the block ends, whatever ends it. With `htpasswd` (the text of an htpasswd file, see
    :func:`htpasswd_entry`) it answers only requests with those credentials. With `inside` (a namespace of ours on
    a LAN of :func:`labkit.instruments.netns.lan`) it runs there instead, on that namespace's address (port
    NAMESPACE_PORT when None): reachable from the LAN's members and from this host, and from nowhere else (the
    host forwards into the LAN only what comes from the LAN)."""
    if inside is None:
        validate_port(port)
    program = require_program(PROGRAM)
    host = inside.address if inside else HOST
    chosen = port if port is not None else NAMESPACE_PORT if inside else ports.free_port()
    with undo.temporary_folder("labkit-registry-") as storage, \
            _serving(program, Path(storage), host, chosen, timeout_s, htpasswd, inside) as serving:
        yield serving
    log.info("registry %s:%d stopped, storage removed", host, chosen)


@contextmanager
def _serving(program: str, storage: Path, host: str, chosen: int, timeout_s: float, htpasswd: str,
             inside: netns.Neighbour | None) -> Iterator[Registry]:
    """The registry process serving `storage` on `host`:`chosen` until the caller's block ends; then stopped."""
    process: shell.Process[str] | None = None
    config, log_path = storage / "config.yml", storage / "registry.log"
    (storage / "blobs").mkdir()
    auth = ""
    if htpasswd:
        (storage / "htpasswd").write_text(htpasswd + "\n")
        auth = AUTH_CONFIG.format(htpasswd=storage / "htpasswd")
    config.write_text(CONFIG.format(storage=storage / "blobs", host=host, port=chosen) + auth)
    log_file = log_path.open("w")
    serve = [program, "serve", str(config)]
    try:
        process = spawn(inside.argv(serve) if inside else serve, stdout=log_file, stderr=shell.STDOUT,
                        stdin=shell.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while not _answers(host, chosen):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise HostUnsupported(f"docker-registry on {host}:{chosen} did not answer within {timeout_s:.0f} s "
                                      f"(exit {process.poll()}): {' / '.join(tail)}",
                                      "Check that the port is free and `docker-registry --version` works "
                                      "(`apt-get install docker-registry`).")
            time.sleep(0.05)  # polling for the server to come up, not standing in for work
        log.info("registry %s:%d up (pid %d, storage %s)", host, chosen, process.pid, storage)
        yield Registry(chosen, storage, process.pid, host)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except shell.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()


# ---------------------------------------------------------------- one tag for several platforms

UNAME = ["uname", "-m"]  # what each pulled image runs: it prints the machine it runs as
UNAME_LIMITS = Limits.of(memory_mib=256, pids=64, cpus=1.0)  # emulated busybox needs little of it


@contextmanager
def _references(created: list[str]) -> Iterator[list[str]]:
    """Image references (tags) this experiment adds to existing images; untagged afterwards, whatever happens."""
    try:
        yield created
    finally:
        for reference in created:
            run([docker_cli(), "rmi", reference], 60, check=False)


MANIFEST_COLUMNS = ("platform", "manifest_digest", "list_media_type", "pulled_architecture", "same_image", "uname_m")


@dataclass(frozen=True)
class ManifestResult:
    """`pulls`: platform, manifest_digest (the per-platform entry in the list), list_media_type, pulled_architecture
    (what the engine recorded for `pull --platform`), same_image (its id is the base's pushed for that
    platform), uname_m (printed by the pulled image, run as that platform)."""

    pulls: pd.DataFrame

    @property
    def resolves(self) -> bool:
        """Every platform's pull gave that platform's image, which ran as that machine."""
        p = self.pulls
        return bool((p["pulled_architecture"] == p["platform"].str.split("/").str[1]).all()
                    and p["same_image"].all()
                    and (p["uname_m"] == p["platform"].map(arch.UNAME_MACHINE)).all())

    def conclusion(self) -> str:
        picks = "; ".join(f"`pull --platform {r.platform}` gave an image for **{r.pulled_architecture}** "
                          f"({r.manifest_digest[:19]}…) whose `uname -m` printed {r.uname_m}"
                          for r in self.pulls.itertuples())
        verdict_text = "Each pull picked the image for its platform." if self.resolves else \
            "A PULL PICKED THE WRONG IMAGE."
        return (f"**What we measured.** The registry served one tag with the media type "
                f"`{self.pulls['list_media_type'].iloc[0]}`. "
                f"{picks}. {verdict_text}")


def busybox_under_one_tag(client: docker.DockerClient, scope: Scope, port: int | None) -> pd.DataFrame:
    """Push the amd64 and arm64 busybox bases to a local registry (127.0.0.1, `port` or a free one), join them
    under one tag with a manifest list, then pull that tag once per platform and run ``uname -m`` in what came
    back: one row per platform, the columns of :class:`ManifestResult`. Every reference it adds is untagged
    afterwards and the registry is gone, whatever happens. Needs emulation of the foreign platform."""
    arch.require_emulation()
    sources = {p: images.require_base(client, images.busybox_base(p)) for p in arch.PLATFORMS}
    rows = []
    with running(port) as reg, _references([]) as created:
        repository = f"labkit/{scope.scope_id}/busybox"
        one_tag = reg.reference(repository, "1.0")
        parts = []
        created.append(one_tag)
        for platform, base in sources.items():
            reference = reg.reference(repository, f"1.0-{arch.DEBIAN_ARCH[platform]}")
            run([docker_cli(), "tag", base.tag, reference], 30)
            created.append(reference)
            run([docker_cli(), "push", reference], 300)
            parts.append(reference)
        try:
            run([docker_cli(), "manifest", "create", "--insecure", one_tag, *parts], 60)
            run([docker_cli(), "manifest", "push", "--insecure", "--purge", one_tag], 120)
        finally:  # the CLI keeps a created list under ~/.docker/manifests until it is pushed with --purge
            run([docker_cli(), "manifest", "rm", one_tag], 30, check=False)
        listing = reg.manifest(repository, "1.0")
        by_platform = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                       for m in listing["manifests"]}
        for platform, base in sources.items():
            run([docker_cli(), "rmi", one_tag], 60, check=False)
            run([docker_cli(), "pull", "--platform", platform, one_tag], 300)
            pulled = client.images.get(one_tag)
            rows.append({"platform": platform, "manifest_digest": by_platform.get(platform, ""),
                         "list_media_type": listing["mediaType"],
                         "pulled_architecture": pulled.attrs["Architecture"],
                         "same_image": pulled.id == base.image_id,
                         "uname_m": containers.said(containers.run_on_platform(scope, one_tag, platform, UNAME,
                                                                               limits=UNAME_LIMITS))})
    return pd.DataFrame(rows)
