"""Extra Docker daemons on this machine, each a host of its own, in its own network namespace on one LAN.

Each node is a ``dockerd`` started with ``nsenter --net`` into a neighbour namespace of :func:`labkit.instruments.
netns.lan` (one host bridge, a narrow FORWARD rule so the members reach each other). ``nsenter`` enters the network
namespace only: ``ip netns exec`` would also remount ``/sys`` for the namespace, hiding the cgroup mounts below it,
and dockerd then refuses to start ("Devices cgroup isn't mounted"). Each node has its own data-root, exec-root
(its managed containerd's socket and state live there), pidfile and unix socket, all under one folder of labkit's
state, and its containers' cgroups below ``labkit/<run>/engines-<id>/`` (so ``labkit clean``'s cgroup sweep finds
them too). The daemons keep ``--iptables`` on: their rules are written in their own namespace, which is deleted
with them, so they never touch the host engine's rules. Notebook 09 moves a volume to one (another host);
notebook 13 makes a swarm of several (:mod:`labkit.instruments.swarm`); the host's own engine joins nothing.

Images reach the nodes by ``docker save`` on the host engine and ``docker load`` on each node (:func:`load_images`;
the host's registries on 127.0.0.1 are not reachable from a namespace without a host-wide port forward), or from a
registry on the nodes' own LAN (:func:`labkit.instruments.registry.running` inside a node's namespace): each daemon
speaks plain HTTP to registries on its LAN's subnet, and to no other.

Made and removed by :func:`engines`: the daemons stop (SIGTERM, then SIGKILL after a bound; found by the folders in
their arguments, so one whose start was interrupted is found too), whatever still runs in their cgroups is killed,
every mount under their folders is unmounted, the folders, namespaces, bridge and rule removed — also on an error,
Ctrl-C or SIGTERM. Every host-wide change is journalled with :mod:`labkit.instruments.undo` before it is made, so a
SIGKILLed maker's daemons are removed by the next labkit command, and :func:`sweep` (at the end of each ``labkit
run``, and in ``labkit clean``) removes any node folder still left. Bad input is refused before anything starts.
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
POLL_S = 0.1
RUNTIME_PARENT = "/run/labkit-engines"  # short paths for the nodes' sockets (see Node)


class BadNodes(ValueError):
    """Daemons the instrument refuses before anything starts (the message names the fix)."""


@dataclass(frozen=True)
class Node:
    """One daemon, a node: its `name`, its `address` on the LAN, its `namespace`, the folder `root` holding its
    data-root and log, the short folder `runtime` under /run holding its exec-root, pidfile and socket (a unix
    socket's path is at most 107 bytes, and containerd's lives in the exec-root), and its swarm `node_id` (empty
    unless it joined a swarm: :mod:`labkit.instruments.swarm`)."""

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

    @property
    def cli(self) -> list[str]:
        """The docker CLI's command line up to its arguments, speaking to this node's daemon."""
        return [docker_cli(), "-H", f"unix://{self.socket}"]

    def docker(self, args: Sequence[str], timeout: float = CLI_TIMEOUT_S, *, check: bool = True) -> Completed:
        """Run the docker CLI against this node's daemon."""
        return run([*self.cli, *args], timeout, check=check)

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
class Engines:
    """The running `nodes`, on the LAN `lan`."""

    nodes: tuple[Node, ...]
    lan: netns.Lan


def validate(count: int, available_mib: int) -> None:
    """BadNodes for a node count outside MIN..MAX_NODES, or more nodes than `available_mib` holds at
    NODE_MEMORY_MIB each."""
    if not isinstance(count, int) or isinstance(count, bool) or not MIN_NODES <= count <= MAX_NODES:
        raise BadNodes(f"nodes={count!r}: need a whole number from {MIN_NODES} to {MAX_NODES}.")
    if count * NODE_MEMORY_MIB > available_mib:
        raise BadNodes(f"nodes={count}: {count} × {NODE_MEMORY_MIB} MiB is more than the "
                       f"{available_mib} MiB this machine has available. Use at most "
                       f"{available_mib // NODE_MEMORY_MIB} nodes, or free memory first.")


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


def load_images(references: Sequence[str], nodes: Sequence[Node]) -> None:
    """Copy images of the host engine to `nodes`: one ``docker save`` here (a layer the images share is written
    once), then ``docker load`` on every node at once."""
    tarball = Path(nodes[0].root).parent / f"images-{uuid.uuid4().hex[:8]}.tar"
    loads: list[tuple[list[str], shell.Process[str]]] = []
    try:
        run([docker_cli(), "save", "-o", str(tarball), *references], 300)
        for node in nodes:
            argv = [*node.cli, "load", "-q", "-i", str(tarball)]
            loads.append((argv, shell.spawn(argv, stdout=shell.PIPE, stderr=shell.PIPE, stdin=shell.DEVNULL)))
        for argv, process in loads:
            out, err = process.communicate(timeout=300)
            if process.returncode != 0:
                raise CommandError(argv, process.returncode, out, err, hint="a node could not load the images")
    finally:
        for _, process in loads:
            if process.poll() is None:
                process.kill()
                process.wait()
        tarball.unlink(missing_ok=True)


def _unmount_below(folder: str) -> None:
    """Unmount (lazily) every mount at or below `folder`, deepest first: overlays, the netns and shm mounts a
    daemon leaves when it is killed; without this, removing the folder would reach into them."""
    prefix = folder.rstrip("/") + "/"
    below = [m.mount_point for m in procfs.read_mountinfo() if m.mount_point.startswith(prefix)]
    for point in sorted(set(below), key=lambda p: -p.count("/")):
        run(["umount", "-l", point], 30, check=False)


def end_processes(folders: Sequence[str]) -> None:
    """SIGTERM every process naming `folders` (the daemons, their containerd and shims: found by their arguments,
    so a daemon whose maker lost track of it is found too), SIGKILL those left after STOP_TIMEOUT_S, and wait
    (bounded) until none is left: a daemon still alive would make its folders again after they were removed."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        signalled: set[int] = set()
        empty_scans = 0
        deadline = time.monotonic() + STOP_TIMEOUT_S
        # Done after two empty scans a poll apart: a process in the middle of its exec has no arguments yet (its
        # maker already saw the exec succeed), and shows them by the second scan.
        while empty_scans < 2 and time.monotonic() < deadline:
            found = set(procfs.naming(folders))
            for pid in found - signalled:
                with suppress(ProcessLookupError):
                    os.kill(pid, signum)
            signalled |= found
            empty_scans = 0 if found else empty_scans + 1
            time.sleep(POLL_S)  # waiting for the processes to exit, bounded


def remove_nodes(detail: dict[str, Any]) -> None:
    """Undo the daemons of :func:`engines` (idempotent): end every process naming its `detail["folders"]`, kill
    and remove its containers' cgroups (`detail["cgroup"]`), then remove the folders (:func:`_remove_folders`)."""
    folders = detail["folders"]
    end_processes(folders)
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
    for parent in (RUNTIME_PARENT, state_parent()):  # the shared parents go with their last nodes
        with suppress(OSError):
            os.rmdir(parent)
    left = [folder for folder in folders if os.path.lexists(folder)]
    if left:
        raise OSError(f"could not remove {', '.join(left)}: see `findmnt -R {left[0]}`, then run `labkit clean`.")


def state_parent() -> Path:
    """The folder of every set of nodes' state folder (``<run>-<id>``)."""
    return paths.state_dir() / "engines"


def sweep(run_id: str | None = None) -> list[str]:
    """Remove the nodes of run `run_id` (every run when None) that a killed maker left: their processes,
    cgroups, mounts and folders; what went. A set of nodes' state folder is ``<run>-<id>``, its runtime folder
    ``RUNTIME_PARENT/<id>``."""
    removed = []
    pattern = f"{run_id}-*" if run_id else "*"
    for folder in sorted(state_parent().glob(pattern)) if state_parent().is_dir() else []:
        run, _, short = folder.name.rpartition("-")
        remove_nodes({"folders": [str(folder), str(Path(RUNTIME_PARENT) / short)],
                      "cgroup": f"labkit/{run}/engines-{short}"})
        removed.append(f"extra engines {folder}")
    if run_id is None and Path(RUNTIME_PARENT).is_dir():  # a runtime folder whose state folder is gone
        for folder in sorted(Path(RUNTIME_PARENT).iterdir()):
            end_processes([str(folder)])
            _remove_folders([str(folder)])
            removed.append(f"extra engines' runtime folder {folder}")
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


def _dockerd_argv(node: Node, cgroup_parent: str, lan_subnet: str) -> list[str]:
    return [require_program(NSENTER), f"--net=/run/netns/{node.namespace}", require_program(DOCKERD),
            "--data-root", str(Path(node.root) / "data"), "--exec-root", str(Path(node.runtime) / "exec"),
            "--pidfile", str(node.pidfile), "--insecure-registry", lan_subnet,
            "--host", f"unix://{node.socket}", "--cgroup-parent", f"/{cgroup_parent}", "--log-level", "warn"]


@contextmanager
def engines(run_id: str, count: int = 1) -> Iterator[Engines]:
    """`count` daemons for run `run_id`, each answering on its socket; removed when the block ends, whatever ends
    it."""
    validate(count, available_mib())
    for program in (DOCKERD, NSENTER, "ip", "iptables", "umount"):
        require_program(program)
    short = uuid.uuid4().hex[:8]
    folder = state_parent() / f"{run_id}-{short}"
    runtime = Path(RUNTIME_PARENT) / short
    cgroup = f"labkit/{run_id}/engines-{short}"
    with ExitStack() as made:
        lan = made.enter_context(netns.lan(run_id, count))
        processes: list[shell.Process[str]] = []
        made.callback(_reap, processes)  # after remove_nodes ended the daemons: collect their exit status
        made.enter_context(undo.recorded(f"{count} docker daemons under {folder} and {runtime}", remove_nodes,
                                         {"folders": [str(folder), str(runtime)], "cgroup": cgroup}))
        nodes = [Node(f"node{i + 1}", member.address, member.name, str(folder / f"node{i + 1}"),
                      str(runtime / f"n{i + 1}")) for i, member in enumerate(lan.members)]
        deadline = time.monotonic() + START_TIMEOUT_S
        logs = []
        try:
            for i, node in enumerate(nodes):
                Path(node.root).mkdir(parents=True)
                Path(node.runtime).mkdir(parents=True)
                logs.append((Path(node.root) / "dockerd.log").open("w"))
                argv = _dockerd_argv(node, f"{cgroup}/node{i + 1}", lan.subnet)
                processes.append(shell.spawn(argv, stdout=logs[-1], stderr=shell.STDOUT, stdin=shell.DEVNULL))
            for node, process in zip(nodes, processes, strict=True):
                _wait_answers(node, process, deadline)
        finally:
            for log_file in logs:
                log_file.close()
        yield Engines(tuple(nodes), lan)


def _reap(processes: list[shell.Process[str]]) -> None:
    for process in processes:
        with suppress(shell.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
