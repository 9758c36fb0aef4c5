"""A neighbour host without leaving the machine: a network namespace joined to the host by a veth pair.

The namespace is "another machine on the LAN": it has its own interfaces, routes and sockets, one link to this
host, and addresses from 198.18.0.0/15 (RFC 2544's benchmarking block, never routed on the internet), a /30 the
host uses nowhere — checked against every address and route the host has, under a file lock so that two labkit
processes never pick the same one. Its default route points at the host's end of the link, as a LAN machine's
would point at a router: what it can reach through this host is what the host's forwarding and firewall allow.

Made and removed by :func:`neighbour` (a context manager); journalled with :mod:`labkit.instruments.undo` before it
is made, so that even a SIGKILL is undone by the next labkit command; named ``labkit-nb-<run>-<id>`` so that
:func:`sweep` (``labkit clean``) finds any left. Deleting the namespace deletes its end of the veth pair and with
it the host's end.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from labkit import paths
from labkit.instruments import shell, undo
from labkit.instruments.shell import CommandError, Completed, run

NAME_PREFIX = "labkit-nb-"
POOL = ipaddress.IPv4Network("198.18.0.0/15")
IP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Neighbour:
    """A neighbour namespace `name`; the host's end of its link `host_link` has `host_address`, its own end
    `link` has `address` (both in the /30 `subnet`)."""

    name: str
    host_link: str
    link: str
    host_address: str
    address: str
    subnet: str

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command` as run inside the namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, command: Sequence[str], timeout: float, *, check: bool = True) -> Completed:
        """Run `command` inside the namespace (through :func:`labkit.instruments.shell.run`)."""
        return run(self.argv(command), timeout, check=check)

    def spawn(self, command: Sequence[str], **popen_kwargs: Any) -> shell.Process[str]:
        """Start `command` inside the namespace in the background; the caller ends it."""
        return shell.spawn(self.argv(command), **popen_kwargs)


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to (all routing tables)."""
    found = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"], IP_TIMEOUT_S).stdout or "[]"):
        for address in entry.get("addr_info", []):
            found.append(ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False))
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"], IP_TIMEOUT_S).stdout or "[]"):
        destination = route.get("dst", "")
        if destination and destination != "default":
            found.append(ipaddress.IPv4Network(destination if "/" in destination else f"{destination}/32",
                                               strict=False))
    return found


def free_subnet(used: Sequence[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = POOL) -> ipaddress.IPv4Network:
    """The first /30 of `pool` that overlaps none of `used`; LookupError when every one is taken."""
    for candidate in pool.subnets(new_prefix=30):
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise LookupError(f"every /30 of {pool} is in use on this host")


def remove(detail: dict[str, Any]) -> None:
    """Undo :func:`neighbour`: kill what still runs in the namespace, delete it and the host's link (idempotent)."""
    name = detail["namespace"]
    pids = run(["ip", "netns", "pids", name], IP_TIMEOUT_S, check=False)
    for pid in pids.stdout.split() if pids.exit_code == 0 else []:
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "delete", name], IP_TIMEOUT_S, check=False)
    run(["ip", "link", "delete", detail["host_link"]], IP_TIMEOUT_S, check=False)


def exists(name: str) -> bool:
    """Whether a namespace called `name` is listed by ``ip netns``."""
    return name in names()


def names() -> list[str]:
    """Every named network namespace on the host."""
    return [line.split()[0] for line in run(["ip", "netns", "list"], IP_TIMEOUT_S).stdout.splitlines() if line]


def link_exists(link: str) -> bool:
    """Whether the host has a network interface called `link`."""
    return run(["ip", "link", "show", link], IP_TIMEOUT_S, check=False).exit_code == 0


@contextmanager
def _creation_lock() -> Iterator[None]:
    lock_path = paths.state_dir() / "netns.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def neighbour(run_id: str) -> Iterator[Neighbour]:
    """A neighbour namespace for run `run_id`, removed when the block ends (error, Ctrl-C and SIGTERM included;
    a SIGKILL leaves a journal record that the next labkit command undoes)."""
    short = uuid.uuid4().hex[:8]
    name = f"{NAME_PREFIX}{run_id}-{short}"
    host_link, link = f"lkh{short}", f"lkn{short}"  # interface names: at most 15 characters
    detail = {"namespace": name, "host_link": host_link}
    with ExitStack() as made:
        with _creation_lock():
            subnet = free_subnet(used_networks())
            host_address, address = (str(a) for a in list(subnet.hosts())[:2])
            made.enter_context(undo.recorded(f"network namespace {name} (veth {host_link}, {subnet})", remove,
                                             detail))
            run(["ip", "netns", "add", name], IP_TIMEOUT_S)
            run(["ip", "link", "add", host_link, "type", "veth", "peer", "name", link, "netns", name],
                IP_TIMEOUT_S)
            run(["ip", "addr", "add", f"{host_address}/30", "dev", host_link], IP_TIMEOUT_S)
            run(["ip", "link", "set", host_link, "up"], IP_TIMEOUT_S)
            found = Neighbour(name, host_link, link, host_address, address, str(subnet))
            for command in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{address}/30", "dev", link],
                            ["ip", "link", "set", link, "up"], ["ip", "route", "add", "default", "via", host_address]):
                found.run(command, IP_TIMEOUT_S)
        yield found


def sweep(run_id: str | None = None) -> list[str]:
    """Remove the neighbour namespaces of run `run_id` (every run's when None); return their names."""
    try:
        listed = names()
    except CommandError:  # no `ip` (iproute2) here: no namespace can have been made
        return []
    prefix = NAME_PREFIX + (f"{run_id}-" if run_id else "")
    removed = []
    for name in listed:
        if name.startswith(prefix):
            remove({"namespace": name, "host_link": f"lkh{name.rsplit('-', 1)[-1]}"})
            removed.append(name)
    return removed
