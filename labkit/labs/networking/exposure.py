"""Section 1 of notebook 08: who can reach a published port, from the host and from the neighbour, with and
without firewall rules."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import firewall, netns, procfs
from labkit.labs.networking.declaration import CONTAINER_PORT, LAB, SERVER_BASE, httpd_script
from labkit.labs.networking.rig import (
    HOST_CLIENT,
    Client,
    base_tag,
    check_port,
    container_address,
    guard_outward,
    neighbour_client,
    published_port,
    start_container,
    wait_ready,
)

# ---------------------------------------------------------------- 1. exposure


MODES = {  # how the chapter (and Docker) publish port 80, as docker run options; {port} is the host port
    "-p PORT:80": ["-p", "{port}:80"],
    "-p 127.0.0.1:PORT:80": ["-p", "127.0.0.1:{port}:80"],
    "EXPOSE 80 alone": ["--expose", "80"],
    "-P (EXPOSE 80)": ["--expose", "80", "-P"],
}
NO_RULE, INPUT_RULE, DOCKER_USER_RULE = "none", "INPUT: drop the neighbour", "DOCKER-USER: drop the neighbour"


@dataclass(frozen=True)
class ExposureResult:
    """`probes`: mode, firewall, client (host / neighbour), target (what it connected to), reachable, status,
    error; `listening`: mode, family, address, port of the host's listening sockets for that mode's host port."""

    probes: pd.DataFrame
    listening: pd.DataFrame

    def reached(self, mode: str, client: str, target: str, rule: str = NO_RULE) -> bool:
        rows = rows_where(self.probes, mode=mode, client=client, target=target, firewall=rule)
        return bool(rows["reachable"].any())

    @property
    def table(self) -> pd.DataFrame:
        """mode (and rule) × client → target: 'reached' or 'no'."""
        shown = self.probes.assign(
            row=self.probes["mode"] + self.probes["firewall"].map(lambda r: "" if r == NO_RULE else f" + {r}"),
            column=self.probes["client"] + " → " + self.probes["target"],
            cell=self.probes["reachable"].map({True: "reached", False: "no"}))
        return shown.pivot(index="row", columns="column", values="cell").loc[list(dict.fromkeys(shown["row"]))]

    def sockets(self, mode: str) -> str:
        found = self.listening[self.listening["mode"] == mode]
        return ", ".join(f"{r.address}:{r.port} ({r.family})" for r in found.itertuples()) or "none"

    def conclusion(self) -> str:
        loop, every = "-p 127.0.0.1:PORT:80", "-p PORT:80"
        return (
            f"`{every}` listens on {self.sockets(every)}; the neighbour reached it through this host's address: "
            f"**{self.reached(every, 'neighbour', 'host address:PORT')}**. `{loop}` listens on "
            f"{self.sockets(loop)}; through the host's address the neighbour reached it: "
            f"**{self.reached(loop, 'neighbour', 'host address:PORT')}**; routing straight to the container's "
            f"address: **{self.reached(loop, 'neighbour', 'container address:80')}**. `EXPOSE` alone opens these "
            f"host sockets: {self.sockets('EXPOSE 80 alone')}; `-P` picks {self.sockets('-P (EXPOSE 80)')}. With an "
            f"INPUT rule dropping the neighbour, the neighbour still reached the published port: "
            f"**{self.reached(every, 'neighbour', 'host address:PORT', INPUT_RULE)}**; with the same drop in "
            f"DOCKER-USER it reached the port: "
            f"**{self.reached(every, 'neighbour', 'host address:PORT', DOCKER_USER_RULE)}**, and the "
            f"loopback-published container by its address: "
            f"**{self.reached(loop, 'neighbour', 'container address:80', DOCKER_USER_RULE)}**.")


def _probe_rows(mode: str, rule: str, neighbour: netns.Neighbour, host_port: int | None,
                container_address: str) -> list[dict[str, Any]]:
    targets = [("host", "127.0.0.1:PORT", HOST_CLIENT, f"127.0.0.1:{host_port}"),
               ("neighbour", "host address:PORT", neighbour_client(neighbour),
                f"{neighbour.host_address}:{host_port}"),
               ("neighbour", "container address:80", neighbour_client(neighbour),
                f"{container_address}:{CONTAINER_PORT}")]

    def probe(client_name: str, target: str, client: Client, address: str) -> dict[str, Any]:
        if host_port is None and "PORT" in target:
            return {"mode": mode, "firewall": rule, "client": client_name, "target": target, "reachable": False,
                    "status": 0, "error": "no host port is published"}
        answer = client.probe(f"http://{address}/")
        return {"mode": mode, "firewall": rule, "client": client_name, "target": target,
                "reachable": not answer.error, "status": answer.status, "error": answer.error}

    # At once: a dropped probe waits out its whole time limit, and the three are independent connections.
    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(lambda t: probe(*t), targets))


def _exposure(lab: LabSession, port: int) -> dict[str, pd.DataFrame]:
    probes: list[dict[str, Any]] = []
    listening: list[dict[str, Any]] = []
    image = base_tag(lab, SERVER_BASE)
    # The guards go up before the first container is published and come down after the last is removed.
    with ExitStack() as guards, lab.scope() as scope, netns.neighbour(lab.run_id) as neighbour:
        guard_outward(guards, lab.run_id, range(port, port + len(MODES)))
        started = {}
        for number, (mode, options) in enumerate(MODES.items()):
            name = start_container(scope, f"exposure{number}", image, ["sh", "-c", httpd_script(1)],
                          [o.format(port=port + number) for o in options])
            address, host_port = container_address(name), published_port(name)
            wait_ready(f"http://{address}:{CONTAINER_PORT}/")
            started[mode] = (address, host_port)
            listening += [{"mode": mode, "family": family, "address": s.local_address, "port": s.local_port}
                          for family, s in procfs.listening() if s.local_port == host_port]
            probes += _probe_rows(mode, NO_RULE, neighbour, host_port, address)
        from_neighbour = ["-s", f"{neighbour.address}/32", "-p", "tcp"]
        every, loop = "-p PORT:80", "-p 127.0.0.1:PORT:80"
        with firewall.rule(lab.run_id, "INPUT", [*from_neighbour, "--dport", str(started[every][1]), "-j", "DROP"]):
            probes += _probe_rows(every, INPUT_RULE, neighbour, started[every][1], started[every][0])
        for mode in (every, loop):
            address, host_port = started[mode]
            rule = [*from_neighbour, "-d", f"{address}/32", "--dport", str(CONTAINER_PORT), "-j", "DROP"]
            with firewall.rule(lab.run_id, "DOCKER-USER", rule):
                probes += _probe_rows(mode, DOCKER_USER_RULE, neighbour, host_port, address)
    return {"exposure": pd.DataFrame(probes, columns=LAB.tables["exposure"]),
            "listening": pd.DataFrame(listening, columns=LAB.tables["listening"])}


def run_exposure(lab: LabSession, port: int) -> ExposureResult:
    """Publish busybox httpd four ways (from host port `port` upwards) and probe each from the host and from a
    neighbour namespace, with no rule, with an INPUT rule and with a DOCKER-USER rule dropping the neighbour."""
    check_port(port, live=False)
    if lab.live:
        lab.require_root("a network namespace and firewall rules")
        check_port(port)
    tables = lab.record("exposure", ("exposure", "listening"), lambda: _exposure(lab, port), port=port)
    return ExposureResult(tables["exposure"], tables["listening"])


