"""What notebook 13 measured, read from its tables: sentences and numbers computed from them (no engine here)."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.instruments import swarm
from labkit.labs.when_to_graduate.declaration import LEFT_BEHIND, MARKER, MOVED, VOLUME, WRITTEN

DOWN_SEEN_SLACK_S = 0.5  # our poll of the manager (every 0.25 s) and its CLI call, on top of swarmkit's window


def gaps_and_failures(requests: pd.DataFrame) -> tuple[int, float]:
    """(failed requests, longest gap) of one load: a request failed when its `error` is not empty; the longest gap
    is the longest time, in seconds, between two consecutive successful responses (each ends at `started_s` +
    `latency_s`) — how long a client saw no answer at all. NaN with fewer than two successes."""
    failed = int((requests["error"].fillna("") != "").sum())
    done = requests[requests["error"].fillna("") == ""]
    ends = sorted((done["started_s"] + done["latency_s"]).tolist())
    gap = max((b - a for a, b in itertools.pairwise(ends)), default=math.nan)
    return failed, float(gap)


@dataclass(frozen=True)
class StatefulResult:
    """What :func:`.stateful.move_state` found. `steps`: step (written, moved, left behind), node, marker (the
    file was there), detail."""

    steps: pd.DataFrame

    def marker(self, step: str) -> bool:
        return bool(self.steps.set_index("step").loc[step, "marker"])

    def node(self, step: str) -> str:
        return str(self.steps.set_index("step").loc[step, "node"])

    @property
    def state_stayed_behind(self) -> bool:
        """The replica moved to another node, found its volume empty there, and the file is still on the first."""
        return (self.node(MOVED) != self.node(WRITTEN) and self.marker(WRITTEN) and not self.marker(MOVED)
                and self.marker(LEFT_BEHIND))

    def conclusion(self) -> str:
        found = "found" if self.marker(MOVED) else "did **not** find"
        kept = "still holds it" if self.marker(LEFT_BEHIND) else "no longer holds it"
        moved = self.node(MOVED) != self.node(WRITTEN)
        where = ("the volume of the same name there was a new one, made empty for it" if moved
                 and not self.marker(MOVED) else "its state went with it" if moved else
                 "it was not moved to another node, so this run shows nothing about moving state")
        lesson = (" A local volume belongs to one node; moving state with its replica takes shared storage or a "
                  "volume plugin." if self.state_stayed_behind else "")
        restarted = f"Moved to {self.node(MOVED)}" if moved else f"Started again on {self.node(MOVED)}"
        return (f"**What we measured.** The replica wrote `{MARKER}` into the named volume `{VOLUME}` on "
                f"{self.node(WRITTEN)}. {restarted}, it {found} the file: {where}. The volume on "
                f"{self.node(LEFT_BEHIND)} {kept}.{lesson}")


@dataclass(frozen=True)
class OrchestratorResult:
    """`placement`: task, node, state, image after the deploy; `as_stack`: notebook 12's compose file given to
    ``docker stack deploy`` after each change (step, change, exit_code, message, what the file asks of the app as
    Compose reads it — asked_ports as JSON, asked_restart — and where Swarm took it, the app's published ports as
    JSON and its restart condition); `healing`: event, heartbeat_s, detected_s,
    replaced_s, replaced, detail; `rollout`: one row per update (case, order, round, images, state, duration_s,
    requests, failed, longest_gap_s, images_match); `requests`: every request of every load; `stateful`: a
    replica's volume moved (:class:`StatefulResult`); `endpoint_mode`
    chosen for this kernel and the `kernel` evidence it was chosen on."""

    placement: pd.DataFrame
    as_stack: pd.DataFrame
    healing: pd.DataFrame
    rollout: pd.DataFrame
    requests: pd.DataFrame
    stateful: StatefulResult
    endpoint_mode: str
    kernel: str

    @property
    def nodes_used(self) -> int:
        return int(self.placement["node"].nunique())

    def healed(self, event: str) -> pd.Series:
        """The healing rows whose event starts with `event`."""
        return self.healing[self.healing["event"].str.startswith(event)]

    @property
    def healing_times(self) -> pd.DataFrame:
        """Per healing event (its label with the heartbeat): seconds until detected and until replaced."""
        labels = [f"{r.event}" + (f", heartbeat {r.heartbeat_s:g} s" if r.event.startswith("node") else "")
                  for r in self.healing.itertuples()]
        return self.healing.set_index(pd.Index(labels))[["detected_s", "replaced_s"]]

    @property
    def node_downs(self) -> pd.DataFrame:
        """Per node killed: its heartbeat, when it was seen down, and swarmkit's window for that (low_s, high_s:
        :func:`labkit.instruments.swarm.down_window_s` plus our poll's slack), all in s after the kill."""
        rows = self.healed("node killed")
        windows = [swarm.down_window_s(h) for h in rows["heartbeat_s"]]
        return pd.DataFrame({"heartbeat_s": rows["heartbeat_s"], "detected_s": rows["detected_s"],
                             "low_s": [low for low, _ in windows],
                             "high_s": [high + DOWN_SEEN_SLACK_S for _, high in windows]}).reset_index(drop=True)

    @property
    def timeline(self) -> pd.DataFrame:
        """Every request: case, when it started (t_s, s since its load started) and its latency in ms."""
        return self.requests.assign(t_s=self.requests["started_s"], latency_ms=self.requests["latency_s"] * 1e3)

    @property
    def table(self) -> pd.DataFrame:
        """Per update case and order: median duration, total failed requests and the longest gap."""
        return (self.rollout.groupby(["case"], sort=False)
                .agg(updates=("round", "count"), final_state=("state", "last"),
                     median_duration_s=("duration_s", "median"), requests=("requests", "sum"),
                     failed=("failed", "sum"), longest_gap_s=("longest_gap_s", "max"),
                     images_match=("images_match", "all"), load_covered=("load_covered", "all")))

    def recount(self) -> pd.DataFrame:
        """The rollout table's failed and gap columns recomputed from the client's own request log."""
        rows = []
        for (case, round_index), load in self.requests.groupby(["case", "round"], sort=False):
            failed, gap = gaps_and_failures(load)
            rows.append({"case": case, "round": round_index, "failed": failed, "longest_gap_s": gap})
        return pd.DataFrame(rows)

    def placement_text(self) -> str:
        counts = self.placement.groupby("node").size()
        return ", ".join(f"{node}: {n}" for node, n in counts.items())

    @property
    def pinned(self) -> int:
        """How many tasks run an image named by its digest (``…@sha256:``)."""
        return int(self.placement["image"].str.contains("@sha256:", regex=False).sum())

    def conclusion_deploy(self) -> str:
        image = str(self.placement["image"].iloc[0])
        return (f"**What we measured.** This kernel: {self.kernel}, so the stack uses `endpoint_mode: "
                f"{self.endpoint_mode}`. `docker stack deploy` placed {len(self.placement)} tasks on "
                f"{self.nodes_used} nodes ({self.placement_text()}); {self.pinned} of them run the tag pinned to a "
                f"digest, e.g. `{image.partition('@')[0]}` as `…@{image.partition('@')[2][:19]}…`.")

    @property
    def taken(self) -> pd.DataFrame:
        """The try Swarm took (none when it refused every one)."""
        return self.as_stack[self.as_stack["exit_code"] == 0]

    @property
    def published_ports(self) -> list[dict[str, Any]]:
        """The ports of the app's service Swarm made from the file it took (none when it took none)."""
        found: list[dict[str, Any]] = json.loads(str(self.taken["published"].iloc[0]) or "[]") if len(self.taken) \
            else []
        return found

    @property
    def asked_addresses(self) -> list[str]:
        """The host addresses the file Swarm took asks the app's ports to bind ('' for a port on every address)."""
        if not len(self.taken):
            return []
        return [str(p.get("host_ip", "")) for p in json.loads(str(self.taken["asked_ports"].iloc[0]) or "[]")]

    @property
    def published_on_every_address(self) -> bool:
        """The file asks for ports on one address, and the service Swarm made publishes them through the ingress
        mesh instead: on every address of every node (a Swarm port has no address to bind)."""
        ports = self.published_ports
        return bool(ports) and all(p.get("PublishMode") == "ingress" for p in ports) \
            and bool(self.asked_addresses) and all(self.asked_addresses)

    def conclusion_as_stack(self) -> str:
        refused = self.as_stack[self.as_stack["exit_code"] != 0]
        parts = [f"{r.change}: refused ({r.message})" for r in refused.itertuples()]
        if not len(self.taken):
            return "**What we measured.** " + "; ".join(parts) + f"; Swarm took none of the {len(parts)} tries."
        taken = self.taken.iloc[0]
        ports = ", ".join(f"{p['PublishedPort']}→{p['TargetPort']} ({p['PublishMode']})" for p in self.published_ports)
        asked = " and ".join(f"`{address}`" for address in dict.fromkeys(self.asked_addresses))
        return ("**What we measured.** " + "; ".join(parts) + f"; {taken['change']}: taken, with the warnings "
                f"“{taken['message']}”. The app's service publishes {ports or 'no port'}"
                + (f" — on every address of every node, not on {asked} as the file asked"
                   if self.published_on_every_address else "")
                + f", and restarts on `{taken['restart']}` where Compose reads the file's restart as "
                  f"`{taken['asked_restart']}`.")

    def conclusion_healing(self) -> str:
        parts = []
        for row in self.healing.itertuples():
            if row.event.startswith("container unhealthy"):
                fate = "replaced" if row.replaced else "left running"
                parts.append(f"under Compose on one engine, the unhealthy container was {fate} ({row.detail})")
            elif row.event.startswith("node"):
                parts.append(f"{row.event} with a {row.heartbeat_s:g} s heartbeat: seen down after "
                             f"{row.detected_s:.1f} s, its tasks running elsewhere after {row.replaced_s:.1f} s")
            else:
                parts.append(f"{row.event}: a replacement ran after {row.replaced_s:.1f} s")
        return "**What we measured.** " + "; ".join(parts) + "."

    def conclusion_rollout(self) -> str:
        parts = [f"`{case}`: {row.updates} update(s), {row.final_state}, median {row.median_duration_s:.1f} s, "
                 f"{int(row.failed):,} of {int(row.requests):,} requests failed, longest gap without an answer "
                 f"{row.longest_gap_s:.2f} s, running image as expected: {row.images_match}"
                 for case, row in self.table.iterrows()]
        return "**What we measured.** " + "; ".join(parts) + "."
