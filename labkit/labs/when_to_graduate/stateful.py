"""The end of notebook 13's section 2, the chapter's "stateful complexity": one replica that writes a file into a
local named volume, moved by the orchestrator to another node (a placement constraint changed, as a drained or lost
node would), then read on the new node and on the old one."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import images, registry, swarm
from labkit.labs.when_to_graduate.declaration import APP_BASE
from labkit.labs.when_to_graduate.orchestrator import build_app
from labkit.labs.when_to_graduate.under_load import CONVERGE_TIMEOUT_S, wait_until

TABLE = "stateful"
SERVICE = "lk13state"
VOLUME = "lk13-data"
MARKER = "/data/written-on-the-first-node"
NODES = 2  # the first node manages; the replica starts on it and is moved to the second
WRITTEN, MOVED, LEFT_BEHIND = "written by the replica", "read by the moved replica", "read on the first node"


@dataclass(frozen=True)
class StatefulResult:
    """`steps`: step (written, moved, left behind), node, marker (the file was there), detail."""

    steps: pd.DataFrame

    @property
    def recorded(self) -> bool:
        """False in a replay of a recording made before the section existed."""
        return not self.steps.empty

    def marker(self, step: str) -> bool:
        return bool(self.steps.set_index("step").loc[step, "marker"])

    def node(self, step: str) -> str:
        return str(self.steps.set_index("step").loc[step, "node"])

    @property
    def state_stayed_behind(self) -> bool:
        """The replica moved to another node, found its volume empty there, and the file is still on the first."""
        return (self.node(MOVED) != self.node(WRITTEN) and self.marker(WRITTEN) and not self.marker(MOVED)
                and self.marker(LEFT_BEHIND))

    def conclusion(self) -> str:
        if not self.recorded:
            return "Not recorded: this recording was made before the section existed."
        found = "found" if self.marker(MOVED) else "did **not** find"
        kept = "still holds it" if self.marker(LEFT_BEHIND) else "no longer holds it"
        moved = self.node(MOVED) != self.node(WRITTEN)
        where = ("the volume of the same name there was a new one, made empty for it" if moved
                 and not self.marker(MOVED) else "its state went with it" if moved else
                 "it was not moved to another node, so this run shows nothing about moving state")
        lesson = (" A local volume belongs to one node; moving state with its replica takes shared storage or a "
                  "volume plugin." if self.state_stayed_behind else "")
        restarted = f"Moved to {self.node(MOVED)}" if moved else f"Started again on {self.node(MOVED)}"
        return (f"**What we measured.** The replica wrote `{MARKER}` into the named volume `{VOLUME}` on "
                f"{self.node(WRITTEN)}. {restarted}, it {found} the file: {where}. The volume on "
                f"{self.node(LEFT_BEHIND)} {kept}.{lesson}")


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


def run_stateful(lab: LabSession) -> StatefulResult:
    """One replica with a local named volume on a two-node swarm: it writes a file, is moved to the other node by
    a changed placement constraint, and the file is looked for on both nodes."""
    if (missing := lab.unrecorded(TABLE)) is not None:
        return StatefulResult(missing)
    if lab.live:
        lab.require_root("a cluster of extra daemons in network namespaces")

    def experiment() -> pd.DataFrame:
        with lab.scope() as scope:
            built = build_app(scope, images.require_base(lab.engine, APP_BASE).tag, "state", healthy=True).tag
            with swarm.cluster(lab.run_id, NODES) as cluster, \
                    registry.running(inside=cluster.manager_namespace) as lan_registry:
                image = cluster.push_images(lan_registry, [built])[built]
                first, second = cluster.nodes
                cluster.docker(["service", "create", "--detach", "--name", SERVICE,
                                "--replicas", "1", "--init",
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
                return pd.DataFrame([
                    {"step": WRITTEN, "node": first.name, "marker": written, "detail": f"service {SERVICE}"},
                    {"step": MOVED, "node": second.name, "marker": moved,
                     "detail": f"constraint node.id=={first.node_id[:12]} → node.id=={second.node_id[:12]}"},
                    {"step": LEFT_BEHIND, "node": first.name, "marker": left,
                     "detail": f"docker run -v {VOLUME}:/data on {first.name}"}])

    return StatefulResult(lab.measure(TABLE, experiment, nodes=NODES))
