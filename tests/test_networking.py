"""Notebook 08's lab: the /proc/net/tcp parser on recorded fixtures, the results' arithmetic on hand-made tables,
bad input refused before anything starts, the live experiments against known answers, and interrupted runs
(SIGINT, SIGTERM) that leave no namespace, veth, firewall rule, container or network behind."""

from __future__ import annotations

import functools
import importlib.util
import random
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit import assets
from labkit.core.claims import Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import engine, firewall, netns, procfs, undo
from labkit.labs import networking
from labkit.labs.networking import DNAT, HOST_NETWORK, LOOPBACK, NGINX, PROXY, ExposureResult, PathsResult, rig
from labkit.labs.networking import exposure as exposure_module
from tests.conftest import interrupt_experiment, leftovers

FIXTURES = Path(__file__).parent / "fixtures" / "net"
LAB = networking.LAB


# ---------------------------------------------------------------- /proc/net/tcp on recorded fixtures


def test_listening_ipv4_sockets_and_a_connection_are_read_from_proc_net_tcp() -> None:
    sockets = procfs.parse_net_tcp((FIXTURES / "tcp").read_text())
    ours = [(s.local_address, s.local_port, s.state) for s in sockets if 18081 <= s.local_port <= 18084]
    assert ("127.0.0.1", 18081, "LISTEN") in ours and ("0.0.0.0", 18082, "LISTEN") in ours
    # The connection appears from both ends: 127.0.0.1:18081 ↔ 127.0.0.1:44940 (0xAF8C), established.
    assert ("127.0.0.1", 18081, "ESTABLISHED") in ours
    client = next(s for s in sockets if s.local_port == 0xAF8C)
    assert (client.remote_address, client.remote_port, client.state) == ("127.0.0.1", 18081, "ESTABLISHED")


def test_listening_ipv6_sockets_are_read_from_proc_net_tcp6() -> None:
    sockets = procfs.parse_net_tcp((FIXTURES / "tcp6").read_text())
    assert {(s.local_address, s.local_port) for s in sockets if s.state == "LISTEN"} >= {("::", 18083),
                                                                                         ("::1", 18084)}


def test_a_truncated_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="line 2"):
        procfs.parse_net_tcp("  sl  local_address rem_address   st\n   0: 0100007F:46A1 00000000:0000 0A\n")


# ---------------------------------------------------------------- results' arithmetic on hand-made tables


def _probe(mode: str, client: str, target: str, reachable: bool, rule: str = networking.NO_RULE) -> dict[str, object]:
    return {"mode": mode, "firewall": rule, "client": client, "target": target, "reachable": reachable,
            "status": 200 if reachable else 0, "error": "" if reachable else "refused"}


def test_the_exposure_table_has_a_row_per_mode_and_rule_and_a_column_per_probe() -> None:
    probes = pd.DataFrame([_probe("-p PORT:80", "host", "127.0.0.1:PORT", True),
                           _probe("-p PORT:80", "neighbour", "host address:PORT", True),
                           _probe("-p PORT:80", "neighbour", "host address:PORT", False, networking.DOCKER_USER_RULE)])
    result = ExposureResult(probes, pd.DataFrame(columns=LAB.tables["listening"]))
    assert result.table.fillna("-").to_dict("index") == {
        "-p PORT:80": {"host → 127.0.0.1:PORT": "reached", "neighbour → host address:PORT": "reached"},
        "-p PORT:80 + DOCKER-USER: drop the neighbour": {"host → 127.0.0.1:PORT": "-",
                                                         "neighbour → host address:PORT": "no"},
    }
    assert result.reached("-p PORT:80", "neighbour", "host address:PORT")
    assert not result.reached("-p PORT:80", "neighbour", "host address:PORT", networking.DOCKER_USER_RULE)
    assert result.sockets("-p PORT:80") == "none"


def _latencies(medians_ms: dict[str, list[float]]) -> pd.DataFrame:
    """Three requests per path and round, each taking the round's given time (ms)."""
    rows = []
    for path, per_round in medians_ms.items():
        for round_index, median in enumerate(per_round):
            for index, value in enumerate((median, median, median)):
                rows.append({"path": path, "round": round_index, "index": index, "latency_s": value / 1e3,
                             "status": 200, "bytes": 3, "error": ""})
    return pd.DataFrame(rows, columns=LAB.tables["latency"])


def test_ratios_are_per_round_and_host_networking_needs_the_whole_interval_below_the_threshold() -> None:
    # Five rounds. Loopback 1 ms every round; docker-proxy 2 ms → ratio 2.0 every round; nginx 3 ms → 1.5× the proxy.
    # Host network 1.0, 1.2, 1.4, 1.6, 1.7 ms → over docker-proxy per round: 0.5, 0.6, 0.7, 0.8, 0.85; with n = 5
    # the interval is [min, max] = [0.5, 0.85] (coverage 93.75 %), wholly at or below 0.9: faster.
    paths = PathsResult(_latencies({LOOPBACK: [1.0] * 5, PROXY: [2.0] * 5, HOST_NETWORK: [1.0, 1.2, 1.4, 1.6, 1.7],
                                    NGINX: [3.0] * 5, DNAT: [1.5] * 5}),
                        pd.DataFrame(columns=LAB.tables["throughput"]))
    assert paths.ratio(PROXY).median == pytest.approx(2.0)
    assert paths.ratio(NGINX, PROXY).median == pytest.approx(1.5)
    found = paths.host_vs_published
    assert (found.median, found.ci_low, found.ci_high) == pytest.approx((0.7, 0.5, 0.85))
    assert paths.host_faster == Verdict.HOLDS
    # All requests pooled: 15 values, median the 8th (1.4 ms), interval the 4th to the 12th (n = 15: 96.5 %).
    assert paths.median_ms(HOST_NETWORK) == pytest.approx((1.4, 1.2, 1.6))
    assert paths.slower(NGINX, PROXY) == Verdict.HOLDS  # 1.5 every round: above 1
    slower = PathsResult(_latencies({LOOPBACK: [1.0] * 5, PROXY: [2.0] * 5, HOST_NETWORK: [1.9, 2.0, 2.1, 2.2, 2.3]}),
                         paths.throughput)
    assert slower.host_faster == Verdict.FAILS  # 0.95 … 1.15: wholly above 0.9
    mixed = PathsResult(_latencies({LOOPBACK: [1.0] * 5, PROXY: [2.0] * 5, HOST_NETWORK: [1.0, 1.5, 1.8, 2.0, 2.2]}),
                        paths.throughput)
    assert mixed.host_faster == Verdict.INCONCLUSIVE  # 0.5 … 1.1: across 0.9


def test_failed_requests_are_counted_and_left_out_of_the_latencies() -> None:
    frame = _latencies({LOOPBACK: [1.0]})
    frame.loc[0, ["error", "status"]] = ["ConnectionRefusedError", 0]
    paths = PathsResult(frame, pd.DataFrame(columns=LAB.tables["throughput"]))
    assert paths.errors()[LOOPBACK] == 1 and len(paths.ok) == 2
    assert paths.percentiles().loc[LOOPBACK, "errors"] == 1


def test_the_ledger_names_the_engine_it_was_measured_on(replay: LabSession) -> None:
    recorded = (networking.run_exposure(replay, 18080), networking.run_names(replay),
                networking.run_outbound_nat(replay), networking.run_paths(replay, 18080, 30, 60, 4, 64))
    assert replay.engine_version == "20.10.24+dfsg1"  # the recording's engine, from its provenance
    networking.check_claims(replay.claims, *recorded, "27.5.1")
    claims = replay.claims.frame().set_index("id")
    assert "how Docker 27.5.1 writes" in claims.loc["net.publish_reaches_anyone", "criterion"]
    assert "on Docker 27.5.1: moby#45610" in claims.loc["net.loopback_publish_local_only", "caveat"]
    assert "20.10" not in " ".join(claims["criterion"]) + " ".join(claims["caveat"])


# ---------------------------------------------------------------- the neighbour's server, without a name lookup


def test_the_neighbour_server_binds_and_serves_without_looking_its_address_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """http.server's own bind looks its address up (socket.getfqdn): from the neighbour that reverse lookup timed out
    after 10 s. The neighbour's server must bind and answer with every lookup refused, and log the client's
    address first on each request's line (what section 3 reads)."""
    spec = importlib.util.spec_from_file_location("neighbour_server", assets.FOLDER / rig.NEIGHBOUR_SERVER)
    assert spec is not None and spec.loader is not None
    server_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server_module)

    def no_lookup(*args: object) -> str:
        raise AssertionError(f"a name lookup: {args}")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    monkeypatch.setattr(socket, "gethostbyaddr", no_lookup)
    (tmp_path / "index.html").write_text("neighbour\n")
    server = server_module.Server(("127.0.0.1", 0), functools.partial(
        server_module.SimpleHTTPRequestHandler, directory=str(tmp_path)))
    with server:
        thread = threading.Thread(target=server.handle_request)
        thread.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/?from-test", timeout=10) as answer:
            assert (answer.status, answer.read()) == (200, b"neighbour\n")
        thread.join(10)
    assert server.server_name == "127.0.0.1"
    logged = [line for line in capfd.readouterr().err.splitlines() if "GET /?from-test " in line]
    assert len(logged) == 1 and logged[0].split()[0] == "127.0.0.1"


# ---------------------------------------------------------------- bad input, refused before anything starts


class Untouchable:
    """Stands in for a session: any use of it fails the test, so a refusal must come first."""

    quick = True

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the lab used the session ({name}) before refusing bad input")


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: networking.run_exposure(lab, 80), r"port=80: need a whole number from 1024"),
    (lambda lab: networking.run_exposure(lab, 70000), r"port=70000"),
    (lambda lab: networking.run_paths(lab, 18080, rounds=3, requests=0, concurrency=1, bulk_mib=1), r"requests=0"),
    (lambda lab: networking.run_paths(lab, 18080, rounds=3, requests=4, concurrency=8, bulk_mib=1),
     r"concurrency=8 is above requests=4"),
    (lambda lab: networking.run_paths(lab, 18080, rounds=0, requests=4, concurrency=1, bulk_mib=1), r"rounds=0"),
    (lambda lab: networking.run_paths(lab, 18080, rounds=3, requests=4, concurrency=1, bulk_mib=0), r"bulk_mib=0"),
    (lambda lab: networking.run_paths(lab, 65534, rounds=3, requests=4, concurrency=1, bulk_mib=1), r"port=65534"),
])
def test_bad_input_is_refused_before_the_session_is_used(call: Callable[[object], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(Untouchable())


def test_a_port_in_use_is_refused_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if port > 65535 - networking.PORTS_USED:
            pytest.skip("the kernel gave a port too near the top for this test")
        with pytest.raises(BadParameter, match=f"port {port} is in use"):
            networking.check_port(port)


# ---------------------------------------------------------------- live, against known answers


def _no_trace_of(client: docker.DockerClient, run_id: str) -> None:
    """Nothing of run `run_id` is left: namespaces (and with them their veths), rules, containers, networks,
    journal records."""
    assert [n for n in netns.names() if n.startswith(f"{netns.NAME_PREFIX}{run_id}-")] == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert f"link-netns {netns.NAME_PREFIX}{run_id}-" not in links  # a host end whose peer is in such a namespace
    assert firewall.labkit_rules(run_id) == []
    assert leftovers(client, run_id) == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.docker
@pytest.mark.root
def test_live_names_resolve_on_a_user_network_and_not_on_the_default_bridge(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    names = networking.run_names(live)
    assert names.ok(networking.BY_NAME) and not names.ok(networking.BRIDGE_NAME)
    assert names.ok(networking.BRIDGE_ADDRESS)  # the bridge itself works: it is the name that fails
    assert names.output(networking.RESOLVER) == "nameserver 127.0.0.11"
    assert not names.ok(networking.OTHER_NETWORK) and not names.ok(networking.INTERNAL_OUT)
    assert names.ok(networking.USER_OUT) and names.output(networking.NONE) == "lo"
    assert "net" in names.shared and {"pid", "mnt", "uts", "ipc"} <= set(names.own)
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_exposure_matches_how_the_engine_writes_its_rules(
        live: LabSession, docker_client: docker.DockerClient) -> None:
    exposure = networking.run_exposure(live, networking.free_port_above(random.randrange(20000, 60000),
                                                                         networking.PORTS_USED))
    every, loop = "-p PORT:80", "-p 127.0.0.1:PORT:80"
    assert exposure.reached(every, "neighbour", "host address:PORT")
    assert exposure.reached(every, "neighbour", "host address:PORT", networking.INPUT_RULE)  # DNAT skips INPUT
    assert not exposure.reached(every, "neighbour", "host address:PORT", networking.DOCKER_USER_RULE)
    assert exposure.reached(loop, "host", "127.0.0.1:PORT")
    assert not exposure.reached(loop, "neighbour", "host address:PORT")  # nothing listens on the host's address
    # Docker 20.10 accepts forwarded traffic to a published container whatever address it was published on
    # (moby#45610); engines from 28.0 drop it unless it comes in on the bridge.
    version = engine.info(docker_client).version
    assert exposure.reached(loop, "neighbour", "container address:80") == version.startswith("20.10")
    assert not exposure.reached(loop, "neighbour", "container address:80", networking.DOCKER_USER_RULE)
    assert not exposure.reached("EXPOSE 80 alone", "neighbour", "container address:80")  # no ACCEPT rule for it
    assert exposure.sockets("EXPOSE 80 alone") == "none"
    assert set(exposure.listening.loc[exposure.listening["mode"] == loop, "address"]) == {"127.0.0.1"}
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_a_failure_under_the_firewall_rule_leaves_nothing(live: LabSession, docker_client: docker.DockerClient,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe under the INPUT rule fails: by then the neighbour namespace and its veth, the outward guards, the
    # INPUT rule and four published containers exist.
    probe_rows = exposure_module._probe_rows

    def failing(mode: str, rule: str, *args: object) -> list[dict[str, object]]:
        if rule == networking.INPUT_RULE:
            assert firewall.labkit_rules(live.run_id) and netns.names()  # all of it is up
            raise RuntimeError("a failure in the middle of the experiment")
        return probe_rows(mode, rule, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(exposure_module, "_probe_rows", failing)
    with pytest.raises(RuntimeError, match="in the middle"):
        networking.run_exposure(live, networking.free_port_above(random.randrange(20000, 60000),
                                                                 networking.PORTS_USED))
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_outbound_traffic_is_seen_from_the_hosts_address(live: LabSession,
                                                              docker_client: docker.DockerClient) -> None:
    nat = networking.run_outbound_nat(live)
    assert nat.masqueraded and len(nat.seen) == 2
    assert all(row.container_address != row.seen_source for row in nat.seen.itertuples())
    _no_trace_of(docker_client, live.run_id)


# ---------------------------------------------------------------- interrupted runs leave nothing behind

def _rule_of_the_neighbour(run_id: str) -> bool:
    """A DOCKER-USER or INPUT rule naming the neighbour (not a guard) exists: the experiment's last stage."""
    return any(rule["chain"] in ("INPUT", "DOCKER-USER") and "-s" in rule["spec"] for rule in
               firewall.labkit_rules(run_id))


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize(("signum", "moment"), [
    (signal.SIGINT, "the neighbour exists"),
    (signal.SIGTERM, "a container is published"),
    (signal.SIGINT, "a rule drops the neighbour"),
])
def test_live_interrupted_exposure_leaves_nothing_behind(docker_client: docker.DockerClient, tmp_path: Path,
                                                         signum: int, moment: str) -> None:
    # A start drawn from a wide range: the machine's other users (and the cases before) hold ports of their own.
    port = networking.free_port_above(random.randrange(20000, 60000), networking.PORTS_USED)
    reached: dict[str, Callable[[str], bool]] = {
        "the neighbour exists": lambda run_id: any(n.startswith(f"{netns.NAME_PREFIX}{run_id}-")
                                                   for n in netns.names()),
        "a container is published": lambda run_id: bool(leftovers(docker_client, run_id)["containers"]),
        "a rule drops the neighbour": _rule_of_the_neighbour,
    }
    run_id, child = interrupt_experiment("networking", f"run_exposure(lab, {port})", tmp_path, signum,
                                         reached[moment], moment, within_s=180)
    _no_trace_of(docker_client, run_id)
    assert not [c for c in undo.pending() if c.pid == child.pid]


# ---------------------------------------------------------------- what the notebook's quick run recorded


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / networking.STEM


@pytest.mark.docker
def test_the_quick_run_recorded_the_known_answers(executed: Path) -> None:
    claims = pd.read_csv(executed / "claims.csv", keep_default_na=False).set_index("id")["verdict"]
    # Fixed by how the engine works (demonstrations) and by Docker 20.10's rules (see the live tests above).
    assert claims["net.publish_reaches_anyone"] == "holds" and claims["net.user_network_names"] == "holds"
    assert claims["net.input_rule_does_not_stop_publish"] == "holds" and claims["net.outbound_nat"] == "holds"
    assert claims["net.user_networks_isolated"] == "holds"
    # Docker 20.10 without userns-remap on cgroup v1: --network host adds only net to what every container shares.
    host_namespaces = pd.read_csv(executed / "host_namespaces.csv")
    assert set(host_namespaces.loc[host_namespaces["shared"], "kind"]) == {"net", "user", "cgroup"}
    latency = pd.read_csv(executed / "latency.csv", keep_default_na=False)
    assert set(latency["path"]) == set(networking.PATHS) and (latency["error"] == "").all()
    throughput = pd.read_csv(executed / "throughput.csv", keep_default_na=False)
    assert (throughput["error"] == "").all() and (throughput["bytes_per_s"] > 0).all()
