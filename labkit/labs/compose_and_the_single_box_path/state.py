"""Sections 2 and 3 of notebook 12, on one stack: does the counter survive ``down`` + ``up`` in the named volume
and vanish with ``down -v``; and who reaches the app published on 127.0.0.1 — this host, or a neighbour host."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import loadclient, netns
from labkit.labs.compose_and_the_single_box_path.declaration import APP_CONTAINER_PORT, LAB, PROBE_TIMEOUT_S
from labkit.labs.compose_and_the_single_box_path.stack import (
    check_count,
    check_port,
    check_seconds,
    get,
    project_folder,
    stack,
)

FIRST_UP, AFTER_DOWN, AFTER_DOWN_V = "first up", "down, then up", "down -v, then up"
POSTGRES = "postgres"  # the app's answer to /count names where it read the counter: "redis" or "postgres"
HOST, NEIGHBOUR_HOST, NEIGHBOUR_DIRECT = "host → 127.0.0.1:PORT", "neighbour → host address:PORT", \
    "neighbour → container address:3000"


@dataclass(frozen=True)
class StateResult:
    """`persistence`: step, count (the app's counter after the step), source (postgres / redis: where the app
    read it), volume_kept (the named volume existed after the step's `down`); `exposure`: client, target,
    reachable, status, error."""

    persistence: pd.DataFrame
    exposure: pd.DataFrame

    def _step(self, step: str) -> Any:
        return self.persistence[self.persistence["step"] == step].iloc[0]

    def count(self, step: str) -> int:
        return int(self._step(step)["count"])

    def source(self, step: str) -> str:
        return str(self._step(step)["source"])

    def volume_kept(self, step: str) -> bool:
        """The named volume still existed after the step's `down` (before its `up`)."""
        return bool(self._step(step)["volume_kept"])

    @property
    def written(self) -> int:
        return self.count(FIRST_UP)

    @property
    def survives_down(self) -> bool:
        """After `down` + `up` the counter written before was read back from PostgreSQL (the new cache held
        nothing), on the named volume that `down` kept."""
        return (self.count(AFTER_DOWN) == self.written > 0 and self.source(AFTER_DOWN) == POSTGRES
                and self.volume_kept(AFTER_DOWN))

    @property
    def gone_after_down_v(self) -> bool:
        """`down -v` removed the named volume, and the next `up` started the counter from 0."""
        return self.count(AFTER_DOWN_V) == 0 and not self.volume_kept(AFTER_DOWN_V)

    def reached(self, target: str) -> bool:
        return bool(self.exposure[self.exposure["target"] == target]["reachable"].any())

    def persistence_conclusion(self) -> str:
        def volume(step: str) -> str:
            return "was still there" if self.volume_kept(step) else "was gone"

        from_volume = (": the new cache held nothing, so the number came from the db's named volume"
                       if self.survives_down else "")
        return (f"The app counted to **{self.written}** on the first `up`. After `down` and `up` it read "
                f"**{self.count(AFTER_DOWN)}** from {self.source(AFTER_DOWN)} (the named volume "
                f"{volume(AFTER_DOWN)} after `down`){from_volume}. After `down -v` and `up` it read "
                f"**{self.count(AFTER_DOWN_V)}** (the named volume {volume(AFTER_DOWN_V)} after `down -v`).")

    def exposure_conclusion(self) -> str:
        return (f"From this host on 127.0.0.1 the app answered: **{self.reached(HOST)}**. The neighbour, through "
                f"this host's address and the same port: **{self.reached(NEIGHBOUR_HOST)}**; routing straight to "
                f"the container's address through this host: **{self.reached(NEIGHBOUR_DIRECT)}**.")


def _neighbour_probe(neighbour: netns.Neighbour, url: str) -> dict[str, Any]:
    done = neighbour.run([sys.executable, str(Path(loadclient.__file__)), url, "--count", "1", "--concurrency", "1",
                          "--time-limit", str(PROBE_TIMEOUT_S)], PROBE_TIMEOUT_S + 60)
    answer = loadclient.parse_output(done.stdout).requests[0]
    return {"reachable": not answer.error, "status": answer.status, "error": answer.error}


def _state(lab: LabSession, port: int, writes: int, interval_s: float) -> dict[str, pd.DataFrame]:
    steps: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    with lab.scope() as scope, project_folder(scope) as folder, \
            stack(lab, scope, folder, "state", port, interval_s) as up:
        volume = f"{up.project.name}_db_data"

        def volume_exists() -> bool:
            return bool(lab.engine.volumes.list(filters={"name": volume}))

        def read(step: str, kept: bool) -> None:
            answer = get(up.url("/count"))
            steps.append({"step": step, "count": answer.body.get("count", -1), "source": answer.body.get("from", ""),
                          "volume_kept": kept})

        up.up()
        for _ in range(writes):
            get(up.url("/"))
        read(FIRST_UP, volume_exists())
        mine = get(up.url("/healthz"))
        probes.append({"client": "host", "target": HOST, "reachable": not mine.error, "status": mine.status,
                       "error": mine.error})
        address = next(iter(up.container(lab.engine, "app").attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        with netns.neighbour(lab.run_id) as neighbour:
            for target, url in ((NEIGHBOUR_HOST, f"http://{neighbour.host_address}:{port}/healthz"),
                                (NEIGHBOUR_DIRECT, f"http://{address}:{APP_CONTAINER_PORT}/healthz")):
                probes.append({"client": "neighbour", "target": target, **_neighbour_probe(neighbour, url)})
        up.project.run("down", timeout=120)
        kept = volume_exists()
        up.up()
        read(AFTER_DOWN, kept)
        up.project.down()
        kept = volume_exists()
        up.up()
        read(AFTER_DOWN_V, kept)
    return {"persistence": pd.DataFrame(steps, columns=LAB.tables["persistence"]),
            "exposure": pd.DataFrame(probes, columns=LAB.tables["exposure"])}


def run_state(lab: LabSession, port: int, writes: int, interval_s: float) -> StateResult:
    """One stack (healthchecks every `interval_s`): `writes` GETs of / count up; probes from this host and a
    neighbour; then ``down`` + ``up`` and ``down -v`` + ``up``, reading the counter after each."""
    check_port(port, live=False)
    check_count("writes", writes, 1, 1000)
    check_seconds("interval_s", interval_s, 0.5, 30)
    if lab.live:
        lab.require_root("a neighbour network namespace")
        check_port(port)
    tables = lab.record("state", ("persistence", "exposure"), lambda: _state(lab, port, writes, interval_s),
                        port=port, writes=writes, interval_s=interval_s)
    return StateResult(tables["persistence"], tables["exposure"])
