"""The fenced stress rig: labkit's stress program in a container below a labkit-made, limited cgroup."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import numpy as np
import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import cgroups, containers, images, kernel_log, slices, stress, undo
from labkit.instruments.engine import Scope, info
from labkit.instruments.limits import Limits
from labkit.instruments.sampler import MAX_HZ, CgroupSampler
from labkit.labs.cgroups_and_limits.declaration import BASE, CGROUPFS, EVENT_COLUMNS, SYSTEMD, WAIT_S


def check_hz(sample_hz: object) -> float:
    """A sampling rate in samples per second, checked against the sampler's ceiling."""
    if isinstance(sample_hz, bool) or not isinstance(sample_hz, int | float) or not 0 < sample_hz <= MAX_HZ:
        raise BadParameter(f"sample_hz={sample_hz!r}: a sampling rate is a number of samples per second.",
                           f"Give a number in (0, {MAX_HZ:.0f}], e.g. 100.")
    return float(sample_hz)


def check_positive(value: object, name: str, unit: str, example: int) -> int:
    """A whole number ≥ 1 of `unit` for the parameter `name` (`example`: what the error suggests)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadParameter(f"{name}={value!r}: a whole number of {unit} ≥ 1 is needed.", f"E.g. {name}={example}.")
    return value


T = TypeVar("T")


def by_mode(lab: LabSession, value: T | None, quick: T, full: T) -> T:
    """`value` as the reader gave it or, when None, the default for the session's mode (`quick` or `full`)."""
    if value is not None:
        return value
    return quick if lab.quick else full


def host_cores() -> int:
    """The host's CPUs (logical cores) that a fence may give its containers."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class StressRig:
    """What every live experiment needs: the engine, a scope, the image, the stress binary and the layout."""

    lab: LabSession
    scope: Scope
    image: str
    binary: Path
    layout: cgroups.CgroupLayout
    driver: str  # the engine's cgroup driver: cgroupfs or systemd

    @property
    def client(self) -> docker.DockerClient:
        return self.lab.engine

    @contextlib.contextmanager
    def fence(self, name: str, limits: Limits) -> Iterator[tuple[cgroups.Cgroup, str]]:
        """A labkit cgroup under `limits` for containers to run below; yields it and the ``--cgroup-parent``
        value. With the cgroupfs driver it is labkit's own group, removed from every hierarchy afterwards (runc
        adds the containers' groups in all of them); with the systemd driver it is a slice whose limits systemd
        holds (:mod:`labkit.instruments.slices`), stopped afterwards."""
        if self.driver == SYSTEMD:
            with slices.fenced(self.layout, self.lab.run_id, name, limits) as fenced:
                yield fenced
            return
        relpath = f"labkit/{self.lab.run_id}/{name}"
        # Journalled: after a SIGKILL the next labkit command removes the group (the engine's sweep, its containers).
        with undo.recorded(f"cgroup {relpath}", cgroups.swept, {"relpath": relpath}):
            group = self.layout.create(relpath, limits)
            try:
                yield group, "/" + relpath
            finally:
                everywhere = self.layout.everywhere(relpath)
                everywhere.kill_all()
                everywhere.remove()

    @contextlib.contextmanager
    def container(self, argv: Sequence[str], *, stem: str, limits: Limits, parent: str, wait: bool = True,
                  volumes: dict[str, dict[str, str]] | None = None, **options: Any) -> Iterator[Any]:
        """The stress program running `argv` below `parent`, under `limits` (options override them), with
        `volumes` mounted beside it. With `wait` it holds still until :meth:`go`, so a sampler can start first."""
        command = [stress.IN_CONTAINER, *(["wait"] if wait else []), *argv]
        with containers.running(self.client, self.scope, self.image, command, stem=stem,
                                limits=limits, cgroup_parent=parent,
                                volumes={**stress.volume(self.binary), **(volumes or {})}, **options) as container:
            yield container

    def go(self, container: Any) -> None:
        """Release a program started with ``wait`` once it says it is ready (SIGUSR1 blocked: not lost)."""
        deadline = time.monotonic() + WAIT_S
        while b"ready " not in container.logs():
            container.reload()
            if container.status != "running" or time.monotonic() > deadline:
                raise RuntimeError(f"the stress program never got ready ({container.status}): "
                                   f"{container.logs().decode()[-300:]}")
            time.sleep(0.005)  # polling the program's output for its ready line
        container.kill(signal="SIGUSR1")

    def group_of(self, container: Any) -> cgroups.Cgroup:
        return self.layout.of_process(containers.host_pid(self.client, container.id))

    def finish(self, container: Any) -> tuple[int, bool, str]:
        """Wait for `container` to end: its exit code, the engine's State.OOMKilled, and its output."""
        exit_code = int(container.wait(timeout=WAIT_S)["StatusCode"])
        state = self.client.api.inspect_container(container.id)["State"]
        return exit_code, bool(state.get("OOMKilled")), container.logs().decode()

    def events(self, container: Any, since_unix_s: float, sampler: CgroupSampler) -> pd.DataFrame:
        """The engine's events for `container` from `since_unix_s` until now, on the sampler's axis."""
        rows = []
        for event in self.client.api.events(since=f"{since_unix_s:.9f}", until=f"{time.time():.9f}",
                                            filters={"container": container.id}, decode=True):
            attributes = event.get("Actor", {}).get("Attributes", {})
            rows.append({"t_s": sampler.at(int(event["timeNano"]), "wall"), "action": event.get("Action", ""),
                         "exit_code": float(attributes["exitCode"]) if "exitCode" in attributes else np.nan})
        return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


@contextlib.contextmanager
def stress_rig(lab: LabSession) -> Iterator[StressRig]:
    lab.require_root("making cgroups and reading containers' cgroups")
    driver = info(lab.engine).cgroup_driver
    if driver not in (CGROUPFS, SYSTEMD):
        raise HostUnsupported(
            f"this engine uses the {driver!r} cgroup driver; notebook 07 puts its containers below labkit-made "
            f"cgroups (the {CGROUPFS} driver) or systemd slices (the {SYSTEMD} driver).",
            "Replay the recorded results (mode='replay'), or run dockerd with "
            "`--exec-opt native.cgroupdriver=cgroupfs` on a test machine.")
    layout = cgroups.CgroupLayout.from_system()
    image = images.require_base(lab.engine, BASE).tag
    binary = stress.build()
    with lab.scope() as scope:
        yield StressRig(lab, scope, image, binary, layout, driver)


class TwoRounds:
    """A neighbour experiment of two rounds, one row each in ``table``: the neighbour without its own limit
    (the first row), then with one (the last)."""

    table: pd.DataFrame

    @property
    def limited_condition(self) -> str:
        return str(self.table["condition"].iloc[-1])

    def rounds(self) -> tuple[pd.Series, pd.Series]:
        """The unlimited round's row and the limited round's."""
        return self.table.iloc[0], self.table.iloc[-1]


def kernel_kills(since_monotonic_s: float) -> tuple[int, int]:
    """OOM kills the kernel logged since a CLOCK_MONOTONIC instant: (in a memory cgroup, host-wide)."""
    kills = [k for k in kernel_log.parse_oom_kills(kernel_log.read()) if k.at_s >= since_monotonic_s]
    return sum(k.scope == "memcg" for k in kills), sum(k.scope == "global" for k in kills)


def kernel_kill_time(since_monotonic_s: float, sampler: CgroupSampler, clock: kernel_log.ClockOffset) -> float:
    """When the kernel logged the first OOM kill since an instant, on the sampler's axis (NaN: none): the log's
    stamp moved onto CLOCK_MONOTONIC by the `clock` offset measured with a marker."""
    kills = [k for k in kernel_log.parse_oom_kills(kernel_log.read()) if k.at_s >= since_monotonic_s]
    return sampler.at(round((kills[0].at_s - clock.offset_s) * 1e9)) if kills else float("nan")


def kernel_clock() -> kernel_log.ClockOffset:
    """The kernel log's clock against CLOCK_MONOTONIC, from two markers written to the log now."""
    return kernel_log.measure_clock_offset("labkit 07: clock marker", repeats=2)
