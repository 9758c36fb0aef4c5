"""What notebook 13's updates share, on the swarm and on one engine: polling until a state is reached, the bounded
load client run as a container beside the app while an update is made, and the row each update adds to the rollout
table."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.instruments import loadclient, measure, shell
from labkit.instruments.containers import NO_DNS
from labkit.labs.when_to_graduate.declaration import (
    APP_PORT,
    CLIENT_LIMITS,
    LOAD_CONCURRENCY,
    LOADCLIENT,
    MAX_REQUESTS_PER_LOAD,
    REQUEST_TIMEOUT_S,
)
from labkit.labs.when_to_graduate.result import gaps_and_failures

POLL_S = 0.25  # between polls of an engine (each poll is one to three CLI calls)
CONVERGE_TIMEOUT_S = 90.0
CLIENT_START_TIMEOUT_S = 30.0


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = CONVERGE_TIMEOUT_S) -> float:
    """:func:`measure.wait_until` at this notebook's pace: engines looked at every POLL_S."""
    return measure.wait_until(condition, what, limit_s, POLL_S)


def seconds_until(condition: Callable[[], bool], limit_s: float = CONVERGE_TIMEOUT_S) -> float:
    """:func:`measure.poll_until` at this notebook's pace: NaN when `condition` did not hold within `limit_s` (for
    an outcome a claim asks about, recorded rather than raised)."""
    return measure.poll_until(condition, limit_s, POLL_S)


@dataclass(frozen=True)
class Update:
    """What an update reported when it had converged: `state` (the engine's word: completed, rollback_completed …),
    `duration_s` (from its start until its tool said it was done), the image `final_image` now running, and
    `images_match` (every running container's image id is the one expected)."""

    state: str
    duration_s: float
    final_image: str
    images_match: bool


def updated_under_load(cli: Sequence[str], network: str, labels: Sequence[str], client_image: str, window_s: float,
                       update: Callable[[], Update]) -> tuple[Update, bool, loadclient.Load]:
    """Run the load client (labkit's python base, one request at a time to ``web`` on `network`, at most
    `window_s` s) through the docker CLI `cli` while `update` runs and converges; then end the load (SIGTERM: the
    client stops starting requests and prints what it did). Returns the update, whether the load still ran when it
    had converged (else its window, the cap, ended first), and the client's log. The client asks no DNS server
    but the engine's own: a name that is gone fails here instead of being asked of the host's resolver."""
    name = f"labkit-13-load-{uuid.uuid4().hex[:8]}"
    argv = [*cli, "run", "--rm", "--name", name, "--network", network, "--dns", NO_DNS, *labels,
            *CLIENT_LIMITS.cli_args(), "-v", f"{LOADCLIENT}:/loadclient.py:ro", "--entrypoint", "python3",
            client_image, "/loadclient.py", f"http://web:{APP_PORT}/", "--count", str(MAX_REQUESTS_PER_LOAD),
            "--concurrency", str(LOAD_CONCURRENCY), "--time-limit", str(window_s),
            "--request-timeout", str(REQUEST_TIMEOUT_S)]
    client = shell.spawn(argv, stdout=shell.PIPE, stderr=shell.PIPE, stdin=shell.DEVNULL)
    try:
        wait_until(lambda: bool(shell.run([*cli, "ps", "-q", "--filter", f"name={name}"], 30).stdout.strip()),
                   "the load client running", CLIENT_START_TIMEOUT_S)
        done = update()
        covered = client.poll() is None
        shell.run([*cli, "kill", "--signal", "TERM", name], 30, check=False)
        out, err = client.communicate(timeout=window_s + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode != 0:
        raise shell.CommandError(argv, client.returncode, out, err, hint="the load client failed")
    return done, covered, loadclient.parse_output(out)


def rollout_rows(case: str, order: str, round_index: int, from_image: str, to_image: str, done: Update,
                 covered: bool, load: loadclient.Load) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rollout table's row of one update under load, and the requests table's rows of its load."""
    requests = [{"case": case, "round": round_index, "index": r.index, "started_s": r.started_s,
                 "latency_s": r.latency_s, "status": r.status, "error": r.error} for r in load.requests]
    failed, gap = gaps_and_failures(pd.DataFrame(requests, columns=["started_s", "latency_s", "error"]))
    return ({"case": case, "order": order, "round": round_index, "from_image": from_image, "to_image": to_image,
             "final_image": done.final_image, "state": done.state, "duration_s": done.duration_s,
             "requests": len(requests), "failed": failed, "longest_gap_s": gap, "images_match": done.images_match,
             "load_covered": covered}), requests
