"""Sections 2 and 3 of notebook 08: names and isolation between networks, and outbound NAT seen from the neighbour."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import loadclient, netns, procfs, shell
from labkit.instruments.containers import said
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.labs.networking.declaration import (
    CLIENT_BASE,
    CONTAINER_PORT,
    LAB,
    LOADCLIENT,
    NEIGHBOUR_PORT,
    PROBE_TIMEOUT_S,
    SERVER_BASE,
    httpd_script,
)
from labkit.labs.networking.rig import (
    base_tag,
    container_address,
    docker_run_argv,
    make_network,
    neighbour_server,
    start_container,
    wait_ready,
)

# ---------------------------------------------------------------- 2. names, isolation; 3. outbound NAT

NAMESPACE_KINDS = ("net", "pid", "mnt", "uts", "ipc", "user", "cgroup")


@dataclass(frozen=True)
class NamesResult:
    """`cases`: case, network, target, ok (reached / resolved), output; `namespaces`: kind, host_inode,
    container_inode, shared — of a ``--network host`` container."""

    cases: pd.DataFrame
    namespaces: pd.DataFrame

    def ok(self, case: str) -> bool:
        return bool(self.cases.set_index("case").loc[case, "ok"])

    def output(self, case: str) -> str:
        return str(self.cases.set_index("case").loc[case, "output"])

    @property
    def shared(self) -> list[str]:
        return self.namespaces.loc[self.namespaces["shared"], "kind"].tolist()

    @property
    def own(self) -> list[str]:
        return self.namespaces.loc[~self.namespaces["shared"], "kind"].tolist()

    def conclusion(self) -> str:
        return (f"On a user-defined network the name resolved and answered: **{self.ok(BY_NAME)}** (its resolv.conf: "
                f"`{self.output(RESOLVER)}`). On the default bridge the same request by name: "
                f"**{self.ok(BRIDGE_NAME)}** (`{self.output(BRIDGE_NAME)}`), while by address it reached the "
                f"server: **{self.ok(BRIDGE_ADDRESS)}**. From another user network, by address: "
                f"**{self.ok(OTHER_NETWORK)}**. An `--internal` network reached the neighbour: "
                f"**{self.ok(INTERNAL_OUT)}** (a user network did: **{self.ok(USER_OUT)}**). `--network none` "
                f"has the interfaces `{self.output(NONE)}`. A `--network host` container shares "
                f"{', '.join(self.shared) or 'no namespace'} with this host and has its own "
                f"{', '.join(self.own) or 'nothing'} (the ledger judges the chapter's \"skips namespacing "
                f"entirely\" once, in notebook 01: `namespaces.host_network`).")


BY_NAME, RESOLVER = "user network: by name", "user network: resolv.conf"
BRIDGE_NAME, BRIDGE_ADDRESS = "default bridge: by name", "default bridge: by address"
OTHER_NETWORK = "another user network: by address"
USER_OUT, INTERNAL_OUT = "user network → neighbour", "--internal network → neighbour"
NONE = "--network none: interfaces"


CLIENT_MOUNT = ["-v", f"{LOADCLIENT}:/loadclient.py:ro"]  # the load client, inside a container of CLIENT_BASE


def fetch_argv(url: str) -> list[str]:
    """One GET by the load client in a container (busybox wget segfaulted in the busybox base here)."""
    return ["python3", "/loadclient.py", url, "--time-limit", str(PROBE_TIMEOUT_S)]


def fetch_result(done: shell.Completed) -> tuple[bool, str]:
    """Whether the container's one GET succeeded, and what it got (or its error, or the CLI's)."""
    if done.exit_code != 0:
        return False, said(done)
    request = loadclient.parse_output(done.stdout.splitlines()[-1]).requests[0]
    return not request.error, request.error or f"HTTP {request.status}, {request.bytes} bytes"


def _names(lab: LabSession) -> dict[str, pd.DataFrame]:
    image, client_image = base_tag(lab, SERVER_BASE), base_tag(lab, CLIENT_BASE)
    rows: list[dict[str, Any]] = []
    clients: dict[str, str] = {}  # network → a client container on it, started once, probing by docker exec

    def case(name: str, network: str, target: str, command: Sequence[str]) -> None:
        if network not in clients:
            clients[network] = start_container(scope, f"client{len(clients)}", client_image, ["sleep", "600"], [
                *(["--network", network] if network else []), *CLIENT_MOUNT])
        done = run([docker_cli(), "exec", clients[network], *command], 60, check=False)
        ok, output = fetch_result(done) if command[0] == "python3" else (done.exit_code == 0, said(done))
        rows.append({"case": name, "network": network or "bridge (default)", "target": target, "ok": ok,
                     "output": output})

    with lab.scope() as scope, netns.neighbour(lab.run_id) as neighbour, neighbour_server(neighbour):
        app, other = make_network(scope, "app"), make_network(scope, "other")
        internal = make_network(scope, "internal", "--internal")
        httpd = ["sh", "-c", httpd_script(1)]
        start_container(scope, "web", image, httpd, ["--network", app, "--network-alias", "web"])
        on_bridge = start_container(scope, "bridgeweb", image, httpd)
        web_address = container_address(scope.name("web"))
        wait_ready(f"http://{web_address}:{CONTAINER_PORT}/")
        wait_ready(f"http://{container_address(on_bridge)}:{CONTAINER_PORT}/")
        outside = f"http://{neighbour.address}:{NEIGHBOUR_PORT}/"
        case(BY_NAME, app, "http://web/", fetch_argv("http://web/"))
        case(RESOLVER, app, "/etc/resolv.conf", ["grep", "^nameserver", "/etc/resolv.conf"])
        case(BRIDGE_NAME, "", f"http://{on_bridge}/", fetch_argv(f"http://{on_bridge}/"))
        case(BRIDGE_ADDRESS, "", "the server's address", fetch_argv(f"http://{container_address(on_bridge)}/"))
        case(OTHER_NETWORK, other, "web's address on app", fetch_argv(f"http://{web_address}/"))
        case(USER_OUT, app, "the neighbour's server", fetch_argv(outside))
        case(INTERNAL_OUT, internal, "the neighbour's server", fetch_argv(outside))
        case(NONE, "none", "/proc/net/dev", ["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"])
        links = run(docker_run_argv(scope, "", client_image, ["sh", "-c", "for kind in " + " ".join(NAMESPACE_KINDS)
                                                        + "; do readlink /proc/self/ns/$kind; done"],
                                     ["--network", "host"], detach=False), 60).stdout.split()
    host = procfs.namespaces("self")
    inside = dict(procfs.parse_ns_link(link) for link in links)
    namespaces = pd.DataFrame([{"kind": k, "host_inode": host[k], "container_inode": inside[k],
                                "shared": host[k] == inside[k]} for k in NAMESPACE_KINDS],
                              columns=LAB.tables["host_namespaces"])
    return {"names": pd.DataFrame(rows, columns=LAB.tables["names"]), "host_namespaces": namespaces}


def run_names(lab: LabSession) -> NamesResult:
    """Name resolution on a user network and on the default bridge, isolation between user networks, an
    ``--internal`` network's way out, ``--network none``'s interfaces and ``--network host``'s namespaces."""
    lab.require_root("a network namespace (the neighbour)")
    tables = lab.record("names", ("names", "host_namespaces"), lambda: _names(lab))
    return NamesResult(tables["names"], tables["host_namespaces"])


@dataclass(frozen=True)
class NatResult:
    """`seen`: network, container_address (its own), seen_source (the client address in the neighbour's server
    log), host_address (this host's end of the link)."""

    seen: pd.DataFrame

    @property
    def masqueraded(self) -> bool:
        return bool((self.seen["seen_source"] == self.seen["host_address"]).all()) and not self.seen.empty

    def conclusion(self) -> str:
        lines = "; ".join(f"from `{r.network}`, the container `{r.container_address}` was seen as `{r.seen_source}`"
                          for r in self.seen.itertuples())
        return (f"{lines}. This host's address on the link is `{self.seen['host_address'].iloc[0]}`: the source "
                f"was rewritten to it every time: **{self.masqueraded}**.")


def _nat(lab: LabSession) -> pd.DataFrame:
    image = base_tag(lab, CLIENT_BASE)
    rows = []
    with lab.scope() as scope, netns.neighbour(lab.run_id) as neighbour, neighbour_server(neighbour) as log_path:
        app = make_network(scope, "natapp")
        for network in ("", app):
            marker = f"/from-{network or 'bridge'}"
            fetch = shlex.join(fetch_argv(f"http://{neighbour.address}:{NEIGHBOUR_PORT}{marker}"))
            done = run(docker_run_argv(scope, "", image, ["sh", "-c", f"hostname -i && {fetch}"], [
                *(["--network", network] if network else []), *CLIENT_MOUNT], detach=False), 60, check=False)
            seen = [line.split()[0] for line in log_path.read_text().splitlines() if f"GET {marker} " in line]
            rows.append({"network": "bridge (default)" if not network else "user network",
                         "container_address": done.stdout.split()[0] if done.stdout.split() else "",
                         "seen_source": seen[0] if seen else "(no request arrived)",
                         "host_address": neighbour.host_address})
    return pd.DataFrame(rows, columns=LAB.tables["nat"])


def run_outbound_nat(lab: LabSession) -> NatResult:
    """A container (default bridge, then a user network) fetches a page from a server on the neighbour; the
    server's own log says which address the request came from."""
    lab.require_root("a network namespace (the neighbour)")
    return NatResult(lab.measure("nat", lambda: _nat(lab)))


