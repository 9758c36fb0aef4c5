"""Notebook 08's claims: the chapter's networking claims and our findings, with verdicts from the data."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.labs.networking.declaration import HOST_FASTER, SECTION, SECTION_EXPOSURE, SECTION_NAMES, SECTION_PATHS
from labkit.labs.networking.exposure import DOCKER_USER_RULE, INPUT_RULE, ExposureResult
from labkit.labs.networking.names import (
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    BY_NAME,
    INTERNAL_OUT,
    OTHER_NETWORK,
    RESOLVER,
    USER_OUT,
    NamesResult,
    NatResult,
)
from labkit.labs.networking.paths import HOST_NETWORK, NGINX, PROXY, PathsResult

# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, exposure: ExposureResult, names: NamesResult, nat: NatResult,
                 paths: PathsResult, engine_version: str) -> None:
    """The chapter's networking claims and our findings beyond them, with verdicts from this notebook's data;
    `engine_version`: the Docker Engine that wrote the rules they were measured through."""
    every, loop = "-p PORT:80", "-p 127.0.0.1:PORT:80"
    reached_every = exposure.reached(every, "neighbour", "host address:PORT")
    ledger.check(
        "net.publish_reaches_anyone", source=Source.CHAPTER, section=SECTION,
        claim="Publishing with -p HOST:CONTAINER lets anyone who can reach the host connect",
        value=float(reached_every), unit="1 = the neighbour reached it",
        measured=f"listening on {exposure.sockets(every)}; the neighbour reached it through the host's address",
        criterion=demonstration(f"how Docker {engine_version} writes its NAT and FORWARD rules",
                                "a neighbour host connecting to this host's address and the published port gets "
                                "the container's page"),
        verdict=verdict(reached_every), tables=("exposure", "listening"))
    by_host_address = exposure.reached(loop, "neighbour", "host address:PORT")
    direct = exposure.reached(loop, "neighbour", "container address:80")
    ledger.check(
        "net.loopback_publish_local_only", source=Source.CHAPTER, section=SECTION,
        claim="Publishing on 127.0.0.1 keeps the port to this host",
        value=float(not by_host_address and not direct), unit="1 = no neighbour path reached it",
        measured=f"listening on {exposure.sockets(loop)}; from the neighbour through the host's address: "
                 f"{by_host_address}; routed straight to the container's address: {direct}",
        criterion="the neighbour reaches the container neither through the host's address and port nor by routing "
                  "to the container's address through this host (its gateway)",
        verdict=verdict(not by_host_address and not direct),
        caveat=("the socket is bound to 127.0.0.1 and the host's address refuses, but a neighbour that routes the "
                f"container subnet through this host reaches the container directly (on Docker {engine_version}: "
                "moby#45610); a DOCKER-USER rule dropping the neighbour closes it") if direct else "",
        tables=("exposure", "listening"))
    input_kept = exposure.reached(every, "neighbour", "host address:PORT", INPUT_RULE)
    user_closed = not exposure.reached(every, "neighbour", "host address:PORT", DOCKER_USER_RULE)
    ledger.check(
        "net.input_rule_does_not_stop_publish", source=Source.FINDING, section=SECTION_EXPOSURE,
        claim="An INPUT drop rule does not stop a published port; the same drop in DOCKER-USER does",
        value=float(input_kept and user_closed), unit="1 = INPUT let it through and DOCKER-USER stopped it",
        measured=f"with INPUT dropping the neighbour it reached the port: {input_kept}; with DOCKER-USER dropping "
                 f"it: {not user_closed}",
        criterion=demonstration("netfilter: DNAT happens in PREROUTING, so the packet is forwarded and never "
                                "traverses INPUT", "reachable with the INPUT rule, unreachable with the DOCKER-USER "
                                "rule"),
        verdict=verdict(input_kept and user_closed), tables=("exposure",))
    resolved, bridge_failed = names.ok(BY_NAME), not names.ok(BRIDGE_NAME)
    ledger.check(
        "net.user_network_names", source=Source.CHAPTER, section=SECTION,
        claim="On a user-defined network containers reach each other by name",
        value=float(resolved), unit="1 = resolved and answered",
        measured=f"user network: {resolved} (resolv.conf: {names.output(RESOLVER)}); default bridge: "
                 f"{names.output(BRIDGE_NAME)!r}",
        criterion=demonstration("Docker's embedded DNS, served only on user-defined networks", "a container on "
                                "the user network fetches http://web/; on the default bridge the same name does not "
                                "resolve while the address answers"),
        verdict=verdict(resolved and bridge_failed and names.ok(BRIDGE_ADDRESS)), tables=("names",))
    isolated = not names.ok(OTHER_NETWORK) and not names.ok(INTERNAL_OUT) and names.ok(USER_OUT)
    ledger.check(
        "net.user_networks_isolated", source=Source.FINDING, section=SECTION_NAMES,
        claim="Two user networks cannot reach each other, and an --internal network has no way out",
        value=float(isolated), unit="1 = both blocked, the control got out",
        measured=f"other network by address: {names.ok(OTHER_NETWORK)}; --internal to the neighbour: "
                 f"{names.ok(INTERNAL_OUT)}; user network to the neighbour: {names.ok(USER_OUT)}",
        criterion=demonstration("Docker's isolation chains and the --internal network's missing gateway",
                                "both fail within the probe's time limit while a plain user network reaches the "
                                "neighbour"),
        verdict=verdict(isolated), tables=("names",))
    # "--network host skips namespacing entirely" is judged once, in notebook 01 (namespaces.host_network), from
    # the same inode comparison that §2 shows here.
    ledger.check(
        "net.outbound_nat", source=Source.CHAPTER, section=SECTION,
        claim="The daemon NATs containers' outbound traffic",
        value=float(nat.masqueraded), unit="1 = the server saw the host's address",
        measured="; ".join(f"{r.container_address} seen as {r.seen_source}" for r in nat.seen.itertuples()),
        criterion=demonstration("Docker's MASQUERADE rule for its subnets", "a server on the neighbour logs this "
                                "host's address, not the container's, for requests from both networks"),
        verdict=verdict(nat.masqueraded), tables=("nat",))
    host, proxy, ratio = paths.median_ms(HOST_NETWORK), paths.median_ms(PROXY), paths.host_vs_published
    ledger.check(
        "net.host_network_faster", source=Source.CHAPTER, section=SECTION,
        claim="Host networking is faster",
        value=ratio.median, unit="× the 127.0.0.1-published port's latency (median of per-round ratios)",
        measured=f"per-round ratio {ratio.median:.2f}× [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}] over {ratio.n} "
                 f"rounds (coverage {ratio.coverage:.0%}); medians over all requests {host[0]:.2f} ms "
                 f"[{host[1]:.2f}, {host[2]:.2f}] against {proxy[0]:.2f} ms [{proxy[1]:.2f}, {proxy[2]:.2f}]",
        criterion=f"the per-round ratio's whole interval lies at or below {HOST_FASTER}× (at least 10 % faster); "
                  f"wholly above {HOST_FASTER}×: not faster; across it: inconclusive",
        verdict=paths.host_faster,
        caveat="" if paths.host_faster != Verdict.INCONCLUSIVE else
        "the rounds disagree too much to decide (on a busy machine the per-round ratios spread widely)",
        tables=("latency",))
    nginx, nginx_ms = paths.ratio(NGINX, PROXY), paths.median_ms(NGINX)
    nginx_slower = paths.slower(NGINX, PROXY)
    ledger.check(
        "net.nginx_in_front_costs", source=Source.FINDING, section=SECTION_PATHS,
        claim="NGINX in front of a 127.0.0.1-published container adds one hop's latency",
        value=nginx.median, unit="× the published port's latency (median of per-round ratios)",
        measured=f"per-round ratio {nginx.median:.2f}× [{nginx.ci_low:.2f}, {nginx.ci_high:.2f}]; medians over all "
                 f"requests {nginx_ms[0]:.2f} ms [{nginx_ms[1]:.2f}, {nginx_ms[2]:.2f}] against {proxy[0]:.2f} ms",
        criterion="the per-round ratio of nginx's path to the published port alone has its whole interval above 1; "
                  "wholly at or below 1: does not hold; across 1: inconclusive",
        verdict=nginx_slower,
        caveat="" if nginx_slower != Verdict.INCONCLUSIVE else "the rounds disagree too much to decide",
        tables=("latency",))
