"""Notebook 13's claims: the chapter's "When to Graduate" signs that a real orchestrator answers, and our findings."""

from __future__ import annotations

import pandas as pd

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.instruments import swarm
from labkit.labs.when_to_graduate import as_stack
from labkit.labs.when_to_graduate.declaration import (
    LEFT_BEHIND,
    MOVED,
    REQUEST_TIMEOUT_S,
    WRITTEN,
)
from labkit.labs.when_to_graduate.portability import PortabilityResult
from labkit.labs.when_to_graduate.result import DOWN_SEEN_SLACK_S, OrchestratorResult, StatefulResult
from labkit.labs.when_to_graduate.single_box import CASE


def check_claims(ledger: ClaimLedger, result: OrchestratorResult, portable: PortabilityResult) -> None:
    """The claims of notebook 13, with verdicts from its data (the runtimes' only where the replayed recording has
    them)."""
    ledger.check(
        "graduate.more_than_one_box", value=float(result.nodes_used),
        measured=f"one `docker stack deploy` placed the tasks on {result.nodes_used} nodes "
                 f"({result.placement_text()})",
        verdict=verdict(result.nodes_used > 1, caveat=True),
        caveat="the nodes are daemons in network namespaces of one machine, not separate boxes")
    tries, taken = result.as_stack, result.taken
    refused_as_written = bool(len(tries) and tries["exit_code"].iloc[0] != 0)
    ledger.check(
        "graduate.compose_file_is_not_a_stack", value=float((tries["refused_text"] == as_stack.CHAPTER).sum()),
        measured="; ".join(f"{r.change}: exit {r.exit_code} ({r.message})"
                           + (f" — about {r.refused_text}" if r.refused_text else "") for r in tries.itertuples()),
        verdict=verdict(refused_as_written and result.published_on_every_address, caveat=True) if len(taken)
        else Verdict.INCONCLUSIVE,
        caveat=f"the file is read by the docker CLI ({', '.join(sorted(set(tries['cli'].astype(str))))}): another "
               "version may refuse or ignore other keys")
    killed, sick, plain = result.healed("task killed"), result.healed("task unhealthy"), \
        result.healed("container unhealthy")
    nodes = result.healed("node killed")
    swarm_heals = bool(killed["replaced"].all() and sick["replaced"].all() and nodes["replaced"].all())
    plain_left = bool(len(plain) and not plain["replaced"].any())
    ledger.check(
        "graduate.orchestrator_heals", value=float(swarm_heals and plain_left),
        measured=f"killed task replaced after {killed['replaced_s'].max():.1f} s, unhealthy task after "
                 f"{sick['replaced_s'].max():.1f} s, dead node's tasks after "
                 + ", ".join(f"{r.replaced_s:.1f} s (heartbeat {r.heartbeat_s:g} s)" for r in nodes.itertuples())
                 + f"; Compose: {plain['detail'].iloc[0] if len(plain) else 'not run'}",
        verdict=verdict(swarm_heals and plain_left, caveat=True),
        caveat="the nodes are daemons in network namespaces of one machine; a dead node is its dockerd killed with "
               "SIGKILL, not a box powered off or cut from the network")
    downs = result.node_downs
    in_window = bool(len(downs) and downs["detected_s"].between(downs["low_s"], downs["high_s"]).all())
    ledger.check(
        "graduate.node_down_after_missed_heartbeats",
        value=float((downs["detected_s"] / downs["heartbeat_s"]).max()) if len(downs) else float("nan"),
        measured="; ".join(f"heartbeat {r.heartbeat_s:g} s: seen down after {r.detected_s:.2f} s"
                           for r in downs.itertuples()),
        verdict=verdict(in_window), least_periods=swarm.GRACE_PERIODS - 1, most_periods=swarm.GRACE_PERIODS,
        heartbeat_epsilon_s=swarm.HEARTBEAT_EPSILON_S, allowance_s=swarm.HEARTBEAT_RPC_S + DOWN_SEEN_SLACK_S,
        windows=", ".join(f"{r.low_s:.1f} to {r.high_s:.1f} s (heartbeat {r.heartbeat_s:g} s)"
                          for r in downs.itertuples()))
    table = result.table
    updates = table[table.index.str.startswith("update")]
    broken = table[table.index.str.startswith("broken")]
    start_first = updates[updates.index.str.endswith("start-first")]
    single_box = table[table.index == CASE]
    zero_loss = bool(len(start_first) and (start_first["failed"] == 0).all()
                     and (start_first["final_state"] == "completed").all())
    box_lost = bool(len(single_box) and (single_box["failed"] > 0).all()
                    and (single_box["final_state"] == "completed").all())  # a broken update shows nothing
    ledger.check(
        "graduate.rolling_update_without_loss",
        value=float(start_first["failed"].sum()) if len(start_first) else float("nan"),
        measured="; ".join(f"{case}: {int(r.failed):,} of {int(r.requests):,} failed, longest gap "
                           f"{r.longest_gap_s:.2f} s, " + (f"`up -d` returned after {r.median_duration_s:.1f} s"
                                                          if case == CASE else f"done after {r.median_duration_s:.1f}"
                                                          " s by the manager's report") + " (median)"
                           for case, r in pd.concat([updates, single_box]).iterrows()),
        verdict=verdict(zero_loss and box_lost, caveat=True),
        caveat="measured on Swarm, not on the chapter's ECS or Kubernetes; the client resolves the service by "
               "DNS round robin (no IPVS here) and tries the next address when one refuses or stays silent for "
               f"{REQUEST_TIMEOUT_S:g} s"
               + (f"; the longest time without an answer in a start-first update was "
                  f"{start_first['longest_gap_s'].max():.2f} s" if len(start_first) else "")
               + (" (as long as the client's limit on one request: zero failures is not zero delay)"
                  if len(start_first) and start_first["longest_gap_s"].max() >= REQUEST_TIMEOUT_S else ""),
        case=CASE)
    rolled_back = bool(len(broken) and (broken["final_state"] == "rollback_completed").all()
                       and broken["images_match"].all())
    ledger.check(
        "graduate.broken_release_rolled_back",
        value=float(broken["median_duration_s"].iloc[0]) if len(broken) else float("nan"),
        measured="; ".join(f"{case}: {r.final_state}, {r.median_duration_s:.1f} s, {int(r.failed):,} of "
                           f"{int(r.requests):,} requests failed; running image as before: {r.images_match}"
                           for case, r in broken.iterrows()),
        verdict=verdict(rolled_back),
        rounds=f" (median of {int(broken['updates'].iloc[0])} rounds)" if len(broken) else "")
    check_stateful(ledger, result.stateful)
    if portable.recorded:
        check_portability(ledger, portable)


def check_stateful(ledger: ClaimLedger, stateful: StatefulResult) -> None:
    ledger.check(
        "graduate.state_stays_on_its_node", value=float(stateful.marker(MOVED)),
        measured=f"written on {stateful.node(WRITTEN)}: {stateful.marker(WRITTEN)}; found by the replica moved to "
                 f"{stateful.node(MOVED)}: {stateful.marker(MOVED)}; still on {stateful.node(LEFT_BEHIND)}: "
                 f"{stateful.marker(LEFT_BEHIND)}",
        verdict=verdict(stateful.state_stayed_behind))


def check_portability(ledger: ClaimLedger, portable: PortabilityResult) -> None:
    others = portable.others()
    table = portable.table
    ledger.check(
        "graduate.runtime_replaceable", value=float(len(others)),
        measured="; ".join(f"{name}: printed {r.outputs!r}, config {r.config_digest[:19]}…"
                           for name, r in table.iterrows())
                 + "".join(f"; {name} not run ({why})" for name, why in portable.missing.items()),
        verdict=verdict(portable.same_everywhere(), caveat=len(others) < 2) if others else Verdict.INCONCLUSIVE,
        caveat="" if len(others) >= 2 else "only " + (" and ".join(others) or "Docker") + " could run here")
