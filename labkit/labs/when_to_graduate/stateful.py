"""The end of notebook 13's section 2, the chapter's "stateful complexity": one replica that writes a file into a
local named volume, moved by the orchestrator to another node (a placement constraint changed, as a drained or lost
node would), then read on the new node and on the old one. It runs on the notebook's cluster
(:func:`.orchestrator.run_orchestrator`), between the updates and the nodes killed."""

from __future__ import annotations

import json

import pandas as pd

from labkit.instruments import swarm
from labkit.labs.when_to_graduate.declaration import LEFT_BEHIND, MARKER, MOVED, VOLUME, WRITTEN
from labkit.labs.when_to_graduate.under_load import CONVERGE_TIMEOUT_S, wait_until

SERVICE = "lk13state"


def _task_on(cluster: swarm.Cluster) -> tuple[swarm.Node, str] | None:
    """The node and container id of the service's running task, or None while it is not running."""
    ids = cluster.docker(["service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", SERVICE],
                         check=False).stdout.split()
    for task in json.loads(cluster.docker(["inspect", *ids], check=False).stdout or "[]") if ids else []:
        if task["Status"]["State"] == "running":
            return cluster.node(cluster.node_name(task["NodeID"])), task["Status"]["ContainerStatus"]["ContainerID"]
    return None


def _running_on(cluster: swarm.Cluster, node: swarm.Node) -> tuple[swarm.Node, str]:
    found: list[tuple[swarm.Node, str]] = []

    def placed() -> bool:
        where = _task_on(cluster)
        found[:] = [where] if where and where[0].name == node.name else []
        return bool(found)

    wait_until(placed, f"the stateful replica running on {node.name}", CONVERGE_TIMEOUT_S)
    return found[0]


def move_state(cluster: swarm.Cluster, image: str) -> pd.DataFrame:
    """One replica of `image` (a name the nodes can pull) with a local named volume, on the cluster's manager: it
    writes a file, is moved to the first worker by a changed placement constraint, and the file is looked for on
    both nodes; its service is removed after, so that the cluster runs only what it ran before."""
    first, second = cluster.nodes[:2]
    cluster.docker(["service", "create", "--detach", "--name", SERVICE, "--replicas", "1", "--init",
                    "--mount", f"type=volume,source={VOLUME},target=/data",
                    "--constraint", f"node.id=={first.node_id}", image])
    node, container = _running_on(cluster, first)
    node.docker(["exec", container, "sh", "-c", f"echo state > {MARKER}"])
    written = node.docker(["exec", container, "test", "-f", MARKER], check=False).exit_code == 0
    cluster.docker(["service", "update", "--detach", "--constraint-rm", f"node.id=={first.node_id}",
                    "--constraint-add", f"node.id=={second.node_id}", SERVICE])
    node, container = _running_on(cluster, second)
    moved = node.docker(["exec", container, "test", "-f", MARKER], check=False).exit_code == 0
    # the first node's copy of the volume, read by a throwaway container there
    left = first.docker(["run", "--rm", "--network", "none", "-v", f"{VOLUME}:/data", image, "test",
                         "-f", MARKER], check=False).exit_code == 0
    cluster.docker(["service", "rm", SERVICE])
    return pd.DataFrame([
        {"step": WRITTEN, "node": first.name, "marker": written, "detail": f"service {SERVICE}"},
        {"step": MOVED, "node": second.name, "marker": moved,
         "detail": f"constraint node.id=={first.node_id[:12]} → node.id=={second.node_id[:12]}"},
        {"step": LEFT_BEHIND, "node": first.name, "marker": left,
         "detail": f"docker run -v {VOLUME}:/data on {first.name}"}])
