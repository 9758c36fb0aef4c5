"""Sections 1 and 2: what survives what, where each kind of storage lives on the host, and a bind mount's live
edits both ways."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import measure
from labkit.labs.volumes_and_persistence.declaration import (
    ANONYMOUS,
    LAB,
    LAYER,
    MOUNT_POINTS,
    NAMED,
    PYTHON_BASE,
    STOP_TIMEOUT_S,
    TMPFS,
    Rig,
    check_bind_parent,
    docker_root,
    exec_ok,
    limits_for,
    rig,
)

log = logging.getLogger("labkit.volumes")

RESTART = "restart"
STOP_START = "stop + start"
RM_NEW = "rm + new container"
RM_V_NEW = "rm -v + new container"
EVENTS = (RESTART, STOP_START, RM_NEW, RM_V_NEW)
MARKER = "marker.txt"
IN_MEMORY = "n/a (memory)"
TMPFS_MIB = 8
SURVIVAL_MIB = 1  # the image's big file: unused here


@dataclass(frozen=True)
class SurvivalResult:
    """`survival`: per storage × event, whether the container after the event (the same one, or the new one) read
    the marker written before it, and whether the host still holds it (yes/no; tmpfs lives in memory) at
    `host_path`. `anonymous`: per event, the anonymous volume of the first container, whether it exists after the
    event and whether the engine lists it as dangling. `locations`: where each kind lives on the host."""

    survival: pd.DataFrame
    anonymous: pd.DataFrame
    locations: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """storage × event of ✓ (survived) / ✗ (gone), in the order measured."""
        table = self.survival.pivot(index="storage", columns="event", values="survived")
        table = table.loc[list(dict.fromkeys(self.survival["storage"])), list(dict.fromkeys(self.survival["event"]))]
        return table.map(lambda kept: "✓" if kept else "✗")

    def survived(self, storage: str, event: str) -> bool:
        rows = rows_where(self.survival, storage=storage, event=event)
        return bool(rows["survived"].iloc[0])

    def left_on_host(self, storage: str, event: str) -> str:
        rows = rows_where(self.survival, storage=storage, event=event)
        return str(rows["left_on_host"].iloc[0])

    @property
    def dangling(self) -> int:
        """Anonymous volumes left dangling by an `rm` without -v."""
        return int(self.anonymous["dangling_after"].sum())

    def location(self, storage: str) -> str:
        return str(self.locations.set_index("storage").loc[storage, "host_path"])

    def conclusion(self) -> str:
        layer_restart = self.survived(LAYER, RESTART) and self.survived(LAYER, STOP_START)
        return (f"**What we measured.** The file in the writable layer "
                f"{'survived' if layer_restart else 'did not survive'} `restart` and `stop` + `start`, and "
                f"{'survived' if self.survived(LAYER, RM_NEW) else 'was gone'} for a new container after `rm`. "
                f"tmpfs {'kept' if self.survived(TMPFS, RESTART) else 'lost'} it on a restart. The named volume "
                f"{'kept' if self.survived(NAMED, RM_V_NEW) else 'lost'} it even through `rm -v`; the anonymous volume "
                f"of the `VOLUME` line {'was' if self.survived(ANONYMOUS, RM_NEW) else 'was not'} seen by the new "
                f"container (it gets a fresh one), and `rm` without `-v` left **{self.dangling}** anonymous "
                f"volume(s) dangling on the host ({self.left_on_host(ANONYMOUS, RM_NEW)} for its file), which "
                f"`rm -v` removed ({self.left_on_host(ANONYMOUS, RM_V_NEW)}). The named volume lives at "
                f"`{self.location(NAMED)}`.")


def _host_paths(client: docker.DockerClient, container: Any) -> dict[str, str]:
    """Per kind of storage, the host folder that holds the container's marker ('' for tmpfs: it is memory)."""
    container.reload()
    paths = {mount["Destination"]: mount["Source"] for mount in container.attrs.get("Mounts", [])}
    upper = container.attrs.get("GraphDriver", {}).get("Data", {}).get("UpperDir", "")
    found = {kind: paths.get(point, "") for kind, point in MOUNT_POINTS.items()}
    found[LAYER] = f"{upper}{MOUNT_POINTS[LAYER]}" if upper else ""
    found[TMPFS] = ""
    return found


def _reads(container: Any, token: str) -> dict[str, bool]:
    """Per kind of storage: does `container` read `token` from its marker?"""
    seen = {}
    for kind, point in MOUNT_POINTS.items():
        code, output = container.exec_run(["cat", f"{point}/{MARKER}"])
        seen[kind] = code == 0 and output.decode().strip() == token
    return seen


def _on_host(path: str, token: str) -> str:
    if not path:
        return IN_MEMORY
    marker = Path(path) / MARKER
    return "yes" if marker.exists() and marker.read_text().strip() == token else "no"


def _one_event(rig_: Rig, image: str, event: str,
               index: int) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    client, limits = rig_.client, limits_for(TMPFS_MIB)
    volume, bind = rig_.volume(f"named-{index}"), rig_.bind_folder(f"bind-{index}")
    container = rig_.start(f"survive-{index}", image, limits, volume=volume, bind=bind, tmpfs_mib=TMPFS_MIB)
    token = f"{event} {container.id[:12]}"
    exec_ok(container, ["sh", "-c", " && ".join(f"echo '{token}' > {p}/{MARKER}" for p in MOUNT_POINTS.values())])
    before = _host_paths(client, container)
    anonymous = rig_.anonymous[-1]
    if event == RESTART:
        container.restart(timeout=STOP_TIMEOUT_S)
        after = container
    elif event == STOP_START:
        container.stop(timeout=STOP_TIMEOUT_S)
        container.start()
        after = container
    else:
        container.remove(force=True, v=event == RM_V_NEW)
        log.info("removed container %s (%s): anonymous volume %s", container.name, event, anonymous)
        after = rig_.start(f"survive-{index}", image, limits, volume=volume, bind=bind, tmpfs_mib=TMPFS_MIB)
    seen = _reads(after, token)
    rows = [{"storage": kind, "event": event, "survived": seen[kind], "left_on_host": _on_host(before[kind], token),
             "host_path": before[kind]} for kind in MOUNT_POINTS]
    dangling = {v.name for v in client.volumes.list(filters={"dangling": True})}
    existing = {v.name for v in client.volumes.list()}
    return rows, {"event": event, "volume": anonymous, "exists_after": anonymous in existing,
                  "dangling_after": anonymous in dangling}, before


def run_survival(lab: LabSession, bind_parent: str = "/tmp") -> SurvivalResult:
    """For each event (restart, stop + start, rm + a new container, rm -v + a new container), a fresh container with
    a named volume, a bind mount (a folder inside the lab's own temporary folder under `bind_parent`), a tmpfs and
    the image's anonymous volume: a marker written to each and to the writable layer, the event, then read back."""
    parent = check_bind_parent(bind_parent)
    lab.require_root("reading the engine's folders (the writable layer's UpperDir, a volume's _data)")

    def experiment() -> dict[str, pd.DataFrame]:
        rows: list[dict[str, Any]] = []
        anonymous: list[dict[str, Any]] = []
        locations: list[dict[str, Any]] = []
        with rig(lab, parent) as rig_:
            image = rig_.build(PYTHON_BASE, SURVIVAL_MIB)
            root = docker_root(rig_.client)
            for index, event in enumerate(EVENTS):
                cells, volume, where = _one_event(rig_, image, event, index)
                rows += cells
                anonymous.append(volume)
                if not locations:
                    locations = [{"storage": kind, "host_path": path or IN_MEMORY,
                                  "under_docker_root": bool(path) and path.startswith(root + "/"),
                                  "docker_root": root} for kind, path in where.items()]
        return {"survival": pd.DataFrame(rows, columns=list(LAB.tables["survival"])),
                "anonymous": pd.DataFrame(anonymous, columns=list(LAB.tables["anonymous"])),
                "locations": pd.DataFrame(locations, columns=list(LAB.tables["locations"]))}

    tables = lab.record("survival", ("survival", "anonymous", "locations"), experiment, events=list(EVENTS))
    return SurvivalResult(tables["survival"], tables["anonymous"], tables["locations"])


# ---------------------------------------------------------------- a bind mount's live edits, both ways

POLL_S = 0.0002  # both sides look for the other's file every 0.2 ms: the resolution of what is measured
EDIT_TIMEOUT_S = 10.0
HOST_TO_CONTAINER = "host → container"
CONTAINER_TO_HOST = "container → host"
# In the container: for each edit, wait for the host's ping-<i>, note when it was seen (CLOCK_MONOTONIC, which the
# container shares with the host), then write pong-<i> holding that time and the time it is written.
MIRROR = r'''
import os, sys, time
edits, poll, deadline = int(sys.argv[1]), float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
for i in range(edits):
    while not os.path.exists(f"/bind/ping-{i}"):
        if time.monotonic() > deadline:
            sys.exit(f"no ping-{i}")
        time.sleep(poll)
    seen = time.monotonic_ns()
    with open(f"/bind/.pong-{i}", "w") as f:
        f.write(f"{seen} {time.monotonic_ns()}")
    os.rename(f"/bind/.pong-{i}", f"/bind/pong-{i}")
'''


@dataclass(frozen=True)
class BindEditResult:
    """`bind_edits`: per direction and edit, the time from one side writing a file into the bind-mounted folder to
    the other side seeing it (s); both sides poll every `poll_interval_s`."""

    bind_edits: pd.DataFrame

    def median_ms(self, direction: str) -> float:
        return float(self.bind_edits.loc[self.bind_edits["direction"] == direction, "seconds"].median() * 1e3)

    def conclusion(self) -> str:
        poll_ms = float(self.bind_edits["poll_interval_s"].iloc[0]) * 1e3
        return (f"**What we measured.** A file written on the host into the bound folder was seen inside after a "
                f"median **{self.median_ms(HOST_TO_CONTAINER):.2f} ms**, and the reverse after "
                f"**{self.median_ms(CONTAINER_TO_HOST):.2f} ms** ({len(self.bind_edits) // 2} edits each way; both "
                f"sides look every {poll_ms:.1f} ms, so that is the resolution): the same inode, no copy, only the "
                "time to look.")


def _wait_for(path: Path, deadline: float) -> None:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {EDIT_TIMEOUT_S} s")
        time.sleep(POLL_S)


def run_bind_edits(lab: LabSession, edits: int = 20, bind_parent: str = "/tmp") -> BindEditResult:
    """`edits` files written by the host into a bind-mounted folder and answered by the container, each way timed."""
    measure.validate_repeats(edits, names=("edits", "warmup"))
    parent = check_bind_parent(bind_parent)

    def experiment() -> pd.DataFrame:
        rows = []
        with rig(lab, parent) as rig_:
            image = rig_.build(PYTHON_BASE, SURVIVAL_MIB)
            bind = rig_.bind_folder("edits")
            container = rig_.start("edits", image, limits_for(TMPFS_MIB), bind=bind,
                                   argv=["python3", "-c", MIRROR, str(edits), str(POLL_S), str(EDIT_TIMEOUT_S)])
            deadline = time.monotonic() + EDIT_TIMEOUT_S
            for edit in range(edits):
                written = time.monotonic_ns()
                (bind / f".ping-{edit}").write_text("ping")
                os.rename(bind / f".ping-{edit}", bind / f"ping-{edit}")
                _wait_for(bind / f"pong-{edit}", deadline)
                host_seen = time.monotonic_ns()
                seen, answered = map(int, (bind / f"pong-{edit}").read_text().split())
                rows += [{"direction": HOST_TO_CONTAINER, "edit": edit, "seconds": (seen - written) / 1e9,
                          "poll_interval_s": POLL_S},
                         {"direction": CONTAINER_TO_HOST, "edit": edit, "seconds": (host_seen - answered) / 1e9,
                          "poll_interval_s": POLL_S}]
            container.wait(timeout=EDIT_TIMEOUT_S)
        return pd.DataFrame(rows, columns=list(LAB.tables["bind_edits"]))

    return BindEditResult(lab.measure("bind_edits", experiment, edits=edits, poll_interval_s=POLL_S))
