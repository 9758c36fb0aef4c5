"""A real Swarm-mode cluster on one machine: extra Docker daemons, each in its own network namespace on one LAN.

Each node is a ``dockerd`` started with ``nsenter --net`` into a neighbour namespace of :func:`labkit.instruments.
netns.lan` (one host bridge, a narrow FORWARD rule so the members reach each other). ``nsenter`` enters the network
namespace only: ``ip netns exec`` would also remount ``/sys`` for the namespace, hiding the cgroup mounts below it,
and dockerd then refuses to start ("Devices cgroup isn't mounted"). Each node has its own data-root, exec-root
(its managed containerd's socket and state live there), pidfile and unix socket, all under one folder of labkit's
state, and its containers' cgroups below ``labkit/<run>/swarm-<id>/`` (so ``labkit clean``'s cgroup sweep finds
them too). The daemons keep ``--iptables`` on: their rules are written in their own namespace, which is deleted
with them, so they never touch the host engine's rules. The host's own engine never joins the swarm.

Images reach the nodes by ``docker save`` on the host engine and ``docker load`` on each node (no registry is
reachable from a namespace without a host-wide port forward), with ``docker stack deploy --resolve-image never``.

Made and removed by :func:`cluster`: nodes leave, daemons stop (SIGTERM, then SIGKILL after a bound; found by
the folders in their arguments, so one whose start was interrupted is found too), whatever still runs in their
cgroups is killed, every mount under their folders is unmounted, the folders, namespaces, bridge and rule removed
— also on an error, Ctrl-C or SIGTERM. Every host-wide change is journalled with :mod:`labkit.instruments.undo`
before it is made, so a SIGKILLed maker's cluster is removed by the next labkit command, and :func:`sweep` (at the
end of each ``labkit run``, and in ``labkit clean``) removes any cluster folder still left. Bad input is refused
before anything starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import paths
from labkit.instruments import cgroups, netns, procfs, shell, undo
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import CommandError, Completed, require_program, run

DOCKERD, NSENTER = "dockerd", "nsenter"
MIN_NODES, MAX_NODES = 1, 7
NODE_MEMORY_MIB = 400  # what a node's dockerd + containerd + a few small tasks take (measured: ~250 MiB)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0  # dockerd's own shutdown timeout for containers is 15 s
CLI_TIMEOUT_S = 60.0
SWARM_PORT = 2377
POLL_S = 0.1
DEFAULT_HEARTBEAT_S = 5.0  # swarmkit's dispatcher heartbeat period
RUNTIME_PARENT = "/run/labkit-swarm"  # short paths for the nodes' sockets (see Node)


class BadCluster(ValueError):
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
class Node:
    """One node: its `name`, its `address` on the LAN, its `namespace`, the folder `root` holding its data-root
    and log, the short folder `runtime` under /run holding its exec-root, pidfile and socket (a unix socket's path
    is at most 107 bytes, and containerd's lives in the exec-root), and its swarm `node_id` (empty until it
    joined)."""

    name: str
    address: str
    namespace: str
    root: str
    runtime: str
    node_id: str = ""

    @property
    def socket(self) -> Path:
        return Path(self.runtime) / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return Path(self.runtime) / "dockerd.pid"

    def docker(self, args: Sequence[str], timeout: float = CLI_TIMEOUT_S, *, check: bool = True) -> Completed:
        """Run the docker CLI against this node's daemon."""
        return run([docker_cli(), "-H", f"unix://{self.socket}", *args], timeout, check=check)

    def pid(self) -> int | None:
        """The node's dockerd pid while it runs, else None."""
        return _daemon_pid(self.runtime)

    def kill(self) -> None:
        """SIGKILL the node's dockerd, as a machine that loses power (its containers stay until it is removed)."""
        pid = self.pid()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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

    def load_image(self, reference: str, nodes: Sequence[Node] = ()) -> None:
        """Copy an image of the host engine to `nodes` (every node when empty): ``docker save`` here, ``docker
        load`` there."""
        tarball = Path(self.manager.root).parent / f"image-{uuid.uuid4().hex[:8]}.tar"
        try:
            run([docker_cli(), "save", "-o", str(tarball), reference], 300)
            for node in nodes or self.nodes:
                node.docker(["load", "-i", str(tarball)], 300)
        finally:
            tarball.unlink(missing_ok=True)


def validate(count: int, heartbeat_s: float | None, available_mib: int) -> None:
    """BadCluster for a node count outside MIN..MAX_NODES, more nodes than `available_mib` holds at NODE_MEMORY_MIB
    each, or a heartbeat that is not a number of seconds from 0.1 to 60."""
    if not isinstance(count, int) or isinstance(count, bool) or not MIN_NODES <= count <= MAX_NODES:
        raise BadCluster(f"nodes={count!r}: need a whole number from {MIN_NODES} to {MAX_NODES}.")
    if count * NODE_MEMORY_MIB > available_mib:
        raise BadCluster(f"nodes={count}: {count} × {NODE_MEMORY_MIB} MiB is more than the "
                         f"{available_mib} MiB this machine has available. Use at most "
                         f"{available_mib // NODE_MEMORY_MIB} nodes, or free memory first.")
    if heartbeat_s is not None and (isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, (int, float))
                                    or not 0.1 <= heartbeat_s <= 60):
        raise BadCluster(f"heartbeat_s={heartbeat_s!r}: need seconds from 0.1 to 60, or None for the default (5 s).")


def available_mib() -> int:
    """MemAvailable of this machine, in MiB."""
    return procfs.read_meminfo()["MemAvailable"] // (1024 * 1024)


def _daemon_pid(runtime: str) -> int | None:
    """The pid in `runtime`'s pidfile while that process is a dockerd of `runtime` (a reused pid is not ours; an
    exited one, a zombie, has an empty command line)."""
    try:
        pid = int((Path(runtime) / "dockerd.pid").read_text().strip())
        return pid if any(runtime in arg for arg in procfs.cmdline(pid)) else None
    except (OSError, ValueError, procfs.ProcessGone):
        return None


def _unmount_below(folder: str) -> None:
    """Unmount (lazily) every mount at or below `folder`, deepest first: overlays, the netns and shm mounts a
    daemon leaves when it is killed; without this, removing the folder would reach into them."""
    prefix = folder.rstrip("/") + "/"
    below = [m.mount_point for m in procfs.read_mountinfo() if m.mount_point.startswith(prefix)]
    for point in sorted(set(below), key=lambda p: -p.count("/")):
        run(["umount", "-l", point], 30, check=False)


def _end_processes(folders: Sequence[str]) -> None:
    """SIGTERM every process naming `folders` (the daemons, their containerd and shims: found by their arguments,
    so a daemon whose maker lost track of it is found too), SIGKILL those left after STOP_TIMEOUT_S, and wait
    (bounded) until none is left: a daemon still alive would make its folders again after they were removed."""
    for signum, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        for pid in procfs.naming(folders):
            with suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while procfs.naming(folders) and time.monotonic() < deadline:
            time.sleep(POLL_S)  # waiting for the processes to exit, bounded


def remove_nodes(detail: dict[str, Any]) -> None:
    """Undo the daemons of :func:`cluster` (idempotent): end every process naming its `detail["folders"]`, kill
    and remove its containers' cgroups (`detail["cgroup"]`), then remove the folders (:func:`_remove_folders`)."""
    folders = detail["folders"]
    _end_processes(folders)
    with suppress(cgroups.CgroupUnavailable):
        layout = cgroups.CgroupLayout.from_system()
        cgroups.sweep(layout, prefix=detail["cgroup"])
        layout.everywhere(detail["cgroup"]).remove(prune_parents=True)  # its parents too, when nothing else is there
    _remove_folders(folders)


def _remove_folders(folders: Sequence[str]) -> None:
    """Unmount what is left below `folders` and remove them, and their shared parents once empty. Raises OSError
    when a folder could not be removed, so that its undo record stays for the next command."""
    for folder in folders:
        _unmount_below(folder)
        shutil.rmtree(folder, ignore_errors=True)
    for parent in (RUNTIME_PARENT, _state_parent()):  # the shared parents go with their last cluster
        with suppress(OSError):
            os.rmdir(parent)
    left = [folder for folder in folders if os.path.lexists(folder)]
    if left:
        raise OSError(f"could not remove {', '.join(left)}: see `findmnt -R {left[0]}`, then run `labkit clean`.")


def _state_parent() -> Path:
    return paths.state_dir() / "swarm"


def sweep(run_id: str | None = None) -> list[str]:
    """Remove the clusters of run `run_id` (every run when None) that a killed maker left: their processes,
    cgroups, mounts and folders; what went. A cluster's state folder is ``<run>-<id>``, its runtime folder
    ``RUNTIME_PARENT/<id>``."""
    removed = []
    pattern = f"{run_id}-*" if run_id else "*"
    for folder in sorted(_state_parent().glob(pattern)) if _state_parent().is_dir() else []:
        run, _, short = folder.name.rpartition("-")
        remove_nodes({"folders": [str(folder), str(Path(RUNTIME_PARENT) / short)],
                      "cgroup": f"labkit/{run}/swarm-{short}"})
        removed.append(f"swarm cluster {folder}")
    if run_id is None and Path(RUNTIME_PARENT).is_dir():  # a runtime folder whose state folder is gone
        for folder in sorted(Path(RUNTIME_PARENT).iterdir()):
            _end_processes([str(folder)])
            _remove_folders([str(folder)])
            removed.append(f"swarm runtime folder {folder}")
    return removed


def _answers(node: Node) -> bool:
    try:
        return node.docker(["version", "--format", "{{.Server.Version}}"], 10, check=False).exit_code == 0
    except CommandError:  # a daemon still starting may hold the connection past the timeout
        return False


def _wait_answers(node: Node, process: shell.Process[str], deadline: float) -> None:
    while not _answers(node):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (Path(node.root) / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise CommandError([DOCKERD], process.poll(), "", "\n".join(tail),
                               hint=f"node {node.name}'s dockerd did not answer on {node.socket}; its log is "
                                    f"{node.root}/dockerd.log.")
        time.sleep(POLL_S)  # polling for the daemon to come up, not standing in for work


# A swarm worker tries to pull a task's image before every start, even one it holds, and carries on when the pull
# fails. The nodes hold their images (Cluster.load_image) and reach no registry: each try was a DNS query to the
# host's resolver, which a node cannot reach, and its timeout delayed each task's start by about 8 s.
PREFER_OFFLINE_IMAGE = {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}


def _dockerd_argv(node: Node, cgroup_parent: str) -> list[str]:
    return [require_program(NSENTER), f"--net=/run/netns/{node.namespace}", require_program(DOCKERD),
            "--data-root", str(Path(node.root) / "data"), "--exec-root", str(Path(node.runtime) / "exec"),
            "--pidfile", str(node.pidfile),
            "--host", f"unix://{node.socket}", "--cgroup-parent", f"/{cgroup_parent}", "--log-level", "warn"]


@contextmanager
def cluster(run_id: str, count: int = 3, *, heartbeat_s: float | None = None) -> Iterator[Cluster]:
    """A swarm of `count` nodes for run `run_id` (one manager, the rest workers), with the dispatcher heartbeat
    `heartbeat_s` (None: the engine's default, 5 s); removed when the block ends, whatever ends it."""
    validate(count, heartbeat_s, available_mib())
    for program in (DOCKERD, NSENTER, "ip", "iptables", "umount"):
        require_program(program)
    short = uuid.uuid4().hex[:8]
    folder = paths.state_dir() / "swarm" / f"{run_id}-{short}"
    runtime = Path(RUNTIME_PARENT) / short
    cgroup = f"labkit/{run_id}/swarm-{short}"
    roots = [str(folder / f"node{i + 1}") for i in range(count)]
    runtimes = [str(runtime / f"n{i + 1}") for i in range(count)]
    with ExitStack() as made:
        lan = made.enter_context(netns.lan(run_id, count))
        processes: list[shell.Process[str]] = []
        made.callback(_reap, processes)  # after remove_nodes ended the daemons: collect their exit status
        made.enter_context(undo.recorded(f"{count} swarm daemons under {folder} and {runtime}", remove_nodes,
                                         {"folders": [str(folder), str(runtime)], "cgroup": cgroup}))
        nodes = [Node(f"node{i + 1}", member.address, member.name, roots[i], runtimes[i])
                 for i, member in enumerate(lan.members)]
        deadline = time.monotonic() + START_TIMEOUT_S
        logs = []
        try:
            for i, node in enumerate(nodes):
                Path(node.root).mkdir(parents=True)
                Path(node.runtime).mkdir(parents=True)
                logs.append((Path(node.root) / "dockerd.log").open("w"))
                processes.append(shell.spawn(_dockerd_argv(node, f"{cgroup}/node{i + 1}"), stdout=logs[-1],
                                             stderr=shell.STDOUT, stdin=shell.DEVNULL,
                                             env={**os.environ, **PREFER_OFFLINE_IMAGE}))
            for node, process in zip(nodes, processes, strict=True):
                _wait_answers(node, process, deadline)
        finally:
            for log_file in logs:
                log_file.close()
        made.callback(_leave, nodes)  # runs before the daemons stop
        joined = _form_swarm(nodes, heartbeat_s)
        yield Cluster(tuple(joined), lan, kernel_support(), heartbeat_s or DEFAULT_HEARTBEAT_S)


def _reap(processes: list[shell.Process[str]]) -> None:
    for process in processes:
        with suppress(shell.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)


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


def _leave(nodes: list[Node]) -> None:
    """Each node leaves the swarm, workers first (bounded; a node already dead is skipped)."""
    for node in reversed(nodes):
        if node.pid() is not None:
            node.docker(["swarm", "leave", "--force"], 30, check=False)
