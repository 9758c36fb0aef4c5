"""The Docker Engine: connect, make sure one answers, label what a run makes and remove it again.

Every container, network, volume and image an experiment creates carries ``labkit.run=<run id>`` and
``labkit.scope=<scope id>``; :class:`Scope` removes its objects when it exits (also on an exception or
Ctrl-C) and :func:`cleanup` sweeps a whole run, or every run, afterwards. Build cache carries no labels:
:func:`build_cache_as_found` removes the records a run adds.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import urllib3

from labkit import paths
from labkit.errors import (
    BadParameter,
    EngineError,
    EngineLost,
    EngineTimeout,
    EngineUnavailable,
    LabkitError,
    NotPrepared,
)
from labkit.instruments import shell, undo
from labkit.instruments.shell import require_program, run, spawn

log = logging.getLogger("labkit.engine")

LABEL_RUN = "labkit.run"
LABEL_SCOPE = "labkit.scope"
LABEL_BASE = "labkit.base"
LABEL_RECIPE = "labkit.recipe"

# The Debian client; /usr/local/bin/docker on some machines is a newer client without buildx.
DOCKER_CLI_CANDIDATES = ("/usr/bin/docker", "docker")
ENGINE_PACKAGES = ("docker.io",)
START_TIMEOUT_S = 60.0
CLEANUP_ROUNDS = 4  # sweeps of a scope's containers, networks and volumes while one of them is held "in use"
CLEANUP_RETRY_S = 0.5
PING_TIMEOUT_S = 10.0  # an engine that does not answer a ping in 10 s is not there
# Every other call waits up to this long for the engine's next byte: a `docker save` of a 600 MB image, a build
# or a pull on a busy or slow engine can take well over a minute to start sending. The reader can raise it.
ENGINE_TIMEOUT_ENV = "LABKIT_ENGINE_TIMEOUT"
DEFAULT_ENGINE_TIMEOUT_S = 900.0

HOW_TO_START = """\
No Docker Engine answers at {where}.
  - On Debian/Ubuntu as root: `make lab` (or `labkit setup`) installs docker.io and starts dockerd.
  - With Docker Desktop or a systemd host: start it (`systemctl start docker`) and check `docker info`.
  - With a remote or rootless engine: export DOCKER_HOST=unix:///path/to/docker.sock (or tcp://127.0.0.1:PORT).
  - In Binder there is no engine: run the notebooks with mode="replay"."""


def engine_address() -> str:
    """Where the SDK will connect: ``DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def engine_timeout_s() -> float:
    """How long (s) a call may wait for the engine's next byte: LABKIT_ENGINE_TIMEOUT, else 900 s."""
    raw = os.environ.get(ENGINE_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_ENGINE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise BadParameter(f"{ENGINE_TIMEOUT_ENV}={raw!r} is not a number of seconds.",
                           f"Set it to a positive number, e.g. export {ENGINE_TIMEOUT_ENV}=1800, or unset it "
                           f"for the default ({DEFAULT_ENGINE_TIMEOUT_S:.0f} s).")
    return value


def connect(timeout_s: float = PING_TIMEOUT_S) -> docker.DockerClient:
    """Return a client whose engine answered a ping within `timeout_s`, or raise EngineUnavailable saying what
    to do. The client's later calls wait up to :func:`engine_timeout_s` for the engine, not the ping's timeout."""
    call_timeout_s = engine_timeout_s()  # a bad setting is refused before anything is asked of the engine
    try:
        client = docker.from_env(timeout=int(max(timeout_s, 1)))
        client.ping()
    except docker.errors.DockerException as exc:
        advice = HOW_TO_START.format(where=engine_address())
        if "DOCKER_HOST" in os.environ:
            advice += ("\n  - DOCKER_HOST is set, so labkit will not start a dockerd of its own: start the engine "
                       "it names, or unset DOCKER_HOST to use the default socket.")
        raise EngineUnavailable(f"{advice}\n(The SDK said: {exc})") from exc
    client.api.timeout = call_timeout_s
    return client


def timed_out(exc: BaseException) -> BaseException | None:
    """The SDK's timeout behind `exc` (itself or its cause), or None: no first byte from a slow engine (requests'
    Timeout) or a stream that stalled (requests wraps urllib3's ReadTimeoutError in a ConnectionError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.Timeout) or (
                isinstance(seen, requests.exceptions.ConnectionError)
                and any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in seen.args)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def timeout_error(exc: BaseException, operation: str, kept: str = "") -> EngineTimeout:
    """The error a reader sees when the engine was too slow for `operation`: what, how long, the setting, and
    (`kept`) what was saved before it."""
    request = getattr(timed_out(exc) or exc, "request", None)
    call = f" ({request.method} {urllib.parse.urlsplit(request.url).path})" if request is not None else ""
    waited = engine_timeout_s()
    return EngineTimeout(
        f"The Docker Engine sent nothing for {waited:.0f} s during {operation}{call}: it is busy or slow.{kept}",
        f"Give it longer: export {ENGINE_TIMEOUT_ENV}={max(2 * waited, 60):.0f} (seconds; now {waited:.0f}) and run "
        "again. `docker info` answering slowly, or a full disk, would also explain it.")


# What the docker SDK raises: its own errors and those of requests (and urllib3) below it.
SDK_ERRORS: tuple[type[BaseException], ...] = (docker.errors.DockerException, requests.exceptions.RequestException,
                                               urllib3.exceptions.HTTPError)


def engine_error(exc: BaseException, operation: str, kept: str = "") -> LabkitError | None:
    """The LabkitError a reader sees for the SDK's `exc` during `operation` (None when `exc` is not the SDK's):
    what the engine said, and what to do about it; `kept` says what was saved before it.

    A timeout becomes :func:`timeout_error`; a missing image NotPrepared (`labkit setup` makes it); any other
    refusal EngineError with the engine's explanation; a broken connection EngineLost.
    """
    if timed_out(exc) is not None:
        return timeout_error(exc, operation, kept)
    if isinstance(exc, docker.errors.ImageNotFound):
        return NotPrepared(f"The Docker Engine has no such image during {operation}: {_explanation(exc)}.{kept}",
                           "Make the bases and assets this notebook uses: `labkit setup` (or `make lab`), then run "
                           "it again.")
    if isinstance(exc, docker.errors.NotFound):
        return EngineError(f"The Docker Engine no longer has an object that {operation} uses: {_explanation(exc)}."
                           f"{kept}", "Something removed it while labkit ran (`labkit clean`, `docker rm`, "
                           "`docker system prune` in another shell?): run it again.")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        hint = ("Another object holds that name or uses it (a container of an image, an image built on it): "
                "`labkit clean` removes what labkit left behind, `docker ps -a` and `docker images` show the rest."
                if status == 409 else
                "The engine's own log says more (`journalctl -u docker`, or labkit's dockerd log under "
                f"{paths.state_dir() / 'dockerd'}); a full disk is a common cause (`docker system df`)."
                if status is not None and status >= 500 else
                "The request was refused as labkit made it: please report it with the message above.")
        return EngineError(f"The Docker Engine refused {operation} (HTTP {status}): {_explanation(exc)}.{kept}",
                           hint)
    if isinstance(exc, docker.errors.ContainerError):
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        return EngineError(f"A container of {operation} ({exc.image}) exited {exc.exit_status}: {stderr.strip()}"
                           f"{kept}", "Its command failed inside the container; the lines above are its stderr.")
    if isinstance(exc, docker.errors.BuildError):
        tail = [str(line.get("stream", line.get("error", ""))).rstrip() for line in exc.build_log][-5:]
        return EngineError(f"A build of {operation} failed: {exc.msg}" + "".join(f"\n  {t}" for t in tail if t)
                           + kept, "The build's last lines are above; the Dockerfile and context are the lab's.")
    if isinstance(exc, requests.exceptions.ConnectionError | urllib3.exceptions.HTTPError):
        return EngineLost(f"The connection to the Docker Engine at {engine_address()} broke during {operation}: "
                          f"{exc}.{kept}", HOW_TO_START.format(where=engine_address()))
    if isinstance(exc, SDK_ERRORS):
        return EngineError(f"The Docker SDK failed during {operation}: {exc}.{kept}",
                           "`docker info` shows whether the engine answers; `labkit doctor` checks the rest.")
    return None


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip().rstrip(".")


@contextmanager
def sdk_errors(operation: str) -> Iterator[None]:
    """Raise the SDK's errors inside the block as :func:`engine_error` does, chained to the original."""
    try:
        yield
    except SDK_ERRORS as exc:
        raise (engine_error(exc, operation) or exc) from exc


def docker_cli() -> str:
    """Path of the docker CLI to shell out to (the Debian client first)."""
    for candidate in DOCKER_CLI_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return require_program("docker")


@dataclass(frozen=True)
class EngineInfo:
    """What the engine says about itself."""

    version: str
    api_version: str
    storage_driver: str
    cgroup_version: str
    cgroup_driver: str
    security_options: tuple[str, ...]
    kernel: str
    os_type: str
    architecture: str


def info(client: docker.DockerClient) -> EngineInfo:
    with sdk_errors("asking the engine about itself (docker version, docker info)"):
        version = client.version()
        details = client.info()
    return EngineInfo(
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        storage_driver=str(details.get("Driver", "?")),
        cgroup_version=str(details.get("CgroupVersion", "?")),
        cgroup_driver=str(details.get("CgroupDriver", "?")),
        security_options=tuple(str(option) for option in details.get("SecurityOptions") or ()),
        kernel=str(details.get("KernelVersion", "?")),
        os_type=str(details.get("OSType", "?")),
        architecture=str(details.get("Architecture", "?")),
    )


def can_manage_host() -> bool:
    """True on a Debian-family host where we are root, so installing and starting dockerd is ours to do."""
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


# Packages whose daemon labkit runs itself, on 127.0.0.1 with a config of its own: their Debian service must not
# start on install nor at boot (Debian's nginx would listen on port 80 of every address, its registry on 5000).
OWN_SERVICES = {"nginx": "nginx.service", "docker-registry": "docker-registry.service"}
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def install_packages(packages: tuple[str, ...]) -> list[str]:
    """apt-get install whichever of `packages` are missing; return the ones installed. The services of
    :data:`OWN_SERVICES` are kept from starting (a ``policy-rc.d`` for the install, journalled, where the host has
    none) and disabled where systemd runs."""
    missing = [p for p in packages if run(["dpkg-query", "-W", "-f=${Status}", p], 30, check=False)
               .stdout.strip() != "install ok installed"]
    if not missing:
        return missing
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], 600, env=env)
    services = [OWN_SERVICES[p] for p in missing if p in OWN_SERVICES]
    with ExitStack() as held:
        if services and not POLICY_RC.exists():
            held.enter_context(undo.recorded(f"{POLICY_RC}: no service starts while apt installs",
                                             remove_policy_rc, {"path": str(POLICY_RC)}))
            POLICY_RC.write_text("#!/bin/sh\n# labkit: no service starts during this install\nexit 101\n")
            POLICY_RC.chmod(0o755)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], 1800, env=env)
    if services and Path("/run/systemd/system").is_dir():
        run(["systemctl", "disable", "--now", *services], 120)
    return missing


def remove_policy_rc(detail: dict[str, Any]) -> None:
    """Undo of :func:`install_packages`' ``policy-rc.d`` (only the one labkit wrote)."""
    path = Path(detail["path"])
    if path.exists() and "labkit" in path.read_text():
        path.unlink()


def start_dockerd() -> Path:
    """Start dockerd in the background with labkit's own config and log file; return the log path."""
    state = paths.state_dir() / "dockerd"
    state.mkdir(parents=True, exist_ok=True)
    config = state / "daemon.json"
    # Keep the containers' logs bounded: the labs start hundreds of them.
    config.write_text('{\n  "log-driver": "json-file",\n  "log-opts": {"max-size": "10m", "max-file": "2"}\n}\n')
    log_path = state / "dockerd.log"
    with log_path.open("ab") as log_file:
        spawn([require_program("dockerd"), "--config-file", str(config)],
              stdout=log_file, stderr=log_file, stdin=shell.DEVNULL, start_new_session=True)
    return log_path


def ensure(timeout_s: float = START_TIMEOUT_S) -> docker.DockerClient:
    """Return a client to a running engine, installing and starting one where that is ours to do.

    On Debian as root with no engine answering: apt-get install docker.io if it is missing and start
    dockerd in the background (config and log under labkit's state folder). Elsewhere: EngineUnavailable.
    """
    try:
        return connect()
    except EngineUnavailable:
        if not can_manage_host() or "DOCKER_HOST" in os.environ:
            raise
    installed = install_packages(ENGINE_PACKAGES)
    if installed:
        log.warning("installed with apt-get: %s", " ".join(installed))
    log_path = start_dockerd()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return connect()
        except EngineUnavailable:
            time.sleep(0.5)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
    raise EngineUnavailable(f"dockerd was started but did not answer within {timeout_s:.0f} s. "
                            f"Its log ({log_path}) ends with:\n{tail}")


def new_run_id() -> str:
    """The run id of this process: LABKIT_RUN_ID when `labkit run` set it, else a fresh one."""
    return os.environ.get("LABKIT_RUN_ID") or f"r{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass
class CleanupReport:
    """Names of what a cleanup removed, per kind."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.containers) + len(self.networks) + len(self.volumes) + len(self.images)

    def __str__(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in vars(self).items()]
        return "removed " + ", ".join(parts)


def cleanup(client: docker.DockerClient, label: str = LABEL_RUN, value: str | None = None) -> CleanupReport:
    """Remove every container, network, volume and image carrying `label` (=`value` when given).

    Containers go first (they hold networks, volumes and images). Objects already gone are not errors.
    """
    selector = label if value is None else f"{label}={value}"
    with sdk_errors(f"the removal of the objects labelled {selector}"):
        return _cleanup(client, {"label": selector})


def _cleanup(client: docker.DockerClient, filters: dict[str, str]) -> CleanupReport:
    report = CleanupReport()
    # A create request cut short by Ctrl-C still completes in the engine: its container can appear after the list
    # below and hold a network or volume ("in use", 409). Such a hold sends the sweep round again, bounded. A container
    # removed between the list and the SDK's inspect of it (an --rm one exiting, another sweep) is gone, not an error.
    for round_index in range(CLEANUP_ROUNDS):
        for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
            ignore_gone(lambda c=container: c.remove(force=True, v=True), going=True)
            report.containers.append(container.name)
        in_use = [*_remove_unless_in_use(client.networks.list(filters=filters), lambda n: n.remove(),
                                         report.networks, last=round_index == CLEANUP_ROUNDS - 1),
                  *_remove_unless_in_use(client.volumes.list(filters=filters), lambda v: v.remove(force=True),
                                         report.volumes, last=round_index == CLEANUP_ROUNDS - 1)]
        if not in_use:
            break
        time.sleep(CLEANUP_RETRY_S)  # for the late container's create to finish, so that the next list sees it
    # An image another one was built on (a FROM, the legacy builder's layer chain) can only go after it: remove
    # what can be removed, then try the rest again; a pass that removes nothing ends with the engine's error.
    pending = client.images.list(all=True, filters=filters)
    while pending:
        held: list[Any] = []
        conflict: docker.errors.APIError | None = None
        for image in pending:
            try:
                ignore_gone(lambda i=image: client.images.remove(i.id, force=True, noprune=False))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                held.append(image)
                conflict = exc
                continue
            report.images.append(image.tags[0] if image.tags else image.short_id)
        if conflict is not None and len(held) == len(pending):
            raise conflict
        pending = held
    return report


def _remove_unless_in_use(objects: list[Any], remove: Any, removed: list[str], *, last: bool) -> list[Any]:
    """Remove each of `objects` (networks or volumes), noting its name in `removed`; those the engine says are in
    use (409) are returned, or, in the `last` round, its error raised."""
    held = []
    for thing in objects:
        try:
            ignore_gone(lambda t=thing: remove(t))
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or last:
                raise
            held.append(thing)
            continue
        removed.append(thing.name)
    return held


def ignore_gone(action: Any, *, going: bool = False) -> None:
    """Run a removal; an object already gone is not an error, nor (`going`) one whose removal another sweep has
    begun (the engine's 409 "removal of container … is already in progress")."""
    try:
        action()
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if not (going and exc.status_code == 409 and "already in progress" in str(exc.explanation)):
            raise


class Scope:
    """Labels for the objects one experiment makes; removes them all on exit, whatever happened.

    >>> with Scope(client, run_id) as scope:
    ...     client.containers.run(image, "true", labels=scope.labels)
    """

    def __init__(self, client: docker.DockerClient, run_id: str, lab: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.scope_id = uuid.uuid4().hex[:12]
        self.labels: dict[str, str] = {LABEL_RUN: run_id, LABEL_SCOPE: self.scope_id}
        if lab:
            self.labels["labkit.lab"] = lab
        self.report = CleanupReport()

    def label_args(self) -> list[str]:
        """The labels as docker CLI arguments (``--label k=v`` …)."""
        return [arg for key, value in self.labels.items() for arg in ("--label", f"{key}={value}")]

    def name(self, stem: str) -> str:
        """A unique object name for this scope, e.g. ``labkit-ns-default-<scope>``."""
        return f"labkit-{stem}-{self.scope_id}"

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.report = cleanup(self.client, LABEL_SCOPE, self.scope_id)


def build_cache_records(client: docker.DockerClient) -> dict[str, str]:
    """The engine's BuildKit cache records (none where BuildKit never ran): id → creation time (RFC 3339)."""
    with sdk_errors("the list of build cache records"):
        return {str(record["ID"]): str(record.get("CreatedAt", "")) for record in client.df().get("BuildCache") or []}


@contextmanager
def build_cache_as_found(client: docker.DockerClient) -> Iterator[None]:
    """Remove the BuildKit cache records the block adds, however it ends. labkit's builds send one-off contexts (a
    rootfs tar, a blob sized by a parameter, a Dockerfile named after its scope) that no later build reuses, and
    build cache carries no labels for a scope to sweep: left, it grew to 24 GB on our test machine in a day of
    runs. A build the reader runs in another shell meanwhile loses its new cache records too (cache only: its
    images stay). An engine that no longer answers at the end leaves them, with a warning: the block's own outcome
    is what the reader must see."""
    before = build_cache_records(client)
    try:
        yield
    finally:
        try:
            _prune_build_cache(client, before)
        except LabkitError as exc:
            log.warning("the build cache this run added was not removed (%s): `docker builder prune` removes it", exc)


def _prune_build_cache(client: docker.DockerClient, before: Mapping[str, str]) -> None:
    """Prune the records not in `before`, one request each (the engine takes one value per filter), newest first:
    a record is removed only when nothing uses it, and what uses a record was made after it. A second pass takes
    what was still in use when its turn came in the first."""
    reclaimed, removed = 0, 0
    for _ in range(2):
        added = {record: created for record, created in build_cache_records(client).items() if record not in before}
        if not added:
            break
        for record in sorted(added, key=added.__getitem__, reverse=True):
            with sdk_errors("the removal of the run's build cache"):
                done = client.api.prune_builds(filters={"id": record}, all=True)
            reclaimed += int(done.get("SpaceReclaimed") or 0)
            removed += len(done.get("CachesDeleted") or [])
    if removed:
        log.info("removed %d build cache records the run made (%.1f MB)", removed, reclaimed / 1e6)


def answers(client: docker.DockerClient) -> bool:
    """Whether the engine behind `client` still answers a ping (False when it died or its socket is gone)."""
    try:
        return bool(client.ping())
    except Exception:  # any failure to get an answer is the answer: requests and docker raise many kinds
        return False
