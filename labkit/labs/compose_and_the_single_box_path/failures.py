"""Section 4 of notebook 12: what Compose (and the engine under it) does when things fail — the app's process
killed under ``restart: unless-stopped`` and ``restart: "no"``, a container turned unhealthy, and
``--scale app=3`` with and without a fixed host port."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import docker
import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments.containers import health
from labkit.instruments.measure import poll_until, run_together
from labkit.labs.compose_and_the_single_box_path.declaration import LAB, WAIT_TIMEOUT_S
from labkit.labs.compose_and_the_single_box_path.stack import (
    Stack,
    check_port,
    check_seconds,
    get,
    kill_main_process,
    project_folder,
    stack,
)

UNLESS_STOPPED, NO = "unless-stopped", "no"
FIXED, NONE = "fixed (127.0.0.1:PORT:3000)", "none (127.0.0.1::3000)"
REPLICAS = 3


@dataclass(frozen=True)
class FailuresResult:
    """`restarts`: policy, state_after, restart_count, back_s (kill → running again), answering_s (kill → the app
    answers /healthz), watched_s; `unhealthy`: health, same_container, running, restart_count, unhealthy_after_s
    (db stopped → app unhealthy), watched_s; `scale`: port, exit_code, running (app replicas), error."""

    restarts: pd.DataFrame
    unhealthy: pd.DataFrame
    scale: pd.DataFrame

    def restart(self, policy: str) -> Any:
        return self.restarts[self.restarts["policy"] == policy].iloc[0]

    @property
    def restarted(self) -> bool:
        row = self.restart(UNLESS_STOPPED)
        return row["state_after"] == "running" and int(row["restart_count"]) >= 1

    @property
    def stayed_down(self) -> bool:
        row = self.restart(NO)
        return row["state_after"] != "running" and int(row["restart_count"]) == 0

    @property
    def left_in_place(self) -> bool:
        row = self.unhealthy.iloc[0]
        return (row["health"] == "unhealthy" and bool(row["same_container"]) and bool(row["running"])
                and int(row["restart_count"]) == 0)

    def scaled(self, port: str) -> Any:
        return self.scale[self.scale["port"] == port].iloc[0]

    @property
    def clash(self) -> bool:
        fixed, free = self.scaled(FIXED), self.scaled(NONE)
        return int(fixed["exit_code"]) != 0 and "already allocated" in str(fixed["error"]) \
            and int(free["exit_code"]) == 0 and int(free["running"]) == REPLICAS

    @property
    def clash_error(self) -> str:
        """The engine's reason for the fixed-port replicas, without the endpoint's name and id before it."""
        return str(self.scaled(FIXED)["error"]).rsplit("): ", 1)[-1]

    def conclusion(self) -> str:
        back, down, sick = self.restart(UNLESS_STOPPED), self.restart(NO), self.unhealthy.iloc[0]
        fixed, free = self.scaled(FIXED), self.scaled(NONE)
        return (f"Killed with SIGKILL, the app under `restart: unless-stopped` was running again after "
                f"**{back['back_s']:.2f} s** and answering after **{back['answering_s']:.2f} s** (restart count "
                f"{back['restart_count']}); under `restart: \"no\"` it was still **{down['state_after']}** "
                f"{down['watched_s']:.0f} s later. With the db stopped, the app turned **{sick['health']}** after "
                f"**{sick['unhealthy_after_s']:.1f} s** and, {sick['watched_s']:.0f} s later, was the same "
                f"container: **{bool(sick['same_container'])}**, still running: **{bool(sick['running'])}**, "
                f"restarted {sick['restart_count']} times"
                + (" — nothing acted on its health" if self.left_in_place else "") + f". `--scale app={REPLICAS}` "
                f"with the fixed host port exited {fixed['exit_code']} with {fixed['running']} replica(s) running: "
                f"*{self.clash_error}*; without a fixed host port it ran **{free['running']}**.")


def _state(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    state: dict[str, Any] = client.api.inspect_container(container_id)["State"]
    return state


def _restart_count(client: docker.DockerClient, container_id: str) -> int:
    return int(client.api.inspect_container(container_id)["RestartCount"])


def _kill(lab: LabSession, up: Stack, policy: str, watch_s: float) -> dict[str, Any]:
    client = lab.engine
    app = up.container(client, "app").id
    kill_main_process(client, app)
    killed = time.perf_counter()
    if policy == UNLESS_STOPPED:
        back_s = poll_until(lambda: _restart_count(client, app) >= 1 and bool(_state(client, app)["Running"]),
                          WAIT_TIMEOUT_S)
        answering_s = back_s + poll_until(lambda: not get(up.url("/healthz")).error, WAIT_TIMEOUT_S)
        watched_s = time.perf_counter() - killed
    else:
        back_s = answering_s = float("nan")
        # The engine notices the exit first; then there is nothing to wait for but a restart that should not
        # come: watch for `watch_s` and look.
        poll_until(lambda: not _state(client, app)["Running"], WAIT_TIMEOUT_S)
        poll_until(lambda: bool(_state(client, app)["Running"]), watch_s)
        watched_s = time.perf_counter() - killed
    return {"policy": policy, "state_after": _state(client, app)["Status"],
            "restart_count": _restart_count(client, app), "back_s": back_s, "answering_s": answering_s,
            "watched_s": watched_s}


def _scale(up: Stack, client: docker.DockerClient, port: str) -> dict[str, Any]:
    done = up.project.run("up", "-d", "--scale", f"app={REPLICAS}", "--no-recreate", timeout=WAIT_TIMEOUT_S + 60,
                          check=False)
    app = {"label": [f"com.docker.compose.project={up.project.name}", "com.docker.compose.service=app"]}
    running = len(client.containers.list(filters=app, ignore_removed=True))
    error = next((line.strip() for line in reversed(done.stderr.splitlines()) if "rror" in line), "")
    return {"port": port, "exit_code": done.exit_code, "running": running, "error": error}


def _unhealthy(lab: LabSession, up: Stack, watch_s: float) -> dict[str, Any]:
    client = lab.engine
    app = up.container(client, "app").id
    restarts = _restart_count(client, app)
    # Failures count only once the app has been healthy (before that its start period forgives them).
    poll_until(lambda: health(client, app) == "healthy", WAIT_TIMEOUT_S)
    up.project.run("stop", "db", timeout=120)
    after_s = poll_until(lambda: health(client, app) == "unhealthy", WAIT_TIMEOUT_S)
    watched = time.perf_counter()
    poll_until(lambda: up.container(client, "app").id != app or not _state(client, app)["Running"], watch_s)
    now = up.container(client, "app")
    return {"health": health(client, app), "same_container": now.id == app,
            "running": bool(_state(client, app)["Running"]), "restart_count": _restart_count(client, app) - restarts,
            "unhealthy_after_s": after_s, "watched_s": time.perf_counter() - watched}


def _failures(lab: LabSession, port: int, interval_s: float, watch_s: float) -> dict[str, pd.DataFrame]:
    with lab.scope() as scope, project_folder(scope) as folder, \
            stack(lab, scope, folder, "restart", port, interval_s, APP_RESTART=UNLESS_STOPPED) as kept, \
            stack(lab, scope, folder, "norestart", 0, interval_s, APP_RESTART=NO) as left:
        run_together(kept.up, left.up)  # nothing is timed while they come up
        came_back = _kill(lab, kept, UNLESS_STOPPED, watch_s)  # timed with the other stack idle
        scale = [_scale(kept, lab.engine, FIXED), _scale(left, lab.engine, NONE)]
        # Two watches for what Compose should not do, side by side: each is polling, and what it times (three
        # failed checks; an exit) is the engine's.
        unhealthy, stayed_down = run_together(lambda: _unhealthy(lab, kept, watch_s),
                                              lambda: _kill(lab, left, NO, watch_s))
    return {"restarts": pd.DataFrame([came_back, stayed_down], columns=LAB.tables["restarts"]),
            "unhealthy": pd.DataFrame([unhealthy], columns=LAB.tables["unhealthy"]),
            "scale": pd.DataFrame(scale, columns=LAB.tables["scale"])}


def run_failures(lab: LabSession, port: int, interval_s: float, watch_s: float) -> FailuresResult:
    """Two stacks at once (healthchecks every `interval_s` s): under ``unless-stopped`` on `port`, the app killed,
    scaled to 3 replicas, then left unhealthy (db stopped) and watched `watch_s` s; under ``"no"`` with no fixed
    port, the app scaled to 3, then one replica killed and watched `watch_s` s, beside the first watch."""
    check_port(port, live=False)
    check_seconds("interval_s", interval_s, 0.5, 30)
    check_seconds("watch_s", watch_s, 1, 600)
    if lab.live:
        lab.require_root("killing a container's process from the host")
        check_port(port)
    tables = lab.record("failures", ("restarts", "unhealthy", "scale"),
                        lambda: _failures(lab, port, interval_s, watch_s), port=port, interval_s=interval_s,
                        watch_s=watch_s)
    return FailuresResult(tables["restarts"], tables["unhealthy"], tables["scale"])
