"""Notebook 08's claims: the chapter's networking claims and our findings, with verdicts from the data."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.labs.networking.declaration import HOST_FASTER
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
        "net.publish_reaches_anyone", value=float(reached_every),
        measured=f"listening on {exposure.sockets(every)}; the neighbour reached it through the host's address",
        verdict=verdict(reached_every), engine_version=engine_version)
    by_host_address = exposure.reached(loop, "neighbour", "host address:PORT")
    direct = exposure.reached(loop, "neighbour", "container address:80")
    ledger.check(
        "net.loopback_publish_local_only", value=float(not by_host_address and not direct),
        measured=f"listening on {exposure.sockets(loop)}; from the neighbour through the host's address: "
                 f"{by_host_address}; routed straight to the container's address: {direct}",
        verdict=verdict(not by_host_address and not direct),
        caveat=("the socket is bound to 127.0.0.1 and the host's address refuses, but a neighbour that routes the "
                f"container subnet through this host reaches the container directly (on Docker {engine_version}: "
                "moby#45610); a DOCKER-USER rule dropping the neighbour closes it") if direct else "")
    input_kept = exposure.reached(every, "neighbour", "host address:PORT", INPUT_RULE)
    user_closed = not exposure.reached(every, "neighbour", "host address:PORT", DOCKER_USER_RULE)
    ledger.check(
        "net.input_rule_does_not_stop_publish", value=float(input_kept and user_closed),
        measured=f"with INPUT dropping the neighbour it reached the port: {input_kept}; with DOCKER-USER dropping "
                 f"it: {not user_closed}",
        verdict=verdict(input_kept and user_closed))
    resolved, bridge_failed = names.ok(BY_NAME), not names.ok(BRIDGE_NAME)
    ledger.check(
        "net.user_network_names", value=float(resolved),
        measured=f"user network: {resolved} (resolv.conf: {names.output(RESOLVER)}); default bridge: "
                 f"{names.output(BRIDGE_NAME)!r}",
        verdict=verdict(resolved and bridge_failed and names.ok(BRIDGE_ADDRESS)))
    isolated = not names.ok(OTHER_NETWORK) and not names.ok(INTERNAL_OUT) and names.ok(USER_OUT)
    ledger.check(
        "net.user_networks_isolated", value=float(isolated),
        measured=f"other network by address: {names.ok(OTHER_NETWORK)}; --internal to the neighbour: "
                 f"{names.ok(INTERNAL_OUT)}; user network to the neighbour: {names.ok(USER_OUT)}",
        verdict=verdict(isolated))
    # "--network host skips namespacing entirely" is judged once, in notebook 01 (namespaces.host_network), from
    # the same inode comparison that §2 shows here.
    ledger.check(
        "net.outbound_nat", value=float(nat.masqueraded),
        measured="; ".join(f"{r.container_address} seen as {r.seen_source}" for r in nat.seen.itertuples()),
        verdict=verdict(nat.masqueraded))
    host, proxy, ratio = paths.median_ms(HOST_NETWORK), paths.median_ms(PROXY), paths.host_vs_published
    ledger.check(
        "net.host_network_faster", value=ratio.median,
        measured=f"per-round ratio {ratio.median:.2f}× [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}] over {ratio.n} "
                 f"rounds (coverage {ratio.coverage:.0%}); medians over all requests {host[0]:.2f} ms "
                 f"[{host[1]:.2f}, {host[2]:.2f}] against {proxy[0]:.2f} ms [{proxy[1]:.2f}, {proxy[2]:.2f}]",
        verdict=paths.host_faster,
        caveat="" if paths.host_faster != Verdict.INCONCLUSIVE else
        "the rounds disagree too much to decide (on a busy machine the per-round ratios spread widely)",
        host_faster=HOST_FASTER)
    nginx, nginx_ms = paths.ratio(NGINX, PROXY), paths.median_ms(NGINX)
    nginx_slower = paths.slower(NGINX, PROXY)
    ledger.check(
        "net.nginx_in_front_costs", value=nginx.median,
        measured=f"per-round ratio {nginx.median:.2f}× [{nginx.ci_low:.2f}, {nginx.ci_high:.2f}]; medians over all "
                 f"requests {nginx_ms[0]:.2f} ms [{nginx_ms[1]:.2f}, {nginx_ms[2]:.2f}] against {proxy[0]:.2f} ms",
        verdict=nginx_slower,
        caveat="" if nginx_slower != Verdict.INCONCLUSIVE else "the rounds disagree too much to decide")
