"""What every section of notebook 12 stands on: parameter checks, the project folder (the chapter's compose file
and the labels file), a stack brought up and always taken down, the engine's events, HTTP probes and polling."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import assets
from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.errors import BadParameter, LabkitError
from labkit.instruments import compose, ports, undo
from labkit.instruments.containers import host_pid
from labkit.instruments.engine import Scope
from labkit.labs.compose_and_the_single_box_path import service_images
from labkit.labs.compose_and_the_single_box_path.declaration import (
    PROBE_TIMEOUT_S,
    SERVICES,
    VOLUMES,
    WAIT_TIMEOUT_S,
)

COMPOSE_FILE, CI_FILE, LABELS_FILE = "compose.yaml", "compose.ci.yaml", "labkit-labels.yaml"
LIMITS_FILE, ROLLING_FILE = "compose.limits.yaml", "compose.rolling.yaml"

# ---------------------------------------------------------------- parameters, checked before anything starts


def check_port(port: object, *, live: bool = True) -> int:
    """`port` when it is an unprivileged TCP port and (when `live`) free on 127.0.0.1; else BadParameter."""
    return ports.check_port(port, "port=", 18120, live=live)


def check_count(name: str, value: object, low: int = 1, high: int = 10_000) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadParameter(f"{name}={value!r}: need a whole number from {low} to {high}.", f"E.g. {name}={low + 2}.")
    return value


def check_seconds(name: str, value: object, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise BadParameter(f"{name}={value!r}: need a number of seconds from {low:g} to {high:g}.",
                           f"E.g. {name}={max(low, 1):g}.")
    return float(value)


def check_service(service: object) -> str:
    if service not in SERVICES:
        raise BadParameter(f"service={service!r} is not a service of the stack.", f"Use one of {list(SERVICES)}.")
    return str(service)


# ---------------------------------------------------------------- the project


@dataclass(frozen=True)
class Stack:
    """A stack's project and where its app answers on the host (port 0: published on no fixed port)."""

    project: compose.Project
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def up(self, *arguments: str) -> float:
        """``up -d --wait`` (every service running, and healthy where it has a check); its wall time in s."""
        started = time.perf_counter()
        self.project.run("up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT_S), *arguments,
                         timeout=WAIT_TIMEOUT_S + 60)
        return time.perf_counter() - started

    def container(self, client: docker.DockerClient, service: str, index: int = 1) -> Any:
        """The container of `service` (its `index`-th replica); BadParameter for a service the stack lacks."""
        check_service(service)
        found = client.containers.list(all=True, ignore_removed=True, filters={"label": [
            f"{compose.PROJECT_LABEL}={self.project.name}", f"{compose.SERVICE_LABEL}={service}",
            f"com.docker.compose.container-number={index}"]})
        if not found:
            raise LabkitError(f"no container of service {service!r} (replica {index}) in {self.project.name}.",
                              "Read `docker compose ps` of the project: it may not have started.")
        return found[0]

    def logs(self, service: str) -> str:
        check_service(service)
        return self.project.run("logs", "--no-color", "--no-log-prefix", service, timeout=60).stdout


@contextmanager
def project_folder(scope: Scope) -> Iterator[Path]:
    """A folder holding the chapter's compose file (ours: labkit/assets/compose), its CI override, the app's source
    (the dev bind mount's source) and the labels file that puts the scope's labels on every object."""
    with undo.temporary_folder("labkit-compose-") as folder:
        root = Path(folder)
        for name in (COMPOSE_FILE, CI_FILE, LIMITS_FILE, ROLLING_FILE):
            (root / name).write_text(assets.text(f"{service_images.ASSETS}/{name}"))
        shutil.copytree(assets.FOLDER / service_images.ASSETS / "app" / "source", root / "app" / "source",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (root / LABELS_FILE).write_text(compose.labels_file(SERVICES, VOLUMES, scope.labels))
        yield root


def image_variables(client: docker.DockerClient) -> dict[str, str]:
    return {"DB_IMAGE": service_images.require(client, service_images.DB),
            "CACHE_IMAGE": service_images.require(client, service_images.CACHE),
            "APP_IMAGE": service_images.require(client, service_images.APP),
            "CI_APP_IMAGE": service_images.require(client, service_images.APP_NEXT)}


def health_intervals(interval_s: float, db_interval_s: float | None = None) -> dict[str, str]:
    """The compose file's variables for healthchecks every `interval_s` s (the db's every `db_interval_s` s, when
    given)."""
    return {"HEALTH_INTERVAL": f"{interval_s:g}s",
            "DB_HEALTH_INTERVAL": f"{interval_s if db_interval_s is None else db_interval_s:g}s"}


@contextmanager
def stack(lab: LabSession, scope: Scope, folder: Path, name: str, port: int, interval_s: float,
          db_interval_s: float | None = None, **variables: str) -> Iterator[Stack]:
    """A project named after the scope and `name`, on `port` (0: no fixed host port), healthchecks every
    `interval_s` s (the db's every `db_interval_s` s, when given); ``down -v`` when the block ends, whatever
    happened. Not started: the caller runs ``up``."""
    project = compose.Project(f"labkit-{scope.scope_id}-{name}", folder, (COMPOSE_FILE, LABELS_FILE), {
        **image_variables(lab.engine), "APP_PORT": str(port) if port else "",
        **health_intervals(interval_s, db_interval_s), **variables})
    with compose.brought_down(project):
        yield Stack(project, port)


# ---------------------------------------------------------------- what happened, from the engine and the app


def events(client: docker.DockerClient, project: str, since_ns: int) -> pd.DataFrame:
    """The engine's container events of `project` from `since_ns` (host clock, ns) until now: service, event
    (``create``, ``start``, ``health_status: healthy`` …), t_s after `since_ns`."""
    rows = []
    for event in client.api.events(since=f"{since_ns / 1e9:.9f}", until=f"{time.time():.9f}", decode=True,
                                   filters={"type": "container", "label": f"{compose.PROJECT_LABEL}={project}"}):
        attributes = event.get("Actor", {}).get("Attributes", {})
        rows.append({"service": attributes.get(compose.SERVICE_LABEL, "?"), "event": event.get("Action", ""),
                     "t_s": (int(event["timeNano"]) - since_ns) / 1e9})
    return pd.DataFrame(rows, columns=["service", "event", "t_s"])


def leftovers(client: docker.DockerClient, project: str) -> int:
    """How many containers, networks and volumes carry `project`'s Compose label."""
    label = {"label": f"{compose.PROJECT_LABEL}={project}"}
    return (len(client.containers.list(all=True, filters=label, ignore_removed=True))
            + len(client.networks.list(filters=label))
            + len(client.volumes.list(filters=label)))


def first(frame: pd.DataFrame, service: str, event: str) -> float:
    """The first instant (s) of `event` for `service` in an events frame, NaN when there is none."""
    found = rows_where(frame, service=service, event=event)["t_s"]
    return float(found.min()) if len(found) else float("nan")


def log_instant(container: Any, text: str, since_ns: int) -> float:
    """When the container first logged a line containing `text` (``docker logs --timestamps``), s after
    `since_ns`; NaN when it did not."""
    for line in container.logs(timestamps=True).decode(errors="replace").splitlines():
        stamp, _, message = line.partition(" ")
        if text in message:
            head, _, fraction = stamp.rstrip("Z").partition(".")
            at = datetime.datetime.fromisoformat(f"{head}.{fraction[:6].ljust(6, '0')}+00:00")
            return at.timestamp() - since_ns / 1e9
    return float("nan")


@dataclass(frozen=True)
class Answer:
    """One HTTP GET: its status (0 when none), the JSON body ({} when none) and the error ('' when it answered)."""

    status: int
    body: dict[str, Any]
    error: str


def get(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> Answer:
    """One GET of `url` (http://127.0.0.1:PORT/path) on a new connection."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        connection.request("GET", "/" + path)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        body = json.loads(text) if text.startswith("{") else {}
        return Answer(response.status, body, "" if response.status == 200 else f"HTTP {response.status}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Answer(0, {}, f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()


def kill_main_process(client: docker.DockerClient, container_id: str) -> None:
    """SIGKILL the container's main process from the host, as a crash would end it (not ``docker kill`` or
    ``stop``: the engine would count those as asked for)."""
    os.kill(host_pid(client, container_id), signal.SIGKILL)
