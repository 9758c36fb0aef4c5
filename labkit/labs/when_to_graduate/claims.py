"""Notebook 13's claims: the chapter's "When to Graduate" signs that a real orchestrator answers, and our findings."""

from __future__ import annotations

import pandas as pd

from labkit.core.claims import ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.instruments import swarm
from labkit.labs.when_to_graduate import as_stack
from labkit.labs.when_to_graduate.declaration import (
    REQUEST_TIMEOUT_S,
    SECTION,
    SECTION_HEALING,
    SECTION_ROLLOUT,
    SECTION_SINGLE_BOX,
)
from labkit.labs.when_to_graduate.portability import PortabilityResult
from labkit.labs.when_to_graduate.result import DOWN_SEEN_SLACK_S, OrchestratorResult
from labkit.labs.when_to_graduate.single_box import CASE
from labkit.labs.when_to_graduate.stateful import LEFT_BEHIND, MOVED, WRITTEN, StatefulResult

SWARM_HEALS = "Swarm's reconciliation loop: a task that is not running is replaced"


def check_claims(ledger: ClaimLedger, result: OrchestratorResult, portable: PortabilityResult,
                 stateful: StatefulResult | None = None) -> None:
    """The claims of notebook 13, with verdicts from its data (the state's and the runtimes' only where the replayed
    recording has them)."""
    ledger.check(
        "graduate.more_than_one_box", source=Source.CHAPTER, section=SECTION,
        claim="Needing more than one box is a sign it is time for orchestration; an orchestrator runs one service "
              "across several boxes from one command",
        value=float(result.nodes_used), unit="nodes running the service's tasks",
        measured=f"one `docker stack deploy` placed the tasks on {result.nodes_used} nodes "
                 f"({result.placement_text()})",
        criterion=demonstration("Swarm's spread scheduler", "one deploy command runs the service on more than one "
                                "node; the chapter's sign itself (when a team needs this) is a judgement we cannot "
                                "measure"),
        verdict=verdict(result.nodes_used > 1, caveat=True),
        caveat="the nodes are daemons in network namespaces of one machine, not separate boxes",
        tables=("placement",))
    tries, taken = result.as_stack, result.taken
    refused_as_written = bool(len(tries) and tries["exit_code"].iloc[0] != 0)
    ledger.check(
        "graduate.compose_file_is_not_a_stack", source=Source.FINDING, section=SECTION,
        claim="The chapter's compose.yaml is not a Swarm stack file: `docker stack deploy` refuses it as written, "
              "and the stack it takes after changes publishes the app's port on every address, not 127.0.0.1",
        value=float((tries["refused_text"] == as_stack.CHAPTER).sum()),
        unit="refusals about the chapter's own text (not labkit's edits of it)",
        measured="; ".join(f"{r.change}: exit {r.exit_code} ({r.message})"
                           + (f" — about {r.refused_text}" if r.refused_text else "") for r in tries.itertuples()),
        criterion="the file as written is refused, and the service made from the first version Swarm takes "
                  "publishes through the ingress mesh (no address to bind) the app's port that the file, as Compose "
                  "reads it, binds to one host address; a file taken as written fails it, one never taken is "
                  "inconclusive",
        verdict=verdict(refused_as_written and result.published_on_every_address, caveat=True) if len(taken)
        else Verdict.INCONCLUSIVE,
        caveat=f"the file is read by the docker CLI ({', '.join(sorted(set(tries['cli'].astype(str))))}): another "
               "version may refuse or ignore other keys",
        tables=("as_stack",))
    killed, sick, plain = result.healed("task killed"), result.healed("task unhealthy"), \
        result.healed("container unhealthy")
    nodes = result.healed("node killed")
    swarm_heals = bool(killed["replaced"].all() and sick["replaced"].all() and nodes["replaced"].all())
    plain_left = bool(len(plain) and not plain["replaced"].any())
    ledger.check(
        "graduate.orchestrator_heals", source=Source.FINDING, section=SECTION_HEALING,
        claim="The orchestrator replaces a killed task, an unhealthy task and a dead node's tasks; Compose on one "
              "engine leaves an unhealthy container running",
        value=float(swarm_heals and plain_left), unit="1 = all replaced by Swarm and left by Compose",
        measured=f"killed task replaced after {killed['replaced_s'].max():.1f} s, unhealthy task after "
                 f"{sick['replaced_s'].max():.1f} s, dead node's tasks after "
                 + ", ".join(f"{r.replaced_s:.1f} s (heartbeat {r.heartbeat_s:g} s)" for r in nodes.itertuples())
                 + f"; Compose: {plain['detail'].iloc[0] if len(plain) else 'not run'}",
        criterion=demonstration(SWARM_HEALS, "each Swarm case ends with the service's replicas running again and "
                                "Compose's container is the same one, still running and unhealthy, after the watch"),
        verdict=verdict(swarm_heals and plain_left, caveat=True),
        caveat="the nodes are daemons in network namespaces of one machine; a dead node is its dockerd killed with "
               "SIGKILL, not a box powered off or cut from the network",
        tables=("healing",))
    downs = result.node_downs
    in_window = bool(len(downs) and downs["detected_s"].between(downs["low_s"], downs["high_s"]).all())
    ledger.check(
        "graduate.node_down_after_missed_heartbeats", source=Source.FINDING, section=SECTION_HEALING,
        claim=f"A node whose daemon dies is marked down after it misses heartbeats: {swarm.GRACE_PERIODS - 1} to "
              f"{swarm.GRACE_PERIODS} heartbeat periods after its death, each period drawn within "
              f"{swarm.HEARTBEAT_EPSILON_S:g} s of the setting, so the heartbeat sets how soon its tasks move",
        value=float((downs["detected_s"] / downs["heartbeat_s"]).max()) if len(downs) else float("nan"),
        unit="heartbeat periods from the kill until seen down (the most of any kill)",
        measured="; ".join(f"heartbeat {r.heartbeat_s:g} s: seen down after {r.detected_s:.2f} s"
                           for r in downs.itertuples()),
        criterion="each kill is seen down within swarmkit's window: from "
                  + ", ".join(f"{r.low_s:.1f} to {r.high_s:.1f} s (heartbeat {r.heartbeat_s:g} s)"
                              for r in downs.itertuples())
                  + f" — at least {swarm.GRACE_PERIODS - 1} periods after the kill, at most {swarm.GRACE_PERIODS}, "
                    f"each period within {swarm.HEARTBEAT_EPSILON_S} s of the heartbeat either way, plus "
                    f"{swarm.HEARTBEAT_RPC_S + DOWN_SEEN_SLACK_S:.1f} s for the heartbeat's round trip and our poll",
        verdict=verdict(in_window), tables=("healing",))
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
        "graduate.rolling_update_without_loss", source=Source.CHAPTER, section=SECTION_SINGLE_BOX,
        claim="A real rolling deploy is what a higher-level orchestrator gives you",
        value=float(start_first["failed"].sum()) if len(start_first) else float("nan"),
        unit="failed requests during start-first updates",
        measured="; ".join(f"{case}: {int(r.failed)} of {int(r.requests)} failed, longest gap "
                           f"{r.longest_gap_s:.2f} s, " + (f"`up -d` returned after {r.median_duration_s:.1f} s"
                                                          if case == CASE else f"done after {r.median_duration_s:.1f}"
                                                          " s by the manager's report") + " (median)"
                           for case, r in pd.concat([updates, single_box]).iterrows()),
        criterion="every start-first update (parallelism 1, a delay between tasks) completes with zero failed "
                  f"requests from a client inside the swarm, while the same app's `{CASE}` under the same client "
                  "fails at least one",
        verdict=verdict(zero_loss and box_lost, caveat=True),
        caveat="measured on Swarm, not on the chapter's ECS or Kubernetes; the client resolves the service by "
               "DNS round robin (no IPVS here) and tries the next address when one refuses or stays silent for "
               f"{REQUEST_TIMEOUT_S:g} s"
               + (f"; the longest time without an answer in a start-first update was "
                  f"{start_first['longest_gap_s'].max():.2f} s" if len(start_first) else "")
               + (" (as long as the client's limit on one request: zero failures is not zero delay)"
                  if len(start_first) and start_first["longest_gap_s"].max() >= REQUEST_TIMEOUT_S else ""),
        tables=("rollout", "requests"))
    rolled_back = bool(len(broken) and (broken["final_state"] == "rollback_completed").all()
                       and broken["images_match"].all())
    ledger.check(
        "graduate.broken_release_rolled_back", source=Source.FINDING, section=SECTION_ROLLOUT,
        claim="A release whose health check fails is rolled back to the running image by the orchestrator",
        value=float(broken["median_duration_s"].iloc[0]) if len(broken) else float("nan"),
        unit=f"s from the update's start to the rollback completed (median of {int(broken['updates'].iloc[0])} "
             "rounds)" if len(broken) else "s from the update's start to the rollback completed",
        measured="; ".join(f"{case}: {r.final_state}, {r.median_duration_s:.1f} s, {int(r.failed)} of "
                           f"{int(r.requests)} requests failed; running image as before: {r.images_match}"
                           for case, r in broken.iterrows()),
        criterion="the update ends rollback_completed and every running task's image id is the previous one's",
        verdict=verdict(rolled_back), tables=("rollout",))
    if stateful is not None and stateful.recorded:
        check_stateful(ledger, stateful)
    if portable.recorded:
        check_portability(ledger, portable)


def check_stateful(ledger: ClaimLedger, stateful: StatefulResult) -> None:
    ledger.check(
        "graduate.state_stays_on_its_node", source=Source.FINDING, section=SECTION,
        claim="A local named volume stays on the node that made it: a replica moved to another node gets a new, "
              "empty volume of the same name (the volume's name moves across hosts, its data does not)",
        value=float(stateful.marker(MOVED)), unit="1 = the moved replica found the file its first copy wrote",
        measured=f"written on {stateful.node(WRITTEN)}: {stateful.marker(WRITTEN)}; found by the replica moved to "
                 f"{stateful.node(MOVED)}: {stateful.marker(MOVED)}; still on {stateful.node(LEFT_BEHIND)}: "
                 f"{stateful.marker(LEFT_BEHIND)}",
        criterion=demonstration("a local named volume belongs to the node that made it", "the replica moved to "
                                "another node starts with an empty volume of the same name and the file stays on "
                                "the first node"),
        verdict=verdict(stateful.state_stayed_behind), tables=("stateful",))


def check_portability(ledger: ClaimLedger, portable: PortabilityResult) -> None:
    others = portable.others()
    table = portable.table
    ledger.check(
        "graduate.runtime_replaceable", source=Source.CHAPTER, section=SECTION,
        claim="The image is portable and the runtime replaceable: an image built with Docker runs unchanged under "
              "another runtime",
        value=float(len(others)), unit="runtimes besides Docker that ran the image",
        measured="; ".join(f"{name}: printed {r.outputs!r}, config {r.config_digest[:19]}…"
                           for name, r in table.iterrows())
                 + "".join(f"; {name} not run ({why})" for name, why in portable.missing.items()),
        criterion="each other runtime found here runs the archive `docker save` wrote, prints Docker's output and "
                  "reports Docker's config digest; with one other runtime only, a caveat; with none, inconclusive",
        verdict=verdict(portable.same_everywhere(), caveat=len(others) < 2) if others else Verdict.INCONCLUSIVE,
        caveat="" if len(others) >= 2 else "only " + (" and ".join(others) or "Docker") + " could run here",
        tables=("portability",))
