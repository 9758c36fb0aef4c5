"""Section 4: start-up cost, fork/exec against a container from scratch, the SDK and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, elf, images, measure, scratch
from labkit.instruments.shell import run
from labkit.labs.what_a_container_is.declaration import (
    BUSYBOX_TRUE,
    DOCKER_CLI,
    DOCKER_SDK,
    FORK_EXEC,
    SCRATCH_START,
    limits_for,
)


@dataclass(frozen=True)
class StartupResult:
    """`samples`: method, repeat, position (place in its interleaved round), wall_s — one row per start of
    `/bin/busybox true` — and the limits the containers ran under and whether the binary is static."""

    samples: pd.DataFrame

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per method: n, median, q1, q3, ci_low, ci_high (seconds), coverage of that interval, and the median's
        ratio to fork/exec (`ratio_to_floor`)."""
        return measure.summary_table(self.samples, floor=FORK_EXEC)

    def median_s(self, method: str) -> float:
        return float(self.summary.loc[method, "median"])

    def ms(self, method: str, column: str = "median") -> float:
        return float(self.summary.loc[method, column]) * 1e3

    def ratio(self, method: str) -> float:
        return float(self.summary.loc[method, "ratio_to_floor"])

    @property
    def n(self) -> int:
        return int(self.summary["n"].min())

    @property
    def coverage(self) -> float:
        return float(self.summary["coverage"].min())

    @property
    def conditions(self) -> pd.Series:
        """What every start ran under: memory_limit_bytes, pids_limit, cpus, and whether the binary is static."""
        return self.samples[["memory_limit_bytes", "pids_limit", "cpus", "static_binary"]].iloc[0]

    def summary_ms(self) -> pd.DataFrame:
        """:attr:`summary` with times in milliseconds, rounded for display."""
        times = ["median", "q1", "q3", "ci_low", "ci_high"]
        table = self.summary[["n", *times, "coverage", "ratio_to_floor"]].copy()
        table[times] = table[times] * 1e3
        return table.rename(columns={c: f"{c}_ms" for c in times}).round(3)

    def conclusion(self) -> str:
        lim = self.conditions
        binary = "a static binary" if bool(lim["static_binary"]) else "a DYNAMIC binary (not what we meant to time)"
        return (f"**What we measured** (n = {self.n} per method, interleaved; median with an order-statistic "
                f"interval that holds the true median with probability {self.coverage:.1%}; {binary}; both "
                f"containers under {lim['memory_limit_bytes'] / 2**20:.0f} MiB, {lim['pids_limit']} pids and "
                f"{lim['cpus']:g} CPU). fork/exec: {self.ms(FORK_EXEC):.2f} ms. From scratch: "
                f"{self.ms(SCRATCH_START):.1f} ms ({self.ratio(SCRATCH_START):.0f}×). docker SDK: "
                f"{self.ms(DOCKER_SDK):.0f} ms [{self.ms(DOCKER_SDK, 'ci_low'):.0f}, "
                f"{self.ms(DOCKER_SDK, 'ci_high'):.0f}] ({self.ratio(DOCKER_SDK):.0f}×); docker CLI: "
                f"{self.ms(DOCKER_CLI):.0f} ms ({self.ratio(DOCKER_CLI):.0f}×). Namespaces, `pivot_root` and a "
                f"cgroup add {self.ms(SCRATCH_START) - self.ms(FORK_EXEC):.1f} ms to a fork/exec; `docker run` adds "
                f"{self.ms(DOCKER_SDK) - self.ms(SCRATCH_START):.0f} ms more: the engine's work around the same "
                "kernel features (the container's filesystem layers, a network namespace wired to a bridge, "
                "containerd and runc).")


def run_startup(lab: LabSession, repeats: int = 20, warmup: int = 2, memory_limit_mib: int = 64) -> StartupResult:
    """Wall time (s) to start and finish `/bin/busybox true`: fork/exec on the host, in a from-scratch
    container, with `docker run --rm` through the SDK and through the CLI — the same static binary each time,
    both containers under the same limits, the methods interleaved round by round."""
    measure.validate_repeats(repeats, warmup)
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("timing the from-scratch container")

    def experiment() -> pd.DataFrame:
        client = lab.engine
        image = images.require_base(client, "busybox").tag
        rootfs = images.rootfs_dir("busybox")
        static = elf.is_static_elf(images.BUSYBOX_BINARY)

        def from_scratch() -> None:
            exit_code = scratch.run_scratch_once(rootfs, BUSYBOX_TRUE, run_id=lab.run_id, name="startup",
                                                 timeout_s=30, limits=limits)
            if exit_code != 0:
                raise RuntimeError(f"`busybox true` in the from-scratch container exited {exit_code}")

        with lab.scope() as scope:
            cli_argv = containers.cli_run_argv(scope, image, BUSYBOX_TRUE, limits=limits)
            starters: dict[str, Callable[[], object]] = {
                FORK_EXEC: lambda: run([str(images.BUSYBOX_BINARY), "true"], 30),
                SCRATCH_START: from_scratch,
                DOCKER_SDK: lambda: containers.run_once(client, scope, image, BUSYBOX_TRUE, limits=limits),
                DOCKER_CLI: lambda: run(cli_argv, 60),
            }
            samples = measure.compare(starters, repeats, warmup)
        return samples.assign(**limits.record(), static_binary=static)

    return StartupResult(lab.measure("startup", experiment, repeats=repeats, warmup=warmup, **limits.record()))
