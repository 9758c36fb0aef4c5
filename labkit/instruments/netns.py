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
from labkit.instruments import firewall, shell, undo
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


def free_subnet(used: Sequence[ipaddress.IPv4Network], pool: ipaddress.IPv4Network = POOL,
                prefix: int = 30) -> ipaddress.IPv4Network:
    """The first /`prefix` (a /30 unless asked) of `pool` that overlaps none of `used`; LookupError when every one
    is taken."""
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise LookupError(f"every /{prefix} of {pool} is in use on this host")


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
    """Remove the neighbour namespaces and LAN bridges of run `run_id` (every run's when None); return their
    names."""
    try:
        listed = names()
    except CommandError:  # no `ip` (iproute2) here: no namespace can have been made
        return []
    removed = []
    for bridge in lan_bridges(run_id):
        remove_lan({"bridge": bridge, "members": []})
        removed.append(f"bridge {bridge}")
    prefix = NAME_PREFIX + (f"{run_id}-" if run_id else "")
    for name in listed:
        if name.startswith(prefix):
            remove({"namespace": name, "host_link": f"lkh{name.rsplit('-', 1)[-1]}"})
            removed.append(name)
    return removed


# ---------------------------------------------------------------- several neighbours on one LAN

BRIDGE_PREFIX = "lkb"  # interface names: at most 15 characters, so the run is in the bridge's alias
LAN_ALIAS_PREFIX = "labkit-lan-"
MAX_LAN_MEMBERS = 13  # a /28 holds 14 hosts: the host's address on the bridge and up to 13 neighbours


@dataclass(frozen=True)
class Lan:
    """Neighbour namespaces `members` on one host bridge `bridge` (the host's address on it: `host_address`, in
    `subnet`): machines on one LAN segment, each reaching the others directly and the host at its address."""

    bridge: str
    host_address: str
    subnet: str
    members: tuple[Neighbour, ...]


def remove_lan(detail: dict[str, Any]) -> None:
    """Undo :func:`lan`: remove each member namespace (what runs in it killed), then the bridge (idempotent)."""
    for member in detail["members"]:
        remove(member)
    run(["ip", "link", "delete", detail["bridge"]], IP_TIMEOUT_S, check=False)


def lan_bridges(run_id: str | None = None) -> list[str]:
    """The LAN bridges :func:`lan` made for run `run_id` (every run's when None), found by their alias."""
    wanted = LAN_ALIAS_PREFIX + (f"{run_id}-" if run_id else "")
    listed = json.loads(run(["ip", "-j", "link", "show", "type", "bridge"], IP_TIMEOUT_S).stdout or "[]")
    return [link["ifname"] for link in listed if str(link.get("ifalias", "")).startswith(wanted)]


def _forward_within(bridge: str) -> list[str]:
    """The FORWARD rule that lets the bridge's members reach each other. With ``br_netfilter`` loaded (Docker
    loads it) bridged frames pass the host's FORWARD chain, whose policy Docker sets to DROP."""
    return ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]


@contextmanager
def lan(run_id: str, count: int) -> Iterator[Lan]:
    """`count` neighbour namespaces of run `run_id` on one new host bridge, with a narrow FORWARD rule letting
    them reach each other; all removed when the block ends (error, Ctrl-C and SIGTERM included; a SIGKILL leaves
    journal records that the next labkit command undoes). ValueError for a count outside 1..MAX_LAN_MEMBERS."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_LAN_MEMBERS:
        raise ValueError(f"count={count!r}: a LAN here holds 1 to {MAX_LAN_MEMBERS} neighbours")
    short = uuid.uuid4().hex[:7]
    bridge = f"{BRIDGE_PREFIX}{short}"
    members = [{"namespace": f"{NAME_PREFIX}{run_id}-{short}{i}", "host_link": f"lkh{short}{i}"}
               for i in range(count)]
    with ExitStack() as made:
        with _creation_lock():
            subnet = free_subnet(used_networks(), prefix=28)
            host_address, *addresses = (str(a) for a in list(subnet.hosts())[:count + 1])
            made.enter_context(undo.recorded(f"LAN bridge {bridge} ({subnet}) with {count} namespaces",
                                             remove_lan, {"bridge": bridge, "members": members}))
            run(["ip", "link", "add", bridge, "type", "bridge"], IP_TIMEOUT_S)
            run(["ip", "link", "set", bridge, "alias", f"{LAN_ALIAS_PREFIX}{run_id}-{short}"], IP_TIMEOUT_S)
            run(["ip", "addr", "add", f"{host_address}/28", "dev", bridge], IP_TIMEOUT_S)
            run(["ip", "link", "set", bridge, "up"], IP_TIMEOUT_S)
            found = []
            for member, address in zip(members, addresses, strict=True):
                name, host_link, link = member["namespace"], member["host_link"], "eth0"
                run(["ip", "netns", "add", name], IP_TIMEOUT_S)
                run(["ip", "link", "add", host_link, "type", "veth", "peer", "name", link, "netns", name],
                    IP_TIMEOUT_S)
                run(["ip", "link", "set", host_link, "master", bridge, "up"], IP_TIMEOUT_S)
                neighbour_ = Neighbour(name, host_link, link, host_address, address, str(subnet))
                for command in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{address}/28", "dev", link],
                                ["ip", "link", "set", link, "up"],
                                ["ip", "route", "add", "default", "via", host_address]):
                    neighbour_.run(command, IP_TIMEOUT_S)
                found.append(neighbour_)
        made.enter_context(firewall.rule(run_id, "FORWARD", _forward_within(bridge)))
        yield Lan(bridge, host_address, str(subnet), tuple(found))
