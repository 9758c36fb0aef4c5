"""Section 1: PID 1 and zombies, counted from the host's /proc over time: without an init, with ``--init`` and
with an init built into the image (tini as its ENTRYPOINT)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import containers, processes, procfs
from labkit.labs.pitfalls_and_security.declaration import (
    PIDS_LIMIT,
    check_number,
    check_repeats,
    limits_for,
    probe_argv,
    probe_images,
)

NO_INIT = "no init (the program is PID 1)"
WITH_INIT = "--init (docker-init is PID 1)"
BUILT_IN = "tini built into the image (its ENTRYPOINT)"
# Each variant: the probe image's stage it runs and the options of its `docker run`.
VARIANTS = {NO_INIT: ("root", {}), WITH_INIT: ("root", {"init": True}), BUILT_IN: ("tini", {})}
SAMPLE_S = 0.1  # seconds between two readings of /proc
HEADROOM_PIDS = 8  # pids the program, its child and the init need beside the zombies


@dataclass(frozen=True)
class ZombieResult:
    """`samples`: variant, repeat, t_s (s since the container started), zombies and processes in the container
    (counted from the host's /proc: every process below its main process, zombies included), pid1 (PID 1's
    program), orphans (how many grandchildren the program orphaned), and the limits."""

    samples: pd.DataFrame

    @property
    def orphans(self) -> int:
        return int(self.samples["orphans"].iloc[0])

    def final(self, variant: str) -> int:
        """Zombies at each repeat's last reading, the smallest over the repeats."""
        rows = self.samples[self.samples["variant"] == variant]
        return int(rows.groupby("repeat")["zombies"].last().min())

    def peak(self, variant: str) -> int:
        return int(self.samples.loc[self.samples["variant"] == variant, "zombies"].max())

    def pid1(self, variant: str) -> str:
        return str(self.samples.loc[self.samples["variant"] == variant, "pid1"].iloc[0])

    @property
    def variants(self) -> list[str]:
        """The variants measured (a recording made before the built-in init has only the first two)."""
        return [v for v in VARIANTS if v in set(self.samples["variant"])]

    def table(self) -> pd.DataFrame:
        """Per variant: PID 1, orphans made, zombies at the end (fewest over the repeats) and at the peak."""
        return pd.DataFrame([{"variant": v, "PID 1": self.pid1(v), "orphans made": self.orphans,
                              "zombies at the end": self.final(v), "zombies at the peak": self.peak(v)}
                             for v in self.variants])

    def conclusion(self) -> str:
        without, with_init = self.final(NO_INIT), self.final(WITH_INIT)
        return (f"**What we measured.** The program orphaned {self.orphans} grandchildren. As PID 1 "
                f"(`{self.pid1(NO_INIT)}`) it left **{without} zombies** at the end: it waits for the children it "
                f"started, never for the orphans the kernel hands to PID 1. Under `--init`, PID 1 is "
                f"`{self.pid1(WITH_INIT)}` and **{with_init} zombies** were left (at most {self.peak(WITH_INIT)} at "
                f"one reading, each reaped within a {SAMPLE_S:g} s sampling step)"
                + (f"; with tini built into the image as its ENTRYPOINT, PID 1 is `{self.pid1(BUILT_IN)}` and "
                   f"**{self.final(BUILT_IN)} zombies** were left" if BUILT_IN in self.variants else
                   " (the init built into an image was not recorded then)")
                + f". Zombies hold a pid each: under `--pids-limit {PIDS_LIMIT}` a long-running PID 1 that never "
                  "reaps would run out of pids.")


def run_zombies(lab: LabSession, orphans: int = 10, interval_s: float = 0.2, settle_s: float = 1.0,
                repeats: int = 1, memory_limit_mib: int = 64) -> ZombieResult:
    """A program that orphans `orphans` grandchildren (one every `interval_s` s) run without an init, with
    ``--init`` and with tini built into its image, the three side by side in each of `repeats` rounds (started in
    an order reversed round by round); zombies counted from /proc every 0.1 s until `settle_s` s after the last."""
    if isinstance(orphans, bool) or not isinstance(orphans, int) or not 1 <= orphans <= PIDS_LIMIT - HEADROOM_PIDS:
        raise BadParameter(f"orphans={orphans!r} is out of range.",
                           f"Give 1 to {PIDS_LIMIT - HEADROOM_PIDS}: each zombie holds one of the container's "
                           f"{PIDS_LIMIT} pids.")
    check_number(interval_s, "interval_s", 0.01, 5)
    check_number(settle_s, "settle_s", 0.2, 30)
    check_repeats(repeats)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading the container's processes in /proc")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, object]] = []
        duration = orphans * interval_s + settle_s
        argv = probe_argv("orphans", str(orphans), str(interval_s))
        with lab.scope() as scope, probe_images(client, scope, tini=True) as made:
            for repeat in range(repeats):
                order = list(VARIANTS) if repeat % 2 == 0 else list(reversed(VARIANTS))
                # The round's variants run side by side (their counts do not depend on each other's), each timed
                # from its own start: one round takes one program's time, not three. Readings begin once the last
                # has started, so the first started is first read about 0.5 s in (its final count is unaffected).
                with ExitStack() as round_:
                    watched: list[tuple[str, int, str, float]] = []  # variant, main pid, PID 1, start
                    for variant in order:
                        stage, options = VARIANTS[variant]
                        container = round_.enter_context(containers.running(
                            client, scope, getattr(made, stage), argv, stem=f"zombies-{repeat}-{len(watched)}",
                            limits=limits, **options))
                        init = containers.host_pid(client, container.id)
                        watched.append((variant, init, " ".join(procfs.cmdline(init)[:1]), time.monotonic()))
                    while any(time.monotonic() - started < duration for *_, started in watched):
                        table = processes.process_table()
                        for variant, init, pid1, started in watched:
                            if (t_s := time.monotonic() - started) < duration:
                                below = processes.descendants(table, init)
                                rows.append({"variant": variant, "repeat": repeat, "t_s": t_s,
                                             "zombies": sum(p.state == "Z" for p in below),
                                             "processes": 1 + len(below), "pid1": pid1, "orphans": orphans,
                                             **limits.record()})
                        time.sleep(SAMPLE_S)
        return pd.DataFrame(rows)

    return ZombieResult(lab.measure("zombies", experiment, orphans=orphans, interval_s=interval_s,
                                    settle_s=settle_s, repeats=repeats, **limits.record()))
