"""Notebook 13's live experiments on a real three-node swarm (:mod:`labkit.instruments.swarm`): the stack
deployed, a task killed, a task turned unhealthy, rolling updates under load, a broken release rolled back, a
replica's volume left behind when it moves (:mod:`.stateful`), and a node killed; beside them, the same app as a
single box under Compose (:mod:`.single_box`), deployed with ``compose up -d`` under the same load in each round
and turned unhealthy. One cluster serves every experiment (it takes seconds to make); each table is recorded by
:func:`run_orchestrator` in one experiment."""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, daemons, images, registry, swarm, undo
from labkit.instruments.engine import Scope
from labkit.instruments.measure import run_together
from labkit.labs.when_to_graduate import as_stack
from labkit.labs.when_to_graduate.declaration import (
    APP_BASE,
    APP_LIMITS,
    CLIENT_BASE,
    LAB,
    MAX_REPLICAS,
    NETWORK,
    ORDERS,
    SERVICE,
    STACK,
)
from labkit.labs.when_to_graduate.result import OrchestratorResult, StatefulResult
from labkit.labs.when_to_graduate.single_box import compose_update, left_unhealthy, single_box, turn_unhealthy
from labkit.labs.when_to_graduate.stateful import move_state
from labkit.labs.when_to_graduate.under_load import Update, rollout_rows, seconds_until, updated_under_load, wait_until


@dataclass(frozen=True)
class Knobs:
    """The notebook's parameters, checked before anything starts (:func:`check`)."""

    nodes: int
    replicas: int
    rounds: int
    update_delay_s: float
    restart_delay_s: float
    load_window_s: float
    heartbeats_s: tuple[float, ...]
    broken_order: str


def check(knobs: Knobs, available_mib: int | None = None) -> None:
    """BadParameter for replicas outside 1..MAX_REPLICAS, an unknown update order, no rounds, a load window too
    short to hold an update, a heartbeat list that kills more nodes than leaves one, or a bad cluster size (more
    nodes than `available_mib` MiB hold; None: memory not checked, as in a replay)."""
    if not isinstance(knobs.replicas, int) or isinstance(knobs.replicas, bool) or \
            not 1 <= knobs.replicas <= MAX_REPLICAS:
        raise BadParameter(f"replicas={knobs.replicas!r}: need a whole number from 1 to {MAX_REPLICAS}.",
                           "A service with 0 replicas has nothing to heal or update.")
    if knobs.broken_order not in ORDERS:
        raise BadParameter(f"broken_order={knobs.broken_order!r} is not an update order.", f"Use one of {ORDERS}.")
    if not isinstance(knobs.rounds, int) or isinstance(knobs.rounds, bool) or knobs.rounds < 1:
        raise BadParameter(f"rounds={knobs.rounds!r}: need a whole number >= 1.")
    for name, value, low, high in (("update_delay_s", knobs.update_delay_s, 0, 30),
                                   ("restart_delay_s", knobs.restart_delay_s, 0, 30),
                                   ("load_window_s", knobs.load_window_s, 30, 600)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise BadParameter(f"{name}={value!r}: need seconds from {low} to {high}.")
    if not knobs.heartbeats_s or len(knobs.heartbeats_s) > knobs.nodes - 1:
        raise BadParameter(f"heartbeats_s={knobs.heartbeats_s!r}: one node is killed per heartbeat, and the "
                           f"manager must survive: give 1 to {knobs.nodes - 1} values for {knobs.nodes} nodes.")
    memory = available_mib if available_mib is not None else knobs.nodes * daemons.NODE_MEMORY_MIB
    try:
        for heartbeat in knobs.heartbeats_s:
            swarm.validate(knobs.nodes, heartbeat, memory)
    except daemons.BadNodes as exc:  # a count, memory or heartbeat refused
        raise BadParameter(str(exc), "Change the notebook's parameters.") from exc


STACK_FILE = """\
version: "3.8"
services:
  web:
    image: {image}
    init: true
    deploy:
      replicas: {replicas}
      endpoint_mode: {endpoint_mode}
      restart_policy: {{condition: any, delay: {restart_delay_s}s}}
      resources: {{limits: {{cpus: "{cpus}", memory: {memory_mib}M}}}}
networks:
  default:
    attachable: true
"""


def stack_file(image: str, replicas: int, endpoint_mode: str, restart_delay_s: float) -> str:
    """The stack: one service of `replicas` tasks of `image` under APP_LIMITS and an init (busybox httpd as PID 1
    ignores SIGTERM: each stop would wait out the 10 s grace period), on an attachable overlay network
    (the load client joins it), reached by name with `endpoint_mode`. No port is published: the load runs on the
    overlay, as a service's clients inside the swarm do."""
    return STACK_FILE.format(image=image, replicas=replicas, endpoint_mode=endpoint_mode,
                             restart_delay_s=restart_delay_s, cpus=APP_LIMITS.cpus,
                             memory_mib=APP_LIMITS.memory_bytes // 2**20)


# ---------------------------------------------------------------- reading the swarm


def tasks(cluster: swarm.Cluster) -> list[dict[str, Any]]:
    """The service's tasks that should run now: id, node (our name), state, image (the spec's), container id."""
    ids = cluster.docker(["service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", SERVICE],
                         check=False).stdout.split()
    if not ids:
        return []
    found = json.loads(cluster.docker(["inspect", *ids], check=False).stdout or "[]")
    return [{"task": t["ID"], "node": cluster.node_name(t.get("NodeID", "")), "state": t["Status"]["State"],
             "image": t["Spec"]["ContainerSpec"]["Image"],
             "container": t["Status"].get("ContainerStatus", {}).get("ContainerID", "")} for t in found]


def _running(cluster: swarm.Cluster, replicas: int, unless: Callable[[dict[str, Any]], bool]) -> bool:
    """`replicas` tasks are running (Swarm says running only once a health check passed) and none is `unless`."""
    up = [t for t in tasks(cluster) if t["state"] == "running"]
    return len(up) >= replicas and not any(unless(t) for t in up)


def _image_ids(cluster: swarm.Cluster, running: list[dict[str, Any]]) -> set[str]:
    """The image ids of the running tasks' containers, read on the node each runs on."""
    found = set()
    for task in running:
        node = cluster.node(task["node"])
        found.add(node.docker(["inspect", "--format", "{{.Image}}", task["container"]]).stdout.strip())
    return found


# ---------------------------------------------------------------- images


def build_app(scope: Scope, base: str, version: str, healthy: bool) -> builds.Build:
    """The app image (labkit/assets/when_to_graduate/Dockerfile) serving `version`; without /healthz when not
    `healthy`."""
    with undo.temporary_folder("labkit-13-") as folder:
        (Path(folder) / "Dockerfile").write_text(assets.text("when_to_graduate/Dockerfile").replace("{base}", base))
        return builds.build(Path(folder), f"labkit-13-app:{version}-{scope.scope_id}", scope,
                            build_args={"VERSION": version, "HEALTHY": "yes" if healthy else "no"})


# ---------------------------------------------------------------- experiments


def _deploy(cluster: swarm.Cluster, image: str, knobs: Knobs) -> pd.DataFrame:
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="labkit-13-stack-") as handle:
        handle.write(stack_file(image, knobs.replicas, cluster.support.endpoint_mode, knobs.restart_delay_s))
        handle.flush()
        # --resolve-image always (the default): the manager asks the registry for the tag's digest and pins it
        cluster.docker(["stack", "deploy", "-c", handle.name, STACK])
    wait_until(lambda: _running(cluster, knobs.replicas, lambda t: False), "the stack's tasks running")
    return pd.DataFrame([{k: t[k] for k in ("task", "node", "state", "image")} for t in tasks(cluster)])


def _replaced_s(cluster: swarm.Cluster, knobs: Knobs, gone: Callable[[dict[str, Any]], bool]) -> float:
    """Seconds until the service runs all its replicas again without the tasks `gone` picks; NaN when it did not
    (recorded as not replaced, not raised: that is the outcome the claim asks about)."""
    return seconds_until(lambda: _running(cluster, knobs.replicas, gone))


def _task_killed(cluster: swarm.Cluster, knobs: Knobs) -> dict[str, Any]:
    victim = next(t for t in tasks(cluster) if t["state"] == "running")
    cluster.node(victim["node"]).docker(["kill", victim["container"]])
    replaced = _replaced_s(cluster, knobs, lambda t: t["task"] == victim["task"])
    return {"event": "task killed (SIGKILL)", "heartbeat_s": cluster.heartbeat_s, "detected_s": float("nan"),
            "replaced_s": replaced, "replaced": not math.isnan(replaced),
            "detail": f"task {victim['task'][:12]} on {victim['node']}; restart delay {knobs.restart_delay_s} s"}


def _health_settings(node: swarm.Node, container: str) -> str:
    """The container's health check as its image sets it (a setting, not an observation)."""
    check = json.loads(node.docker(["inspect", "--format", "{{json .Config.Healthcheck}}", container]).stdout)
    return f"every {check['Interval'] / 1e9:g} s, unhealthy after {check['Retries']} failures in a row"


def _task_unhealthy(cluster: swarm.Cluster, knobs: Knobs) -> dict[str, Any]:
    victim = next(t for t in tasks(cluster) if t["state"] == "running")
    node = cluster.node(victim["node"])
    settings = _health_settings(node, victim["container"])
    node.docker(["exec", victim["container"], "touch", "/tmp/sick"])
    replaced = _replaced_s(cluster, knobs, lambda t: t["task"] == victim["task"])
    return {"event": "task unhealthy (swarm)", "heartbeat_s": cluster.heartbeat_s, "detected_s": float("nan"),
            "replaced_s": replaced, "replaced": not math.isnan(replaced),
            "detail": f"task {victim['task'][:12]} on {victim['node']}: its health check made to fail ({settings})"}


def _node_killed(cluster: swarm.Cluster, heartbeat: swarm.HeartbeatChange, knobs: Knobs) -> dict[str, Any]:
    """SIGKILL the live worker that runs the most tasks once `heartbeat` is in force on every node; time until the
    manager marks it down and until its tasks run on the other nodes."""
    adoption_s = heartbeat.wait()
    now = tasks(cluster)
    alive = [n for n in cluster.nodes[1:] if n.pid() is not None]
    node = max(alive, key=lambda n: sum(t["node"] == n.name for t in now))
    had = [t["task"] for t in now if t["node"] == node.name]
    started = time.perf_counter()
    node.kill()
    down = seconds_until(lambda: cluster.docker(["node", "inspect", "--format", "{{.Status.State}}", node.node_id]
                                                ).stdout.strip() == "down")  # NaN (never seen down) fails its claim
    elsewhere = _replaced_s(cluster, knobs, lambda t: t["node"] == node.name)
    return {"event": "node killed (SIGKILL of its dockerd)", "heartbeat_s": heartbeat.heartbeat_s,
            "detected_s": down,
            "replaced_s": time.perf_counter() - started if not math.isnan(elsewhere) else float("nan"),
            "replaced": bool(had) and not math.isnan(elsewhere),
            "detail": f"{node.name} ran {len(had)} task(s); " + (
                f"killed {adoption_s:.1f} s after the heartbeat was set, once every node had heartbeated under it"
                if adoption_s else "the heartbeat was already in force")}


def _update_state(cluster: swarm.Cluster) -> str:
    state = cluster.docker(["service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                            SERVICE]).stdout.strip()
    return state


# How long Swarm watches each new task for a failure, in an update and in its rollback (a rollback's default: 5 s).
MONITOR_S = 2


def _rollout(cluster: swarm.Cluster, client_image: str, case: str, order: str, round_index: int,
             image: str, knobs: Knobs) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Update the service to `image` with `order` while the load client runs on the manager; the update's duration
    is from its start until the manager reports it completed (or rolled back), and the load ends once the service
    has converged."""
    before = tasks(cluster)[0]["image"]

    def update() -> Update:
        started = time.perf_counter()
        cluster.docker(["service", "update", "--detach", "--image", image,
                        "--update-order", order, "--update-parallelism", "1",
                        "--update-delay", f"{knobs.update_delay_s}s", "--update-failure-action", "rollback",
                        "--update-monitor", f"{MONITOR_S}s", "--rollback-monitor", f"{MONITOR_S}s",
                        "--rollback-order", order, "--rollback-parallelism", "1", SERVICE])
        finished = ("completed", "rollback_completed", "paused", "rollback_paused")
        wait_until(lambda: _update_state(cluster) in finished, f"the update to {image}")
        duration = time.perf_counter() - started
        state = _update_state(cluster)
        wait_until(lambda: _running(cluster, knobs.replicas, lambda t: False), "the service converged")
        up = [t for t in tasks(cluster) if t["state"] == "running"]
        ids = _image_ids(cluster, up)
        wanted = set(_local_id(cluster, image if state == "completed" else before).split())
        return Update(state, duration, up[0]["image"] if up else "", ids == wanted and bool(ids))

    done, covered, load = updated_under_load(cluster.manager.cli, NETWORK, (), client_image, knobs.load_window_s,
                                             update)
    return rollout_rows(case, order, round_index, before, image, done, covered, load)


def _local_id(cluster: swarm.Cluster, reference: str) -> str:
    """The image id the manager holds for `reference` (the tag it pushed; a digest pinned after it is dropped)."""
    return cluster.manager.docker(["image", "inspect", "--format", "{{.Id}}", reference.partition("@")[0]]
                                  ).stdout.strip()


def _experiment(lab: LabSession, knobs: Knobs) -> dict[str, pd.DataFrame]:
    with ExitStack() as stack:
        scope = stack.enter_context(lab.scope())
        base = images.require_base(lab.engine, APP_BASE).tag
        client_image = images.require_base(lab.engine, CLIENT_BASE).tag
        versions = [build_app(scope, base, f"v{i + 1}", healthy=True).tag for i in range(1 + 2 * knobs.rounds)]
        broken = build_app(scope, base, "broken", healthy=False).tag
        box, cluster = run_together(  # nothing is timed while they come up
            partial(stack.enter_context, single_box(lab, scope, versions[0])),
            partial(stack.enter_context, swarm.cluster(lab.run_id, knobs.nodes)))
        lan_registry = stack.enter_context(registry.running(inside=cluster.manager_namespace))
        named = cluster.push_images(lan_registry, [*versions, broken])  # the workers pull what they run
        chapter_file = as_stack.tries(cluster)
        cluster.load_images([client_image], (cluster.manager,))  # the load client runs on the manager only
        placement = _deploy(cluster, named[versions[0]], knobs)
        healing = [_task_killed(cluster, knobs), _task_unhealthy(cluster, knobs)]
        rollout: list[dict[str, Any]] = []
        requests: list[dict[str, Any]] = []

        def kept(update: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
            rollout.append(update[0])
            requests.extend(update[1])

        upcoming = iter(versions[1:])
        for round_index in range(knobs.rounds):  # each round: the single box's deploy, then the swarm's updates
            kept(compose_update(lab, scope, box, client_image, round_index, versions[round_index],
                                versions[round_index + 1], knobs.load_window_s))
            for order in ORDERS:
                kept(_rollout(cluster, client_image, f"update, {order}", order, round_index, named[next(upcoming)],
                              knobs))
            kept(_rollout(cluster, client_image, f"broken release, {knobs.broken_order}", knobs.broken_order,
                          round_index, named[broken], knobs))
        fault = turn_unhealthy(lab, box)  # watched while the nodes are killed: nothing should replace it
        first = cluster.set_heartbeat(knobs.heartbeats_s[0])  # the nodes take it up while the state is moved
        moved = move_state(cluster, named[versions[0]])  # nothing timed
        healing.append(_node_killed(cluster, first, knobs))
        healing += [_node_killed(cluster, cluster.set_heartbeat(heartbeat), knobs)
                    for heartbeat in knobs.heartbeats_s[1:]]
        healing.append(left_unhealthy(lab, box, fault))
        return {"placement": placement, "as_stack": chapter_file, "healing": pd.DataFrame(healing),
                "rollout": pd.DataFrame(rollout),
                "requests": pd.DataFrame(requests, columns=list(LAB.tables["requests"])), "stateful": moved}


def run_orchestrator(lab: LabSession, knobs: Knobs) -> OrchestratorResult:
    """Every experiment of the notebook on one cluster (checked first; see :class:`Knobs`)."""
    check(knobs, daemons.available_mib() if lab.live else None)
    if lab.live:
        lab.require_root("a cluster of extra daemons in network namespaces")
    support = swarm.kernel_support() if lab.live else None  # a replay reads the recorded choice
    chosen = {"endpoint_mode": support.endpoint_mode, "kernel": support.evidence} if support else {}
    tables = lab.record("orchestrator", ("placement", "as_stack", "healing", "rollout", "requests", "stateful"),
                        lambda: _experiment(lab, knobs), **knobs.__dict__, **chosen)
    recorded = lab.parameters("placement")
    return OrchestratorResult(tables["placement"], tables["as_stack"], tables["healing"], tables["rollout"],
                              tables["requests"], StatefulResult(tables["stateful"]),
                              recorded.get("endpoint_mode", ""), recorded.get("kernel", ""))
