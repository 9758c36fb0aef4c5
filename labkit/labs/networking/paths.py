"""Section 4 of notebook 08: latency and throughput by path, interleaved rounds against the host-loopback floor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.claims import Verdict
from labkit.core.session import LabSession
from labkit.instruments import loadclient, measure, netns, shell, undo
from labkit.instruments.engine import docker_cli
from labkit.labs.networking.declaration import (
    CLIENT_BASE,
    CONTAINER_PORT,
    HOST_FASTER,
    LAB,
    LOADCLIENT,
    PORTS_USED,
    SERVER_BASE,
    httpd_script,
)
from labkit.labs.networking.rig import (
    HOST_CLIENT,
    Client,
    base_tag,
    check_load,
    check_port,
    free_port_above,
    make_network,
    neighbour_client,
    start_container,
    wait_ready,
)

# ---------------------------------------------------------------- 4. latency and throughput by path

LOOPBACK = "host loopback (floor)"
PROXY = "host → 127.0.0.1-published port (docker-proxy)"
DNAT = "neighbour → published port (DNAT)"
BY_NAME_PATH = "container → container by name"
HOST_NETWORK = "host → container on --network host"
NGINX = "host → nginx → 127.0.0.1-published port"
PATHS = (LOOPBACK, PROXY, DNAT, BY_NAME_PATH, HOST_NETWORK, NGINX)

NGINX_CONF = """worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
  server {{
    listen 127.0.0.1:{listen};
    location / {{ proxy_pass http://127.0.0.1:{upstream}; proxy_buffering off; }}
  }}
}}
"""


@dataclass(frozen=True)
class PathsResult:
    """`latency`: path, round, index, latency_s, status, bytes, error (one row per request); `throughput`: path,
    round, bytes, seconds, bytes_per_s, error (one bulk GET per path and round)."""

    latency: pd.DataFrame
    throughput: pd.DataFrame

    @property
    def failed(self) -> pd.Series:
        """True for each request that ended in an error (a replayed CSV reads an all-empty column as floats)."""
        error = self.latency["error"]
        return error.notna() & (error.astype(str) != "")

    @property
    def ok(self) -> pd.DataFrame:
        return self.latency[~self.failed]

    @property
    def ok_ms(self) -> pd.DataFrame:
        """The successful requests with their latency in milliseconds (`latency_ms`), for the plot."""
        return self.ok.assign(latency_ms=self.ok["latency_s"] * 1e3)

    def errors(self) -> pd.Series:
        return self.failed.groupby(self.latency["path"], sort=False).sum()

    def percentiles(self) -> pd.DataFrame:
        """Per path: p50, p90, p99 (ms) with 95 % order-statistic intervals, pooled over rounds; errors."""
        rows = {}
        for path, frame in self.ok.groupby("path", sort=False):
            row: dict[str, float] = {}
            for q in (0.5, 0.9, 0.99):
                estimate, low, high = loadclient.percentile_interval(frame["latency_s"].tolist(), q)
                name = f"p{round(q * 100)}"
                row.update({f"{name}_ms": estimate * 1e3, f"{name}_low_ms": low * 1e3, f"{name}_high_ms": high * 1e3})
            rows[path] = {**row, "requests": float(len(frame)), "errors": float(self.errors().get(path, 0))}
        return pd.DataFrame.from_dict(rows, orient="index")

    def round_medians(self) -> pd.DataFrame:
        """path × round: the median latency of each round's requests (s)."""
        return self.ok.groupby(["path", "round"], sort=False)["latency_s"].median().unstack("round")

    def ratio(self, path: str, to: str = LOOPBACK) -> measure.Summary:
        """`path`'s round median over `to`'s in the same round, summarised over rounds (interval of the median)."""
        medians = self.round_medians()
        return measure.summarize((medians.loc[path] / medians.loc[to]).dropna().tolist())

    def ratios(self) -> pd.DataFrame:
        rows = {path: self.ratio(path) for path in self.round_medians().index}
        return pd.DataFrame({path: {"ratio_to_loopback": s.median, "low": s.ci_low, "high": s.ci_high,
                                    "coverage": s.coverage, "rounds": s.n} for path, s in rows.items()}).T

    def throughput_mib_s(self) -> pd.DataFrame:
        good = self.throughput[self.throughput["error"].fillna("") == ""]
        return pd.DataFrame({path: {**vars(measure.summarize((frame["bytes_per_s"] / 2**20).tolist()))}
                             for path, frame in good.groupby("path", sort=False)}).T[["median", "ci_low", "ci_high",
                                                                                      "n"]]

    def median_ms(self, path: str) -> tuple[float, float, float]:
        """`path`'s median latency over all its successful requests, with its 95 % interval: (median, low, high) ms."""
        found = self.percentiles().loc[path]
        return float(found["p50_ms"]), float(found["p50_low_ms"]), float(found["p50_high_ms"])

    def slower(self, path: str, than: str, factor: float = 1.0) -> Verdict:
        """Whether `path` is slower than `factor` × `than`: its per-round ratio to `than` (paired within each round,
        so drift on the machine cancels) has an interval wholly above `factor` (holds), wholly at or below it (does
        not hold), or across it (inconclusive)."""
        ratio = self.ratio(path, than)
        if ratio.ci_low > factor:
            return Verdict.HOLDS
        return Verdict.FAILS if ratio.ci_high <= factor else Verdict.INCONCLUSIVE

    @property
    def host_vs_published(self) -> measure.Summary:
        """The per-round ratio of the --network host path's median to the 127.0.0.1-published port's."""
        return self.ratio(HOST_NETWORK, PROXY)

    @property
    def host_faster(self) -> Verdict:
        """Holds when the per-round ratio of --network host to the published port has its whole interval at or
        below HOST_FASTER; does not hold when it lies wholly above; inconclusive across it."""
        ratio = self.host_vs_published
        if ratio.ci_high <= HOST_FASTER:
            return Verdict.HOLDS
        return Verdict.FAILS if ratio.ci_low > HOST_FASTER else Verdict.INCONCLUSIVE

    def conclusion(self) -> str:
        ratios, thr = self.ratios(), self.throughput_mib_s()
        parts = [f"{path}: **{r.ratio_to_loopback:.2f}×** [{r.low:.2f}, {r.high:.2f}]"
                 for path, r in ratios.iterrows() if path != LOOPBACK]
        host, proxy, ratio = self.median_ms(HOST_NETWORK), self.median_ms(PROXY), self.host_vs_published
        bulk = ", ".join(f"{path} {row['median']:,.0f} MiB/s" for path, row in thr.iterrows())
        return (f"Median latency per round over the host-loopback floor (interval over "
                f"{int(ratios['rounds'].max())} rounds, coverage {ratios['coverage'].min():.0%}): "
                + "; ".join(parts) + f". A `--network host` container's median latency: **{host[0]:.2f} ms** "
                f"[{host[1]:.2f}, {host[2]:.2f}], the same server behind a 127.0.0.1-published port: "
                f"**{proxy[0]:.2f} ms** [{proxy[1]:.2f}, {proxy[2]:.2f}]; per round, host networking took "
                f"**{ratio.median:.2f}×** [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}] the published port's time, and "
                f"counts as faster when that whole interval lies at or below {HOST_FASTER}×: "
                f"**{self.host_faster.value}**. Bulk transfer: {bulk}. Failed requests: {int(self.errors().sum())}.")


@contextmanager
def _nginx(listen: int, upstream: int) -> Iterator[None]:
    """Debian's nginx on 127.0.0.1:`listen`, proxying to 127.0.0.1:`upstream`, its config and logs in a temporary
    folder, stopped when the block ends."""
    program = shell.require_program("nginx")
    with undo.temporary_folder("labkit-nginx-") as folder:
        conf = Path(folder) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=folder, listen=listen, upstream=upstream))
        server = shell.spawn([program, "-p", folder, "-e", f"{folder}/error.log", "-c", str(conf), "-g",
                              "daemon off;"], stdin=shell.DEVNULL, stdout=shell.DEVNULL, stderr=shell.PIPE)
        try:
            yield
        finally:
            server.terminate()
            try:
                server.wait(10)
            except shell.TimeoutExpired:
                server.kill()
                server.wait(10)


@contextmanager
def _host_httpd(port: int, bulk_mib: int) -> Iterator[None]:
    """The host's busybox httpd on 127.0.0.1:`port` serving the same two files as the containers."""
    with undo.temporary_folder("labkit-httpd-") as folder:
        (Path(folder) / "index.html").write_text("ok\n")
        with (Path(folder) / "bulk").open("wb") as bulk:
            bulk.truncate(bulk_mib * 2**20)
        server = shell.spawn([shell.require_program("busybox"), "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h",
                              folder], stdin=shell.DEVNULL, stdout=shell.DEVNULL, stderr=shell.DEVNULL)
        try:
            yield
        finally:
            server.kill()
            server.wait(10)


def _paths(lab: LabSession, port: int, rounds: int, requests: int, concurrency: int, bulk_mib: int,
           time_limit_s: float) -> dict[str, pd.DataFrame]:
    server_image, client_image = base_tag(lab, SERVER_BASE), base_tag(lab, CLIENT_BASE)
    loopback_port, proxy_port, dnat_port, host_net_port = port, port + 1, port + 2, port + 3
    nginx_port = free_port_above(port + PORTS_USED, 1)
    latency: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    with ExitStack() as stack:
        scope = stack.enter_context(lab.scope())
        neighbour = stack.enter_context(netns.neighbour(lab.run_id))
        app = make_network(scope, "paths")
        start_container(scope, "web", server_image, ["sh", "-c", httpd_script(bulk_mib)],
               ["--network", app, "--network-alias", "web", "-p", f"127.0.0.1:{proxy_port}:{CONTAINER_PORT}",
                "-p", f"{neighbour.host_address}:{dnat_port}:{CONTAINER_PORT}"])
        start_container(scope, "hostnet", server_image, ["sh", "-c", httpd_script(bulk_mib, host_net_port)],
               ["--network", "host"])
        client = start_container(scope, "client", client_image, ["sleep", "3600"],
                        ["--network", app, "-v", f"{LOADCLIENT}:/loadclient.py:ro"])
        stack.enter_context(_host_httpd(loopback_port, bulk_mib))
        stack.enter_context(_nginx(nginx_port, proxy_port))
        targets = {
            LOOPBACK: (HOST_CLIENT, f"127.0.0.1:{loopback_port}"),
            PROXY: (HOST_CLIENT, f"127.0.0.1:{proxy_port}"),
            DNAT: (neighbour_client(neighbour), f"{neighbour.host_address}:{dnat_port}"),
            BY_NAME_PATH: (Client((docker_cli(), "exec", client, "python3"), "/loadclient.py"), "web"),
            HOST_NETWORK: (HOST_CLIENT, f"127.0.0.1:{host_net_port}"),
            NGINX: (HOST_CLIENT, f"127.0.0.1:{nginx_port}"),
        }
        for where, address in targets.values():
            wait_ready(f"http://{address}/", where)
        for round_index in range(rounds):
            shift = round_index % len(PATHS)  # interleaved: each round starts one path later
            for path in PATHS[shift:] + PATHS[:shift]:
                where, address = targets[path]
                load = where.load(f"http://{address}/", requests, concurrency, time_limit_s)
                latency += [{"path": path, "round": round_index, "index": r.index, "latency_s": r.latency_s,
                             "status": r.status, "bytes": r.bytes, "error": r.error} for r in load.requests]
                latency += [{"path": path, "round": round_index, "index": -1, "latency_s": float("nan"),
                             "status": 0, "bytes": 0, "error": "not started: time limit"}] * load.not_started
                got = where.load(f"http://{address}/bulk", 1, 1, time_limit_s, bulk=True).requests[0]
                throughput.append({"path": path, "round": round_index, "bytes": got.bytes, "seconds": got.latency_s,
                                   "bytes_per_s": got.bytes / got.latency_s if got.latency_s else 0.0,
                                   "error": got.error or ("" if got.bytes == bulk_mib * 2**20 else "short body")})
    return {"latency": pd.DataFrame(latency, columns=LAB.tables["latency"]),
            "throughput": pd.DataFrame(throughput, columns=LAB.tables["throughput"])}


def run_paths(lab: LabSession, port: int, rounds: int, requests: int, concurrency: int, bulk_mib: int,
              time_limit_s: float = 60.0) -> PathsResult:
    """`rounds` interleaved rounds; in each, every path gets `requests` GETs at `concurrency` (bounded by
    `time_limit_s` seconds) and one GET of a `bulk_mib` MiB file. Ports from `port` to `port` + 3 are published."""
    check_load(rounds, requests, concurrency, bulk_mib)
    check_port(port, live=False)
    if lab.live:
        lab.require_root("a network namespace (the neighbour)")
        check_port(port)
        shell.require_program("nginx")
    tables = lab.record("paths", ("latency", "throughput"),
                        lambda: _paths(lab, port, rounds, requests, concurrency, bulk_mib, time_limit_s),
                        port=port, rounds=rounds, requests=requests, concurrency=concurrency, bulk_mib=bulk_mib,
                        time_limit_s=time_limit_s)
    return PathsResult(tables["latency"], tables["throughput"])


