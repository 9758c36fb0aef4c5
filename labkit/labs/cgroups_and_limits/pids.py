"""Section 6: a fork loop under ``--pids-limit``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import procfs, stress
from labkit.instruments.limits import MIB, Limits, check_pids
from labkit.labs.cgroups_and_limits.declaration import WAIT_S
from labkit.labs.cgroups_and_limits.rig import check_positive, stress_rig


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
            deadline = time.monotonic() + WAIT_S
            while (counts := stress.fork_counts(container.logs().decode())) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the fork loop did not report within {WAIT_S:.0f} s")
                time.sleep(0.02)  # polling the program's output for the line that ends its loop
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
