"""Section 6: a fork loop under ``--pids-limit``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import procfs, stress
from labkit.instruments.limits import MIB, Limits, check_pids
from labkit.labs.cgroups_and_limits.declaration import PIDS_NEIGHBOUR_COLUMNS, WAIT_S
from labkit.labs.cgroups_and_limits.rig import TwoRounds, check_positive, stress_rig


@dataclass(frozen=True)
class PidsResult:
    """One row: pids_limit, attempts, forked, eagain, other (fork failures of another kind), pids_current (tasks
    in the group at the end of the loop), pids_limit_hits (pids.events max), host_processes_before/during/after,
    stop_s (``docker stop`` until exit, s) and exit_code."""

    table: pd.DataFrame

    @property
    def record(self) -> pd.Series:
        return self.table.iloc[0]

    @property
    def stopped_at_limit(self) -> bool:
        """PID 1 plus the children it forked fill the limit exactly, and every other attempt got EAGAIN."""
        r = self.record
        return (int(r["forked"]) + 1 == int(r["pids_limit"]) == int(r["pids_current"])
                and int(r["eagain"]) == int(r["attempts"]) - int(r["forked"]))


    def conclusion(self) -> str:
        r = self.record
        return (f"**What we measured.** Of {int(r['attempts'])} forks, {int(r['forked'])} succeeded and "
                f"{int(r['eagain'])} failed with EAGAIN ({int(r['other'])} other failures): PID 1 plus "
                f"{int(r['forked'])} children is {int(r['pids_current'])} tasks, the limit of "
                f"{int(r['pids_limit'])}; pids.events counted {int(r['pids_limit_hits'])} refusals. The host had "
                f"{int(r['host_processes_before'])} processes before, {int(r['host_processes_during'])} during and "
                f"{int(r['host_processes_after'])} after. `docker stop` took {r['stop_s'] * 1e3:.0f} ms and PID 1 "
                f"exited {int(r['exit_code'])}: it installs a SIGTERM handler (PID 1 ignores signals it has no "
                "handler for) and kills its children on the way out.")


def run_pids(lab: LabSession, pids_limit: int = 32, attempts: int = 100) -> PidsResult:
    """PID 1 forks sleeping children `attempts` times under ``--pids-limit <pids_limit>`` and counts the
    refusals; the host's process count before, during and after."""
    limit = check_pids(pids_limit, "pids_limit")
    attempts = check_positive(attempts, "attempts", "fork attempts", 100)

    def experiment() -> pd.DataFrame:
        before = procfs.process_count()
        with stress_rig(lab) as rig, rig.fence("pids", Limits(128 * MIB, limit + 8, 1.0)) as (_, parent), \
                rig.container(["fork", str(attempts)], stem="pids", limits=Limits(64 * MIB, limit, 1.0),
                              parent=parent, wait=False) as container:
            counts = _fork_counts(container)
            group = rig.group_of(container)
            pids_current, hits = group.pids_current(), group.pids_events().get("max", 0)
            during = procfs.process_count()
            stop_started = time.perf_counter()
            container.stop(timeout=10)
            stop_s = time.perf_counter() - stop_started
            exit_code = int(container.wait(timeout=WAIT_S)["StatusCode"])
        return pd.DataFrame([{
            "pids_limit": limit, "attempts": attempts, "forked": counts["ok"], "eagain": counts["eagain"],
            "other": counts["other"], "pids_current": pids_current, "pids_limit_hits": hits,
            "host_processes_before": before, "host_processes_during": during,
            "host_processes_after": procfs.process_count(), "stop_s": stop_s, "exit_code": exit_code,
        }])

    return PidsResult(lab.measure("pids", experiment, pids_limit=pids_limit, attempts=attempts))


UNLIMITED_FORKER = "neighbour without --pids-limit"


@dataclass(frozen=True)
class PidsNeighbourResult(TwoRounds):
    """`table`: one row per condition (:data:`PIDS_NEIGHBOUR_COLUMNS`): the parent group's pids limit, the
    neighbour's own limit (NaN: none), its forks, and the victim's fork attempts, successes and EAGAIN refusals."""

    table: pd.DataFrame

    def conclusion(self) -> str:
        unlimited, limited = self.rounds()
        return (f"**What we measured.** In a parent group of {int(unlimited['fence_pids'])} pids, a neighbour "
                f"without `--pids-limit` forked {int(unlimited['neighbour_forked'])} children; then the victim "
                f"(already running, under its own `--pids-limit {int(unlimited['victim_pids_limit'])}`) forked "
                f"{int(unlimited['victim_forked'])} of {int(unlimited['victim_attempts'])} "
                f"({int(unlimited['victim_eagain'])} EAGAIN). With `--pids-limit "
                f"{int(limited['neighbour_pids_limit'])}` the neighbour stopped at {int(limited['neighbour_forked'])} "
                f"and the victim forked {int(limited['victim_forked'])} of {int(limited['victim_attempts'])}. The "
                "victim's own limit did not protect it: a fork needs room in every group above it too.")


def _fork_counts(container: Any) -> dict[str, int]:
    """The fork loop's counts once it reports them (bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while (counts := stress.fork_counts(container.logs().decode())) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the fork loop did not report within {WAIT_S:.0f} s")
        time.sleep(0.02)  # polling the program's output for the line that ends its loop
    return counts


def run_pids_neighbour(lab: LabSession, fence_pids: int = 48, neighbour_pids_limit: int = 16,
                       victim_attempts: int = 8) -> PidsNeighbourResult:
    """In a parent group limited to `fence_pids` pids, a victim (under its own ``--pids-limit``, room for its
    `victim_attempts` forks) starts and waits; a neighbour forks as often as the group allows — without
    ``--pids-limit``, then in a second round under ``--pids-limit <neighbour_pids_limit>`` — and the victim tries
    its forks."""
    fence = check_pids(fence_pids, "fence_pids")
    own = check_pids(neighbour_pids_limit, "neighbour_pids_limit")
    attempts = check_positive(victim_attempts, "victim_attempts", "fork attempts", 8)
    if not own + attempts + 1 < fence:
        raise BadParameter(f"fence_pids={fence_pids!r}: the limited neighbour ({own}) and the victim ({attempts} "
                           "forks and its PID 1) must fit in the parent group together.",
                           f"Choose fence_pids above {own + attempts + 1}, e.g. {2 * (own + attempts)}.")

    def experiment() -> pd.DataFrame:
        rows = []
        with stress_rig(lab) as rig:
            for tag, neighbour_limit in (("unlimited", None), ("limited", own)):
                unlimited: dict[str, Any] = {} if neighbour_limit else {"pids_limit": -1}  # -1: no limit of its own
                with rig.fence(f"pids-neighbour-{tag}", Limits(128 * MIB, fence, 1.0)) as (_, parent), \
                        rig.container(["fork", str(attempts)], stem=f"pids-victim-{tag}", parent=parent,
                                      limits=Limits(64 * MIB, attempts + 1, 1.0)) as victim:
                    # the victim's PID 1 runs first (waiting for its go): no container starts in a full group
                    with rig.container(["fork", str(2 * fence)], stem=f"pids-neighbour-{tag}", parent=parent,
                                       limits=Limits(64 * MIB, neighbour_limit or fence, 1.0), wait=False,
                                       **unlimited) as neighbour:
                        neighbour_counts = _fork_counts(neighbour)
                        rig.go(victim)
                        victim_counts = _fork_counts(victim)
                        neighbour.stop(timeout=10)
                    victim.stop(timeout=10)
                rows.append({"condition": UNLIMITED_FORKER if neighbour_limit is None else
                             f"neighbour with --pids-limit {neighbour_limit}", "fence_pids": fence,
                             "neighbour_pids_limit": neighbour_limit or float("nan"),
                             "neighbour_forked": neighbour_counts["ok"], "victim_pids_limit": attempts + 1,
                             "victim_attempts": attempts, "victim_forked": victim_counts["ok"],
                             "victim_eagain": victim_counts["eagain"]})
        return pd.DataFrame(rows, columns=list(PIDS_NEIGHBOUR_COLUMNS))

    return PidsNeighbourResult(lab.measure("pids_neighbour", experiment, fence_pids=fence_pids,
                                           neighbour_pids_limit=neighbour_pids_limit,
                                           victim_attempts=victim_attempts))
