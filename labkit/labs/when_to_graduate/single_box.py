"""Notebook 13's single box, on the host's own engine: the swarm's app run by Compose
(labkit/assets/when_to_graduate/compose.yaml), moved to the next version with the chapter's ``compose up -d`` under
the same load client as the swarm's rolling updates, then turned unhealthy and watched while the swarm's last
experiments run (nothing replaces it)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import compose, undo
from labkit.instruments.containers import health
from labkit.instruments.engine import Scope, docker_cli
from labkit.labs.when_to_graduate.declaration import APP_LIMITS
from labkit.labs.when_to_graduate.under_load import Update, rollout_rows, seconds_until, updated_under_load, wait_until

COMPOSE_FILE, LABELS_FILE = "compose.yaml", "labels.yaml"
CASE = "compose up -d, one engine"
ORDER = "recreate"  # Compose replaces the one container: the old one stops before the new one answers
UP_TIMEOUT_S = 60
NOT_HEALTHY = "the new container not healthy"  # its update state when the wait for health ran out
UNHEALTHY_WATCH_S = 6.0  # the least time the unhealthy container is watched after it turned unhealthy


def variables(image: str) -> dict[str, str]:
    """What compose.yaml interpolates: the app's image and the stack's limits (APP_LIMITS)."""
    return {"APP_IMAGE": image, "APP_CPUS": f"{APP_LIMITS.cpus:g}", "APP_MEMORY": f"{APP_LIMITS.memory_bytes}b"}


@contextmanager
def single_box(lab: LabSession, scope: Scope, image: str) -> Iterator[compose.Project]:
    """The app at `image` brought up by Compose (``up -d --wait``: healthy) under the stack's limits, its objects
    labelled with `scope`'s labels; taken down with ``down -v`` when the block ends, whatever ends it."""
    with undo.temporary_folder("labkit-13-compose-") as folder:
        root = Path(folder)
        (root / COMPOSE_FILE).write_text(assets.text(f"when_to_graduate/{COMPOSE_FILE}"))
        (root / LABELS_FILE).write_text(compose.labels_file(("web",), (), scope.labels))
        project = compose.Project(scope.name("13-box"), root, (COMPOSE_FILE, LABELS_FILE), variables(image))
        with compose.brought_down(project):
            project.run("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
            yield project


def _web(lab: LabSession, project: compose.Project) -> Any:
    """The project's one web container (its newest, while Compose replaces it)."""
    found = lab.engine.containers.list(all=True, filters={"label": f"{compose.PROJECT_LABEL}={project.name}"})
    return max(found, key=lambda c: c.attrs["Created"])


def compose_update(lab: LabSession, scope: Scope, project: compose.Project, client_image: str, round_index: int,
                   from_image: str, to_image: str, window_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``compose up -d`` with the app's image changed from `from_image` to `to_image` while the load client runs on
    the project's network; the update's duration is the command's, and the load ends once the new container is
    running and healthy."""
    wanted = lab.engine.images.get(to_image).id

    def update() -> Update:
        started = time.perf_counter()
        project.run("up", "-d", timeout=UP_TIMEOUT_S + 60, APP_IMAGE=to_image)
        duration = time.perf_counter() - started
        def new_and_healthy() -> bool:
            web = _web(lab, project)
            return bool(web.image.id == wanted and health(lab.engine, web.id) == "healthy")

        healthy = not math.isnan(seconds_until(new_and_healthy))
        web = _web(lab, project)
        return Update("completed" if healthy else NOT_HEALTHY, duration, web.attrs["Config"]["Image"],
                      web.image.id == wanted)

    done, covered, load = updated_under_load([docker_cli()], f"{project.name}_default", scope.label_args(),
                                             client_image, window_s, update)
    return rollout_rows(CASE, ORDER, round_index, from_image, to_image, done, covered, load)


@dataclass(frozen=True)
class Unhealthy:
    """The single box's container made to fail its health check: its `container_id`, `turned_s` (from the fault
    until the engine called it unhealthy) and `since` (``perf_counter`` then)."""

    container_id: str
    turned_s: float
    since: float


def turn_unhealthy(lab: LabSession, project: compose.Project) -> Unhealthy:
    """Make the container's health check fail and wait until the engine calls it unhealthy."""
    web = _web(lab, project)
    web.exec_run(["touch", "/tmp/sick"])
    turned = wait_until(lambda: health(lab.engine, web.id) == "unhealthy", "the Compose container unhealthy", 30)
    return Unhealthy(web.id, turned, time.perf_counter())


def left_unhealthy(lab: LabSession, project: compose.Project, fault: Unhealthy) -> dict[str, Any]:
    """The healing row of the unhealthy container, at least UNHEALTHY_WATCH_S s after it turned unhealthy (the
    swarm's experiments run in between): with ``restart: unless-stopped`` it is left running, as the same container
    (a restart policy acts on an exit, not on health)."""
    time.sleep(max(0.0, UNHEALTHY_WATCH_S - (time.perf_counter() - fault.since)))  # the shortest observation window
    watched = time.perf_counter() - fault.since
    now = _web(lab, project)
    now_health = health(lab.engine, now.id)
    still = now.id == fault.container_id and now.status == "running" and now_health == "unhealthy"
    return {"event": "container unhealthy (Compose, one engine)", "heartbeat_s": float("nan"),
            "detected_s": fault.turned_s, "replaced_s": float("nan"), "replaced": not still,
            "detail": f"{watched:.1f} s after it turned unhealthy: status {now.status}, health {now_health}, "
                      f"restarts {now.attrs['RestartCount']}, the same container: {now.id == fault.container_id}"}
