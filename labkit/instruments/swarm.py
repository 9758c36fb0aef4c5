"""A real Swarm-mode cluster on one machine: the extra Docker daemons of :mod:`labkit.instruments.daemons`, each in
its own network namespace on one LAN, made into one swarm (the first node manages, the others work). The host's own
engine never joins it.

Images reach the nodes from a registry on their LAN (:meth:`Cluster.push_images`: the manager pushes, the workers
pull what their tasks run, by the digest the manager resolved) or by ``docker save``/``docker load``
(:meth:`Cluster.load_images`). Made and removed by :func:`cluster`: nodes leave the swarm, then
the daemons go as :func:`labkit.instruments.daemons.engines` removes them — also on an error, Ctrl-C or SIGTERM,
and after a SIGKILL by the next labkit command. Bad input is refused before anything starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from labkit.instruments import daemons, netns, registry
from labkit.instruments.daemons import CLI_TIMEOUT_S, Node
from labkit.instruments.measure import run_together
from labkit.instruments.shell import Completed, run

SWARM_PORT = 2377
DEFAULT_HEARTBEAT_S = 5.0  # swarmkit's dispatcher heartbeat period
# swarmkit's dispatcher (manager/dispatcher): at each heartbeat it draws the node's next period within
# HEARTBEAT_EPSILON_S either side of the configured one, and marks the node down GRACE_PERIODS of that period after
# the heartbeat unless another one comes.
HEARTBEAT_EPSILON_S = 0.5
GRACE_PERIODS = 3
HEARTBEAT_RPC_S = 0.5  # allowance for one heartbeat's round trip to the manager on this machine


class BadCluster(daemons.BadNodes):
    """A cluster the instrument refuses before anything starts (the message names the fix)."""


# ---------------------------------------------------------------- what this kernel can do


@dataclass(frozen=True)
class KernelSupport:
    """What Swarm's networking needs from the kernel: `vxlan` (overlay networks) and `ip_vs` (virtual IPs and the
    ingress routing mesh), and where each answer came from (`evidence`)."""

    vxlan: bool
    ip_vs: bool
    evidence: str

    @property
    def endpoint_mode(self) -> str:
        """``vip`` when IPVS is there, else ``dnsrr`` (a service name resolves to every task's address)."""
        return "vip" if self.ip_vs else "dnsrr"

    @property
    def publish_mode(self) -> str:
        """``ingress`` (the routing mesh: any node answers) when IPVS is there, else ``host`` (a task's own node
        answers on the port)."""
        return "ingress" if self.ip_vs else "host"


def parse_kernel_config(text: str) -> dict[str, str]:
    """``CONFIG_X=value`` lines of a kernel config (``# CONFIG_X is not set`` lines are left out)."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            found[name] = value
    return found


def support_from(config: dict[str, str], ip_vs_table: bool, vxlan_module: bool) -> KernelSupport:
    """Decide from a kernel `config` (may be empty: not readable), whether ``/proc/net/ip_vs`` exists
    (`ip_vs_table`: IPVS loaded) and whether the vxlan module is loaded (`vxlan_module`). A module (``=m``) that is
    not loaded counts for vxlan (the engine loads it when it makes an overlay), not for IPVS (its table is what
    the engine checks)."""
    vxlan = config.get("CONFIG_VXLAN") in ("y", "m") or vxlan_module
    ip_vs = ip_vs_table or config.get("CONFIG_IP_VS") == "y"
    said = (f"CONFIG_VXLAN={config.get('CONFIG_VXLAN', 'unset')}, CONFIG_IP_VS={config.get('CONFIG_IP_VS', 'unset')}"
            if config else "no kernel config readable")
    return KernelSupport(vxlan, ip_vs, f"{said}; /proc/net/ip_vs {'present' if ip_vs_table else 'absent'}")


def kernel_support() -> KernelSupport:
    """This kernel's answer (``/proc/config.gz`` when the kernel exposes it)."""
    config = run(["zcat", "/proc/config.gz"], 30, check=False) if Path("/proc/config.gz").exists() else None
    return support_from(parse_kernel_config(config.stdout) if config and config.exit_code == 0 else {},
                        Path("/proc/net/ip_vs").exists(), Path("/sys/module/vxlan").exists())


# ---------------------------------------------------------------- nodes and the cluster


@dataclass(frozen=True)
class Cluster:
    """A swarm of `nodes` (the first is the manager) on the LAN `lan`; `support` says which networking modes this
    kernel allows; `heartbeat_s` is the dispatcher's heartbeat period the swarm was made with."""

    nodes: tuple[Node, ...]
    lan: netns.Lan
    support: KernelSupport
    heartbeat_s: float

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def docker(self, args: Sequence[str], timeout: float = CLI_TIMEOUT_S, *, check: bool = True) -> Completed:
        """Run the docker CLI against the manager."""
        return self.manager.docker(args, timeout, check=check)

    def node_name(self, node_id: str) -> str:
        """Our name of the node with swarm id `node_id` ('' when none: a task not yet placed)."""
        return next((n.name for n in self.nodes if n.node_id == node_id), "")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def load_images(self, references: Sequence[str], nodes: Sequence[Node] = ()) -> None:
        """Copy images of the host engine to `nodes` (every node when empty)."""
        daemons.load_images(references, nodes or self.nodes)

    @property
    def manager_namespace(self) -> netns.Neighbour:
        """The manager's namespace on the LAN (where a registry for the nodes runs)."""
        return self.lan.members[0]

    def push_images(self, lan_registry: registry.Registry, references: Sequence[str]) -> dict[str, str]:
        """Put images of the host engine into `lan_registry` (one on the nodes' LAN) as a build machine would: the
        manager loads them, tags each with the registry's address and pushes it. The host's engine cannot push
        there itself (it speaks plain HTTP to 127.0.0.1 only, and its configuration is not ours to change).
        Returns each reference's name in the registry."""
        daemons.load_images(references, [self.manager])
        named = {}
        for reference in references:
            repository, _, tag = reference.rpartition(":")
            named[reference] = lan_registry.reference(repository, tag)
            self.docker(["tag", reference, named[reference]])
            self.docker(["push", "--quiet", named[reference]], 120)
        return named

    def heartbeat_period_s(self) -> float:
        """The dispatcher heartbeat period the manager holds now, s."""
        answer = self.docker(["info", "--format",  # json: nanoseconds (the plain template prints "1s")
                              "{{json .Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}"])
        return int(answer.stdout.strip()) / 1e9

    def set_heartbeat(self, heartbeat_s: float) -> HeartbeatChange:
        """Make `heartbeat_s` the dispatcher heartbeat; returns when the change was asked and from when every node
        heartbeats under it (:meth:`HeartbeatChange.wait` waits for that), so that other work can run meanwhile.

        A node learns a new period only in the answer to its next heartbeat, which it sends after the old period;
        until then the manager still allows it GRACE_PERIODS old periods. A node killed before the change is in
        force would be seen down on the old period's clock."""
        previous_s = self.heartbeat_period_s()
        asked_s = time.perf_counter()
        if previous_s == heartbeat_s:
            return HeartbeatChange(heartbeat_s, asked_s, asked_s)
        self.docker(["swarm", "update", "--dispatcher-heartbeat", f"{heartbeat_s}s"])
        return HeartbeatChange(heartbeat_s, asked_s,
                               time.perf_counter() + previous_s + HEARTBEAT_EPSILON_S + HEARTBEAT_RPC_S)


@dataclass(frozen=True)
class HeartbeatChange:
    """A dispatcher heartbeat `heartbeat_s` asked of the manager at `asked_s` and in force on every node from
    `in_force_s` (both ``time.perf_counter()`` seconds; the same when it was in force already)."""

    heartbeat_s: float
    asked_s: float
    in_force_s: float

    def wait(self) -> float:
        """Return once every node heartbeats under it: the seconds since it was asked, 0 when it had been in force
        already."""
        if self.in_force_s == self.asked_s:
            return 0.0
        time.sleep(max(0.0, self.in_force_s - time.perf_counter()))  # the nodes' next heartbeat: a protocol's wait
        return time.perf_counter() - self.asked_s


def down_window_s(heartbeat_s: float) -> tuple[float, float]:
    """When a node killed under `heartbeat_s` should be marked down, in s after the kill: its last heartbeat came
    less than one period before the kill, and the manager waits GRACE_PERIODS of that period after it; the period
    is within HEARTBEAT_EPSILON_S of `heartbeat_s` either way."""
    return ((GRACE_PERIODS - 1) * (heartbeat_s - HEARTBEAT_EPSILON_S),
            GRACE_PERIODS * (heartbeat_s + HEARTBEAT_EPSILON_S) + HEARTBEAT_RPC_S)


def validate(count: int, heartbeat_s: float | None, available_mib: int) -> None:
    """BadNodes for a node count :func:`labkit.instruments.daemons.validate` refuses, BadCluster for a heartbeat
    that is not a number of seconds from 0.1 to 60."""
    daemons.validate(count, available_mib)
    if heartbeat_s is not None and (isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, (int, float))
                                    or not 0.1 <= heartbeat_s <= 60):
        raise BadCluster(f"heartbeat_s={heartbeat_s!r}: need seconds from 0.1 to 60, or None for the default (5 s).")


@contextmanager
def cluster(run_id: str, count: int = 3, *, heartbeat_s: float | None = None) -> Iterator[Cluster]:
    """A swarm of `count` nodes for run `run_id` (one manager, the rest workers), with the dispatcher heartbeat
    `heartbeat_s` (None: the engine's default, 5 s); removed when the block ends, whatever ends it."""
    validate(count, heartbeat_s, daemons.available_mib())
    with ExitStack() as made:
        started = made.enter_context(daemons.engines(run_id, count))
        made.callback(_leave, started.nodes)  # runs before the daemons stop
        joined = _form_swarm(list(started.nodes), heartbeat_s)
        yield Cluster(tuple(joined), started.lan, kernel_support(), heartbeat_s or DEFAULT_HEARTBEAT_S)


def _form_swarm(nodes: list[Node], heartbeat_s: float | None) -> list[Node]:
    manager = nodes[0]
    init = ["swarm", "init", "--advertise-addr", manager.address, "--listen-addr", f"{manager.address}:{SWARM_PORT}"]
    manager.docker(init + (["--dispatcher-heartbeat", f"{heartbeat_s}s"] if heartbeat_s else []))
    token = manager.docker(["swarm", "join-token", "-q", "worker"]).stdout.strip()
    for worker in nodes[1:]:
        worker.docker(["swarm", "join", "--token", token, "--advertise-addr", worker.address,
                       f"{manager.address}:{SWARM_PORT}"], 90)
    return [Node(n.name, n.address, n.namespace, n.root, n.runtime,
                 n.docker(["info", "--format", "{{.Swarm.NodeID}}"]).stdout.strip()) for n in nodes]


def _leave(nodes: Sequence[Node]) -> None:
    """Each node leaves the swarm: the workers together (each leave takes about a second), then the manager
    (bounded; a node already dead is skipped). A daemon still in a swarm takes seconds more to end on SIGTERM."""
    def leave(node: Node) -> None:
        if node.pid() is not None:
            node.docker(["swarm", "leave", "--force"], 30, check=False)

    run_together(*(partial(leave, node) for node in nodes[1:]))
    leave(nodes[0])
