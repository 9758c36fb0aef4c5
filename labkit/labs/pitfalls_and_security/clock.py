"""Section 5: time inside a container: the host's clock, no right to set it, and TZ that changes only the display."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, procfs
from labkit.labs.pitfalls_and_security.declaration import (
    limits_for,
    probe_argv,
    probe_images,
    said,
    wait_ready,
)

UTC_DEFAULT = "no TZ"
TOKYO = "TZ=JST-9"  # a POSIX TZ string: needs no tzdata in the image
VARIANTS = {UTC_DEFAULT: {}, TOKYO: {"environment": {"TZ": "JST-9"}}}


@dataclass(frozen=True)
class ClockResult:
    """`clock`: variant, tz, before_ns / inside_ns / after_ns (CLOCK_REALTIME read on the host just before, inside
    the container, and on the host just after; ns since the epoch), set_clock (clock_settime to the time just read:
    ok or the errno), shown (the local time the container prints), utc_offset_s, time_ns_shared (the container's
    time namespace is the host's)."""

    clock: pd.DataFrame

    def row(self, variant: str) -> pd.Series:
        return self.clock[self.clock["variant"] == variant].iloc[0]

    @property
    def bracketed(self) -> bool:
        """Every reading inside lies between the host's readings around it."""
        c = self.clock
        return bool(((c["before_ns"] <= c["inside_ns"]) & (c["inside_ns"] <= c["after_ns"])).all())

    @property
    def bracket_ms(self) -> float:
        """The widest bracket (host after - host before), ms: how closely the readings pin the container's clock."""
        return float((self.clock["after_ns"] - self.clock["before_ns"]).max() / 1e6)

    def conclusion(self) -> str:
        utc, tokyo = self.row(UTC_DEFAULT), self.row(TOKYO)
        return (f"**What we measured.** The container's CLOCK_REALTIME fell between two host readings "
                f"{self.bracket_ms:.0f} ms apart every time ({'yes' if self.bracketed else 'no'}); its time namespace "
                f"is the host's ({'shared' if self.clock['time_ns_shared'].all() else 'its own'}): a host whose "
                f"clock is wrong hands the same wrong time to every container. Setting the clock ended "
                f"**{utc['set_clock']}** (no CAP_SYS_TIME; we never grant it, it would set the host's clock). "
                f"`{TOKYO}` changed only the display: `{utc['shown']}` against `{tokyo['shown']}` "
                f"(UTC offset {tokyo['utc_offset_s']} s), from the same clock.")


def run_clock(lab: LabSession, memory_limit_mib: int = 64) -> ClockResult:
    """Inside a running container (without and with TZ): read the clock between two host readings, try to set it to
    the time just read, print the local time; and compare its time namespace with this process's."""
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading a container's /proc/<pid>/ns")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, object]] = []
        with lab.scope() as scope, probe_images(client, scope) as made:
            for variant, options in VARIANTS.items():
                with containers.running(client, scope, made.root, probe_argv("wait"), stem=f"clock-{len(rows)}",
                                        limits=limits, **options) as container:
                    wait_ready(container)
                    own = procfs.namespaces(containers.host_pid(client, container.id)).get("time")
                    before = time.clock_gettime_ns(time.CLOCK_REALTIME)
                    _, output = container.exec_run(probe_argv("clock"))  # docker exec keeps the container's env
                    after = time.clock_gettime_ns(time.CLOCK_REALTIME)
                    inside = said(output)
                    rows.append({"variant": variant, "tz": inside["tz"], "before_ns": before,
                                 "inside_ns": inside["realtime_ns"], "after_ns": after,
                                 "set_clock": inside["set_clock"], "shown": inside["shown"],
                                 "utc_offset_s": inside["utc_offset_s"],
                                 "time_ns_shared": own is not None and own == procfs.namespaces("self").get("time")})
        return pd.DataFrame(rows)

    return ClockResult(lab.measure("clock", experiment, **limits.record()))
