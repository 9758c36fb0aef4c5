"""Section 4: where logs go (docker logs, a file inside the container) and how the json-file log grows on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd
from docker.types import LogConfig

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import containers
from labkit.labs.pitfalls_and_security.declaration import (
    check_number,
    limits_for,
    probe_argv,
    probe_images,
    wait_ready,
)

LOG_FILE = "/var/log/app.log"
UNBOUNDED = "default json-file (no options)"
ROTATED = "--log-opt max-size/max-file"
MIB = 2**20
LINE_BYTES = 1024
SAMPLE_S = 0.1
GROWTH_TIMEOUT_S = 120.0  # a chatty container that has not ended by then is stopped

STDOUT_IN_LOGS = "stdout reaches docker logs (stdout stream)"
STDERR_IN_LOGS = "stderr reaches docker logs (stderr stream)"
FILE_INSIDE = "the log file is there while the container runs"
FILE_AFTER_RESTART = "the log file is still there after docker restart"
FILE_IN_NEW_CONTAINER = "the log file is there in a new container of the same image"


@dataclass(frozen=True)
class LogPlacesResult:
    """`places`: check, outcome (True/False) for each of the checks above."""

    places: pd.DataFrame

    def outcome(self, check: str) -> bool:
        return bool(self.places.loc[self.places["check"] == check, "outcome"].iloc[0])

    def conclusion(self) -> str:
        yes = {True: "yes", False: "no"}
        return (f"**What we measured.** stdout in `docker logs`: {yes[self.outcome(STDOUT_IN_LOGS)]}; stderr: "
                f"{yes[self.outcome(STDERR_IN_LOGS)]}. `{LOG_FILE}` inside: there while it ran "
                f"({yes[self.outcome(FILE_INSIDE)]}), **after `docker restart`: "
                f"{yes[self.outcome(FILE_AFTER_RESTART)]}** (the writable layer belongs to the container, not to "
                f"one run of it), in a new container of the same image: **{yes[self.outcome(FILE_IN_NEW_CONTAINER)]}"
                "**. A redeploy replaces the container, and the file goes with it.")


def run_log_places(lab: LabSession, memory_limit_mib: int = 64) -> LogPlacesResult:
    """A program writes one line to stdout, one to stderr and one to /var/log/app.log; read back with docker
    logs, inside it, after docker restart, and in a new container of the same image."""
    limits = limits_for(lab, memory_limit_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        with lab.scope() as scope, probe_images(client, scope) as made:
            with containers.running(client, scope, made.root, probe_argv("log-both", LOG_FILE), stem="log-places",
                                    limits=limits) as container:
                wait_ready(container)
                outcomes = {STDOUT_IN_LOGS: b"to stdout" in container.logs(stdout=True, stderr=False),
                            STDERR_IN_LOGS: b"to stderr" in container.logs(stdout=False, stderr=True),
                            FILE_INSIDE: container.exec_run(["test", "-s", LOG_FILE]).exit_code == 0}
                container.restart(timeout=1)
                wait_ready(container)
                outcomes[FILE_AFTER_RESTART] = container.exec_run(["test", "-s", LOG_FILE]).exit_code == 0
            with containers.running(client, scope, made.root, probe_argv("wait"), stem="log-new",
                                    limits=limits) as fresh:
                wait_ready(fresh)
                outcomes[FILE_IN_NEW_CONTAINER] = fresh.exec_run(["test", "-e", LOG_FILE]).exit_code == 0
        return pd.DataFrame([{"check": check, "outcome": outcome} for check, outcome in outcomes.items()])

    return LogPlacesResult(lab.measure("log_places", experiment, **limits.record()))


@dataclass(frozen=True)
class LogGrowthResult:
    """`growth`: variant, t_s (s since start), log_bytes (the container's json-file log files on disk, rotated ones
    included), log_files, written_bytes (what the program wrote in all), max_size_bytes and max_files (0: none
    set), logs_lines (lines `docker logs` returned once it ended, the same on every row)."""

    growth: pd.DataFrame

    def final_bytes(self, variant: str) -> int:
        return int(self.growth.loc[self.growth["variant"] == variant, "log_bytes"].iloc[-1])

    def peak_bytes(self, variant: str) -> int:
        return int(self.growth.loc[self.growth["variant"] == variant, "log_bytes"].max())

    def row(self, variant: str) -> pd.Series:
        return self.growth[self.growth["variant"] == variant].iloc[-1]

    @property
    def written_bytes(self) -> int:
        return int(self.growth["written_bytes"].iloc[0])

    @property
    def bound_bytes(self) -> int:
        """max-size × max-file: what rotation is to keep on disk."""
        rotated = self.row(ROTATED)
        return int(rotated["max_size_bytes"] * rotated["max_files"])

    def per_byte(self, variant: str) -> float:
        """Bytes on disk per byte the program wrote."""
        return self.final_bytes(variant) / self.written_bytes

    def conclusion(self) -> str:
        return (f"**What we measured.** The program wrote {self.written_bytes / MIB:.1f} MiB to stdout. With the "
                f"default json-file driver its log ended at **{self.final_bytes(UNBOUNDED) / MIB:.1f} MiB** on disk "
                f"({self.per_byte(UNBOUNDED):.2f} bytes per byte written: each line is wrapped in JSON with its "
                f"stream and time stamp) and grows for as long as the program writes. With "
                f"`--log-opt max-size={self.row(ROTATED)['max_size_bytes'] / MIB:g}m "
                f"--log-opt max-file={self.row(ROTATED)['max_files']}` it peaked at "
                f"**{self.peak_bytes(ROTATED) / MIB:.2f} MiB** (bound {self.bound_bytes / MIB:g} MiB), and "
                f"`docker logs` then returned {int(self.row(ROTATED)['logs_lines']):,} of the "
                f"{int(self.row(UNBOUNDED)['logs_lines']):,} lines: rotation bounds the disk by forgetting the "
                "oldest lines.")


def _log_files(path: Path) -> dict[Path, int]:
    """The json-file log at `path` and its rotated siblings (``<path>.1`` …) with their sizes (bytes); a file
    that rotation removes while it is read is left out."""
    sizes = {}
    for candidate in path.parent.glob(f"{path.name}*"):
        try:
            sizes[candidate] = candidate.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def run_log_growth(lab: LabSession, written_mib: float = 4.0, duration_s: float = 3.0, max_size_mib: int = 1,
                   max_files: int = 2, memory_limit_mib: int = 64) -> LogGrowthResult:
    """A chatty program writes `written_mib` MiB to stdout in 1 KiB lines over `duration_s` s, once with the
    default json-file log and once with ``max-size=<max_size_mib>m max-file=<max_files>``; the log files' size on
    disk read every 0.1 s (bounded in time and bytes)."""
    check_number(written_mib, "written_mib", 0.1, 64)
    check_number(duration_s, "duration_s", 0.5, 60)
    for value, name in ((max_size_mib, "max_size_mib"), (max_files, "max_files")):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
            raise BadParameter(f"{name}={value!r} is out of range.", "Give a whole number from 1 to 16.")
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading the engine's log files under its data root")
    written = int(written_mib * MIB) // LINE_BYTES * LINE_BYTES
    options = {UNBOUNDED: {}, ROTATED: {"log_config": LogConfig(
        type=LogConfig.types.JSON, config={"max-size": f"{max_size_mib}m", "max-file": str(max_files)})}}

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, object]] = []
        with lab.scope() as scope, probe_images(client, scope) as made:
            for variant, extra in options.items():
                argv = probe_argv("chatter", str(written), str(duration_s), str(LINE_BYTES))
                with containers.running(client, scope, made.root, argv, stem=f"log-growth-{len(rows)}",
                                        limits=limits, **extra) as container:
                    rows += _sample_growth(client, container, variant, written,
                                           max_size_mib * MIB if extra else 0, max_files if extra else 0)
        return pd.DataFrame(rows)

    return LogGrowthResult(lab.measure("log_growth", experiment, written_mib=written_mib, duration_s=duration_s,
                                       max_size_mib=max_size_mib, max_files=max_files, **limits.record()))


def _sample_growth(client: docker.DockerClient, container: Any, variant: str, written: int, max_size: int,
                   max_files: int) -> list[dict[str, object]]:
    """Read the log files' size every 0.1 s until the container ends (bounded by GROWTH_TIMEOUT_S), then once more."""
    path = Path(client.api.inspect_container(container.id)["LogPath"])
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    running = True
    while running:
        running = client.api.inspect_container(container.id)["State"]["Running"]
        if time.monotonic() - started > GROWTH_TIMEOUT_S:
            container.stop(timeout=1)
            running = False
        files = _log_files(path)
        rows.append({"variant": variant, "t_s": time.monotonic() - started,
                     "log_bytes": sum(files.values()), "log_files": len(files),
                     "written_bytes": written, "max_size_bytes": max_size, "max_files": max_files})
        time.sleep(SAMPLE_S if running else 0)
    lines = container.logs(stdout=True, stderr=True).count(b"\n")
    return [{**row, "logs_lines": lines} for row in rows]
