"""What every section of notebook 08 stands on: parameter checks, where a load client runs, containers, networks,
the guards of a port published on every address, and the neighbour's own server."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import assets
from labkit.core.session import LabSession
from labkit.errors import BadParameter, NotPrepared
from labkit.instruments import firewall, images, loadclient, measure, netns, procfs, shell, undo
from labkit.instruments.containers import NO_DNS
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.ports import EVERY_ADDRESS, port_free
from labkit.instruments.shell import run
from labkit.labs.networking.declaration import (
    CONTAINER_PORT,
    LIMITS,
    LOADCLIENT,
    MAX_BULK_MIB,
    NEIGHBOUR_PORT,
    PORTS_USED,
    PROBE_TIMEOUT_S,
    READY_TIMEOUT_S,
)

NEIGHBOUR_SERVER = "networking/neighbour_server.py"  # http.server without its reverse lookup of the address

# ---------------------------------------------------------------- parameters, checked before anything starts


def check_port(port: object, count: int = PORTS_USED, *, live: bool = True) -> int:
    """`port` when it and the `count` - 1 ports above it are unprivileged TCP ports and (when `live`) free here;
    BadParameter saying which one is in use or out of range."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535 - count + 1:
        raise BadParameter(f"port={port!r}: need a whole number from 1024 to {65535 - count + 1}.",
                           f"The notebook publishes ports port … port+{count - 1}; e.g. port=18080.")
    busy = [p for p in range(port, port + count) if live and not port_free(p, EVERY_ADDRESS)]
    if busy:
        raise BadParameter(f"port={port}: port {busy[0]} is in use on this host.",
                           f"Choose another start, e.g. port={free_port_above(port + count, count)}.")
    return port


def free_port_above(start: int, count: int) -> int:
    """The first port from `start` with `count` free ports in a row (for an error's suggestion)."""
    for first in range(start, 65535 - count):
        if all(port_free(p, EVERY_ADDRESS) for p in range(first, first + count)):
            return first
    return 0


def check_load(rounds: object, requests: object, concurrency: object, bulk_mib: object) -> None:
    """BadParameter for zero rounds or requests, a concurrency above the request count, or a bulk size out of
    1 … MAX_BULK_MIB MiB."""
    measure.validate_repeats(rounds, names=("rounds", "warmup"))  # type: ignore[arg-type]
    try:
        loadclient.validate("http://127.0.0.1/", requests, concurrency, 1.0)  # type: ignore[arg-type]
    except loadclient.BadLoad as exc:
        raise BadParameter(str(exc).replace("count=", "requests="), "E.g. requests=100, concurrency=4.") from exc
    if not isinstance(bulk_mib, int) or isinstance(bulk_mib, bool) or not 1 <= bulk_mib <= MAX_BULK_MIB:
        raise BadParameter(f"bulk_mib={bulk_mib!r}: need a whole number of MiB from 1 to {MAX_BULK_MIB}.",
                           "E.g. bulk_mib=16.")


# ---------------------------------------------------------------- shared pieces


@dataclass(frozen=True)
class Client:
    """Where a load client runs: an argv prefix that starts Python there, and the client file's path there."""

    prefix: tuple[str, ...]
    script: str

    def load(self, url: str, count: int, concurrency: int, time_limit_s: float, *, bulk: bool = False) -> \
            loadclient.Load:
        argv = [*self.prefix, self.script, url, "--count", str(count), "--concurrency", str(concurrency),
                "--time-limit", str(time_limit_s), *(["--bulk"] if bulk else [])]
        return loadclient.parse_output(run(argv, time_limit_s + 60).stdout)

    def probe(self, url: str) -> loadclient.Request:
        """One GET with a short time limit: reached or not, as data."""
        return self.load(url, 1, 1, PROBE_TIMEOUT_S).requests[0]


HOST_CLIENT = Client((sys.executable,), str(LOADCLIENT))


def neighbour_client(neighbour: netns.Neighbour) -> Client:
    return Client(tuple(neighbour.argv([sys.executable])), str(LOADCLIENT))


def base_tag(lab: LabSession, base: str) -> str:
    return images.require_base(lab.engine, base).tag


def docker_run_argv(scope: Scope, stem: str, image: str, command: Sequence[str], options: Sequence[str] = (), *,
                     detach: bool = True) -> list[str]:
    """``docker run`` of `command` in `image`, labelled, under LIMITS, no outside DNS, never pulling."""
    how = ["-d", "--name", scope.name(stem)] if detach else ["--rm"]
    return [docker_cli(), "run", *how, "--pull=never", *scope.label_args(), "--dns", NO_DNS, *LIMITS.cli_args(),
            *options, image, *command]


def start_container(scope: Scope, stem: str, image: str, command: Sequence[str], options: Sequence[str] = ()) -> str:
    """Start a detached container; return its name (the scope removes it)."""
    run(docker_run_argv(scope, stem, image, command, options), 120)
    return scope.name(stem)


def inspect_container(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(run([docker_cli(), "inspect", name], 60).stdout)[0]
    return found


def container_address(name: str, network: str = "") -> str:
    """The container's IPv4 address on `network` (its only network when '')."""
    networks = inspect_container(name)["NetworkSettings"]["Networks"]
    return str(networks[network]["IPAddress"] if network else next(iter(networks.values()))["IPAddress"])


def published_port(name: str) -> int | None:
    """The host port published for the container's port 80, or None when none is."""
    bindings = (inspect_container(name)["NetworkSettings"]["Ports"] or {}).get(f"{CONTAINER_PORT}/tcp") or []
    return int(bindings[0]["HostPort"]) if bindings else None


def wait_ready(url: str, client: Client = HOST_CLIENT) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        answer = client.probe(url)
        if not answer.error:
            return
        if time.monotonic() > deadline:
            raise NotPrepared(f"the server at {url} did not answer within {READY_TIMEOUT_S:g} s: {answer.error}",
                              "Read the container's `docker logs`; the busybox base needs its httpd applet.")
        time.sleep(0.2)  # polling a server that is starting


def make_network(scope: Scope, stem: str, *options: str) -> str:
    name = scope.name(stem)
    run([docker_cli(), "network", "create", *scope.label_args(), *options, name], 60)
    return name


def _outward_interfaces() -> list[str]:
    """The interfaces this host's default routes leave by (where traffic from other machines comes in)."""
    routes = json.loads(run(["ip", "-j", "route", "show", "default"], 30).stdout or "[]")
    routes += json.loads(run(["ip", "-j", "-6", "route", "show", "default"], 30).stdout or "[]")
    return sorted({str(r["dev"]) for r in routes if "dev" in r})


def guard_outward(stack: ExitStack, run_id: str, fixed_ports: range) -> None:
    """Before anything is published on every address: on the interfaces other machines reach this host by,
    DOCKER-USER drops new connections to a container's port 80 (the DNAT path) and ip6tables INPUT drops new
    connections to `fixed_ports` and to the ephemeral range (docker-proxy listens on ``::`` too), for the block.
    Put up first, so that there is no moment in which the run's ports are open beyond this machine."""
    low, high = procfs.ephemeral_ports()
    new = ["-m", "conntrack", "--ctstate", "NEW"]
    for device in _outward_interfaces():
        stack.enter_context(firewall.rule(run_id, "DOCKER-USER", [
            "-i", device, "-p", "tcp", "--dport", str(CONTAINER_PORT), *new, "-j", "DROP"]))
        for ports in (f"{fixed_ports.start}:{fixed_ports.stop - 1}", f"{low}:{high}"):
            stack.enter_context(firewall.rule(run_id, "INPUT", [
                "-i", device, "-p", "tcp", "--dport", ports, *new, "-j", "DROP"], program="ip6tables"))


@contextmanager
def neighbour_server(neighbour: netns.Neighbour) -> Iterator[Path]:
    """Python's http.server on the neighbour's address (:data:`NEIGHBOUR_SERVER`), for the block; yields its log
    (one line per request, starting with the client's address as the server saw it)."""
    with undo.temporary_folder("labkit-neighbour-") as folder:
        root, log_path = Path(folder) / "www", Path(folder) / "server.log"
        root.mkdir()
        (root / "index.html").write_text("neighbour\n")
        with log_path.open("w") as log_file:
            server = neighbour.spawn([sys.executable, str(assets.FOLDER / NEIGHBOUR_SERVER), neighbour.address,
                                      str(NEIGHBOUR_PORT), str(root)],
                                     stdout=log_file, stderr=log_file, stdin=shell.DEVNULL)
            try:
                wait_ready(f"http://{neighbour.address}:{NEIGHBOUR_PORT}/", neighbour_client(neighbour))
                yield log_path
            finally:
                server.kill()
                server.wait(10)


