"""Notebook 13: notebook 12's compose.yaml (the chapter's file, its structure kept) given to ``docker stack deploy``
as it is, then with one change more at a time until Swarm takes it: each refusal, what Swarm ignored, and what the
service it made publishes and restarts.

The nodes are drained for these tries, so Swarm schedules no task of them: no node pulls the chapter's images
(``acme:dev``, ``postgres:16-alpine``, ``redis:7-alpine``, which no registry here holds), and whatever the stack
publishes stays in the nodes' own namespaces. The stack is removed and the nodes made active again before the
notebook's own stack is deployed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.instruments import compose, swarm, undo
from labkit.instruments.shell import run

CHAPTER_FILE = "compose/compose.yaml"  # notebook 12's asset: the chapter's file with labkit's images as variables
STACK = "acme"
CHAPTER_IMAGES = {"APP_IMAGE": "acme:dev", "DB_IMAGE": "postgres:16-alpine", "CACHE_IMAGE": "redis:7-alpine"}
DEPENDS_ON = re.compile(r"depends_on:\n\s+db:[^\n]*\n\s+cache:[^\n]*\n")
PULL_POLICY = re.compile(r"\n\s+pull_policy: never")
CHAPTER, LABKIT = "the chapter's file", "labkit's edit"  # whose text a try's refusal is about
# Each try adds one change to the last: why Swarm needs it, the change itself, and whose text it changes (the
# chapter's, or what notebook 12 added to it: `pull_policy: never`, as no registry is reachable here).
CHANGES: tuple[tuple[str, Callable[[str], str], str], ...] = (
    ("as written", lambda text: text, CHAPTER),
    ('`version: "3.8"` added (Swarm reads Compose file format 3 only)', lambda text: 'version: "3.8"\n' + text,
     CHAPTER),
    ("`depends_on` as a list (format 3 has no conditions)",
     lambda text: DEPENDS_ON.sub("depends_on: [db, cache]\n", text), CHAPTER),
    ("`pull_policy` removed (not in format 3)", lambda text: PULL_POLICY.sub("", text), LABKIT),
)
DEPLOY_TIMEOUT_S = 60


def versions_of(text: str) -> list[str]:
    """The file after each try's changes, in order (each a change to the one before; ValueError when a change
    finds nothing to change in this file)."""
    found: list[str] = []
    for label, change, _ in CHANGES:
        changed = change(found[-1] if found else text)
        if found and changed == found[-1]:
            raise ValueError(f"the change {label!r} changed nothing in {CHAPTER_FILE}")
        found.append(changed)
    return found


@contextmanager
def _drained(cluster: swarm.Cluster) -> Iterator[None]:
    """Every node drained (no task scheduled) for the block; active again after it, whatever ends it."""
    try:
        for node in cluster.nodes:
            cluster.docker(["node", "update", "--availability", "drain", node.node_id])
        yield
    finally:
        for node in cluster.nodes:
            cluster.docker(["node", "update", "--availability", "active", node.node_id], check=False)


LOGGED = re.compile(r'level=\w+ msg="(.*)"$')  # a warning the CLI logs: time="…" level=warning msg="…"


def _message(output: str) -> str:
    """The lines a reader needs from the CLI's output: its refusal or its warnings (not the services it created)."""
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and not line.startswith(("Creating ", "Updating "))]
    return " / ".join(m.group(1) if (m := LOGGED.search(line)) else line for line in lines)


def _asked(folder: Path, file_name: str) -> dict[str, str]:
    """What file `file_name` asks of the app's service, as Compose resolves it (variables filled, no engine asked):
    its ports (JSON: host_ip, published, target …) and its restart policy."""
    app = compose.Project(STACK, folder, (file_name,), CHAPTER_IMAGES).config()["services"]["app"]
    return {"asked_ports": json.dumps(app.get("ports", [])), "asked_restart": str(app.get("restart", ""))}


def tries(cluster: swarm.Cluster) -> pd.DataFrame:
    """`docker stack deploy` of the chapter's file after each change in CHANGES (the nodes drained): step, change,
    whose text a refusal is about (refused_text), the CLI's version, exit_code, message, what the file asks of the
    app (ports and restart, as Compose reads it), and for the try Swarm took, the app service's published ports
    and restart condition."""
    rows: list[dict[str, Any]] = []
    env = {**os.environ, **CHAPTER_IMAGES}
    # `docker stack deploy` reads the file in the CLI: its refusals are this client version's.
    client = run([*cluster.manager.cli, "version", "--format", "{{.Client.Version}}"], 30).stdout.strip()
    with undo.temporary_folder("labkit-13-as-stack-") as folder, _drained(cluster):
        (Path(folder) / "app" / "source").mkdir(parents=True)  # the file's bind mount, relative to it
        try:
            for step, ((label, _, _), text) in enumerate(zip(CHANGES, versions_of(assets.text(CHAPTER_FILE)),
                                                             strict=True)):
                path = Path(folder) / f"compose.{step}.yaml"
                path.write_text(text)
                done = run([*cluster.manager.cli, "stack", "deploy", "--resolve-image", "never", "-c", str(path),
                            STACK], DEPLOY_TIMEOUT_S, check=False, env=env)
                # A refusal is about the text the next try changes: the chapter's, or labkit's edit of it.
                refused = CHANGES[step + 1][2] if done.exit_code and step + 1 < len(CHANGES) else ""
                row = {"step": step, "change": label, "refused_text": refused, "cli": client,
                       "exit_code": done.exit_code,
                       "message": _message(done.stdout + "\n" + done.stderr), **_asked(Path(folder), path.name),
                       "published": "", "restart": ""}
                if done.exit_code == 0:
                    spec = json.loads(cluster.docker(["service", "inspect", f"{STACK}_app"]).stdout)[0]
                    row["published"] = json.dumps(spec["Endpoint"]["Spec"].get("Ports", []))
                    row["restart"] = spec["Spec"]["TaskTemplate"].get("RestartPolicy", {}).get("Condition", "")
                rows.append(row)
                if done.exit_code == 0:
                    break
        finally:
            cluster.docker(["stack", "rm", STACK], check=False)
    return pd.DataFrame(rows)
