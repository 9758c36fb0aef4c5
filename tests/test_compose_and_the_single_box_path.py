"""Notebook 12's lab: the results' arithmetic on hand-made tables, the labels file, bad input refused before
anything starts, the live experiments against known answers (the app healthy only after the db, the counter
across down/up and down -v, the restart policy's restart, the unhealthy app left in place, the scale clash), and
interrupted runs (SIGINT, SIGTERM) that leave no project, container, network or volume behind."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import compose, engine, netns, ports, undo
from labkit.labs import compose_and_the_single_box_path as stack_lab
from labkit.labs.compose_and_the_single_box_path import (
    ci_variant,
    deploy,
    failures,
    limits,
    service_images,
    stack,
    state,
)
from labkit.labs.compose_and_the_single_box_path.bringup import BringupResult, Variant
from labkit.labs.compose_and_the_single_box_path.claims import check_single_box_claims, check_stack_claims
from labkit.labs.compose_and_the_single_box_path.declaration import HEALTHY, STARTED
from tests.conftest import interrupt_experiment, leftovers, open_live

LAB = stack_lab.LAB


# ---------------------------------------------------------------- results' arithmetic on hand-made tables


def _bringup_row(condition: str, interval_s: float, ready: float, healthy: float, app_started: float,
                 failures_: int) -> dict[str, object]:
    return {"variant": f"{condition} {interval_s}", "condition": condition, "interval_s": interval_s, "repeat": 0,
            "up_s": app_started + 2, "db_ready_s": ready, "db_healthy_s": healthy, "app_started_s": app_started,
            "app_healthy_s": app_started + 1, "connect_failures": failures_, "left_after_down": 0}


BRINGUPS = BringupResult(pd.DataFrame([
    _bringup_row(HEALTHY, 1.0, ready=2.0, healthy=2.5, app_started=3.0, failures_=0),
    _bringup_row(STARTED, 1.0, ready=2.0, healthy=2.5, app_started=1.0, failures_=9),
    _bringup_row(HEALTHY, 5.0, ready=2.0, healthy=6.0, app_started=6.5, failures_=0),
], columns=LAB.tables["bringup"]), pd.DataFrame(columns=LAB.tables["timeline"]))


def test_the_interval_share_is_the_wait_after_ready_over_the_time_to_healthy() -> None:
    # 5 s: (6.0 − 2.0) / 6.0 = 2/3; 1 s: (2.5 − 2.0) / 2.5 = 0.2.
    assert BRINGUPS.interval_share(5.0) == pytest.approx(2 / 3)
    assert BRINGUPS.interval_share(1.0) == pytest.approx(0.2)
    assert BRINGUPS.app_after_db and BRINGUPS.all_healthy
    assert (BRINGUPS.failures_with_health, BRINGUPS.failures_without_health) == (0, 9)


def _timeline(variant: Variant, db_started: list[float], db_healthy: list[float]) -> pd.DataFrame:
    """The db's started and healthy events of `variant`, one repeat per pair."""
    return pd.DataFrame([{"variant": variant.name, "repeat": r, "service": "db", "event": event, "t_s": t}
                         for r, pair in enumerate(zip(db_started, db_healthy, strict=True))
                         for event, t in zip(("started", "healthy"), pair, strict=True)],
                        columns=LAB.tables["timeline"])


def test_the_bringup_conclusion_counts_the_app_started_before_postgresql_was_ready() -> None:
    # STARTED runs: app at 1.0 (ready 2.0: before) and at 2.5 (ready 2.0: after) — 1 of 2, not "before" outright.
    runs = pd.concat([BRINGUPS.runs, pd.DataFrame([_bringup_row(STARTED, 1.0, 2.0, 2.5, 2.5, 0)],
                                                  columns=LAB.tables["bringup"])], ignore_index=True)
    said = BringupResult(runs, BRINGUPS.timeline).conclusion()
    assert "before PostgreSQL was ready in **1** of 2 runs" in said and "failed to connect **9** times" in said


def test_the_first_check_is_read_from_the_db_s_start_and_healthy_events() -> None:
    # 5 s checks: healthy 5.3 and 5.1 s after the start (the soonest, 5.1 ≥ 5: no check passed sooner); then 3.0 s.
    late = _timeline(Variant(HEALTHY, 5.0), [0.5, 0.6], [5.8, 5.7])
    assert BringupResult(BRINGUPS.runs, late).soonest_healthy_after_start_s(5.0) == pytest.approx(5.1)
    assert "no check passed before one interval" in BringupResult(BRINGUPS.runs, late).conclusion()
    early = BringupResult(BRINGUPS.runs, _timeline(Variant(HEALTHY, 5.0), [0.5], [3.5]))
    assert "**3.00 s**" in early.conclusion() and "a check passed before one interval" in early.conclusion()
    assert "Engine" not in early.conclusion()


def test_an_app_started_before_the_db_was_healthy_breaks_the_order() -> None:
    early = BringupResult(pd.DataFrame([_bringup_row(HEALTHY, 1.0, 2.0, 2.5, 2.4, 0)],
                                       columns=LAB.tables["bringup"]), BRINGUPS.timeline)
    assert not early.app_after_db


def _claims(bringup: BringupResult, state_: state.StateResult, failures_: failures.FailuresResult) -> pd.Series:
    ledger = ClaimLedger(stack_lab.STEM)
    check_stack_claims(ledger, bringup, state_, failures_)
    return ledger.frame().set_index("id")["verdict"]


def _state(after_down: int, after_down_v: int, direct: bool, source: str = state.POSTGRES, kept: bool = True,
           kept_after_down_v: bool = False) -> state.StateResult:
    persistence = pd.DataFrame([{"step": state.FIRST_UP, "count": 3, "source": "redis", "volume_kept": True},
                                {"step": state.AFTER_DOWN, "count": after_down, "source": source,
                                 "volume_kept": kept},
                                {"step": state.AFTER_DOWN_V, "count": after_down_v, "source": state.POSTGRES,
                                 "volume_kept": kept_after_down_v}], columns=LAB.tables["persistence"])
    exposure = pd.DataFrame([{"client": "host", "target": state.HOST, "reachable": True, "status": 200, "error": ""},
                             {"client": "neighbour", "target": state.NEIGHBOUR_HOST, "reachable": False, "status": 0,
                              "error": "refused"},
                             {"client": "neighbour", "target": state.NEIGHBOUR_DIRECT, "reachable": direct,
                              "status": 200 if direct else 0, "error": "" if direct else "timed out"}],
                            columns=LAB.tables["exposure"])
    return state.StateResult(persistence, exposure)


def _failures(back: str, restarts_after_unhealthy: int, clash_error: str) -> failures.FailuresResult:
    restarts = pd.DataFrame([
        {"policy": failures.UNLESS_STOPPED, "state_after": back, "restart_count": 1 if back == "running" else 0,
         "back_s": 0.4, "answering_s": 1.2, "watched_s": 1.2},
        {"policy": failures.NO, "state_after": "exited", "restart_count": 0, "back_s": float("nan"),
         "answering_s": float("nan"), "watched_s": 3.0}], columns=LAB.tables["restarts"])
    unhealthy = pd.DataFrame([{"health": "unhealthy", "same_container": True, "running": True,
                               "restart_count": restarts_after_unhealthy, "unhealthy_after_s": 3.5,
                               "watched_s": 3.0}], columns=LAB.tables["unhealthy"])
    scale = pd.DataFrame([{"port": failures.FIXED, "exit_code": 1, "running": 1, "error": clash_error},
                          {"port": failures.NONE, "exit_code": 0, "running": 3, "error": ""}],
                         columns=LAB.tables["scale"])
    return failures.FailuresResult(restarts, unhealthy, scale)


CLASH = "Bind for 127.0.0.1:18120 failed: port is already allocated"


def test_the_claims_follow_hand_made_tables() -> None:
    verdicts = _claims(BRINGUPS, _state(3, 0, direct=False), _failures("running", 0, CLASH))
    assert set(verdicts.index) == {"compose.one_command_stack", "compose.service_healthy_waits",
                             "compose.service_started_races", "compose.interval_share",
                             "compose.named_volume_keeps_state", "compose.loopback_port", "compose.restart_policy",
                             "compose.not_an_orchestrator"}
    assert verdicts["compose.interval_share"] == Verdict.HOLDS  # 2/3 > 0.5 and > 0.2
    assert verdicts["compose.loopback_port"] == Verdict.HOLDS  # no neighbour path reached it
    assert verdicts["compose.named_volume_keeps_state"] == Verdict.HOLDS
    assert verdicts["compose.not_an_orchestrator"] == Verdict.HOLDS
    assert verdicts["compose.one_command_stack"] == Verdict.CAVEAT  # the stand-ins are not the chapter's images


def test_the_clash_is_named_without_the_endpoint_before_it() -> None:
    error = "driver failed programming external connectivity on endpoint x-app-2 (0c9d): " + CLASH
    assert _failures("running", 0, error).clash_error == CLASH


def test_the_claims_fail_on_data_that_contradicts_them() -> None:
    verdicts = _claims(BRINGUPS, _state(0, 0, direct=True), _failures("exited", 1, "some other error"))
    assert verdicts["compose.named_volume_keeps_state"] == Verdict.FAILS  # 0 read back after down + up
    assert verdicts["compose.loopback_port"] == Verdict.FAILS  # the direct route reached it: as notebook 08 counts
    assert verdicts["compose.restart_policy"] == Verdict.FAILS
    assert verdicts["compose.not_an_orchestrator"] == Verdict.FAILS


def test_the_loopback_claim_is_the_chapter_s_networking_claim() -> None:
    ledger = ClaimLedger(stack_lab.STEM)
    check_stack_claims(ledger, BRINGUPS, _state(3, 0, direct=True), _failures("running", 0, CLASH))
    row = ledger.frame().set_index("id").loc["compose.loopback_port"]
    assert row["section"] == "Networking — How Containers Talk" and "DOCKER-USER" in row["caveat"]


@pytest.mark.parametrize(("source", "kept", "kept_after_down_v"), [
    ("redis", True, False), (state.POSTGRES, False, False), (state.POSTGRES, True, True)])
def test_the_counter_survives_only_from_postgresql_on_the_kept_volume(source: str, kept: bool,
                                                                      kept_after_down_v: bool) -> None:
    # The right count is not enough: read from the cache, or with the volume not kept (or kept by down -v), the
    # named volume did not carry it.
    changed = _state(3, 0, direct=False, source=source, kept=kept, kept_after_down_v=kept_after_down_v)
    assert _claims(BRINGUPS, changed, _failures("running", 0, CLASH))["compose.named_volume_keeps_state"] == \
        Verdict.FAILS


def test_the_persistence_conclusion_follows_the_source_and_the_volume() -> None:
    kept = _state(3, 0, direct=False).persistence_conclusion()
    assert "so the number came from the db's named volume" in kept and "was gone after `down -v`" in kept
    cached = _state(3, 0, direct=False, source="redis", kept=False).persistence_conclusion()
    assert "named volume" in cached and "came from" not in cached and "was gone after `down`" in cached


def test_the_failures_conclusion_says_nothing_acted_only_when_the_app_was_left_in_place() -> None:
    assert "nothing acted on its health" in _failures("running", 0, CLASH).conclusion()
    assert "nothing acted on its health" not in _failures("running", 1, CLASH).conclusion()  # it was restarted


def test_without_a_5_s_bringup_the_interval_claim_is_inconclusive() -> None:
    short_only = BringupResult(BRINGUPS.runs[BRINGUPS.runs["interval_s"] == 1.0], BRINGUPS.timeline)
    verdicts = _claims(short_only, _state(3, 0, direct=False), _failures("running", 0, CLASH))
    assert verdicts["compose.interval_share"] == Verdict.INCONCLUSIVE


# ---------------------------------------------------------------- the project's files


def test_the_labels_file_labels_every_service_the_network_and_the_volume() -> None:
    written = json.loads(compose.labels_file(("app", "db"), ("db_data",), {"labkit.run": "r1"}))
    assert written == {"services": {"app": {"labels": {"labkit.run": "r1"}}, "db": {"labels": {"labkit.run": "r1"}}},
                       "networks": {"default": {"labels": {"labkit.run": "r1"}}},
                       "volumes": {"db_data": {"labels": {"labkit.run": "r1"}}}}


def test_a_project_name_compose_would_refuse_is_refused_first() -> None:
    with pytest.raises(BadParameter, match="lowercase"):
        compose.Project("Labkit Stack", Path("/tmp"), ("compose.yaml",), {})


def test_service_images_change_tag_with_their_version_and_base() -> None:
    assert service_images.APP.digest("labkit/python-runtime:a") != service_images.APP_NEXT.digest(
        "labkit/python-runtime:a")
    assert service_images.DB.digest("labkit/postgres-15:a") != service_images.DB.digest("labkit/postgres-15:b")


# ---------------------------------------------------------------- bad input refused before anything starts


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: stack_lab.run_bringup(lab, 80, 1, 1.0), "port=80"),
    (lambda lab: stack_lab.run_bringup(lab, 18120, 0, 1.0), "repeats=0"),
    (lambda lab: stack_lab.run_bringup(lab, 18120, 1, 0.0), "short_interval_s=0.0"),
    (lambda lab: stack_lab.run_state(lab, 18120, 0, 1.0), "writes=0"),
    (lambda lab: stack_lab.run_failures(lab, 18120, 1.0, 0.0), "watch_s=0.0"),
    (lambda lab: stack_lab.run_deploy(lab, 18120, 1.0, 0, 12.0), "rate_hz=0"),  # no request would be sent
    (lambda lab: stack_lab.run_deploy(lab, 18120, 1.0, 20, 1.0), "duration_s=1.0"),
])
def test_bad_input_is_refused_before_anything_starts(call: object, message: str, tmp_path: Path) -> None:
    # A live session without an engine: the call must refuse its input before it asks the engine for anything.
    lab = LabSession(stack_lab.STEM, True, tmp_path, None, None, LAB.tables)
    with pytest.raises(BadParameter, match=message):
        call(lab)  # type: ignore[operator]


def test_an_unknown_service_and_a_port_in_use_are_refused() -> None:
    with pytest.raises(BadParameter, match="service='web'"):
        stack.check_service("web")
    import socket
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(BadParameter, match="already listens"):
            stack.check_port(holder.getsockname()[1])


@pytest.mark.docker
def test_live_a_port_in_use_is_refused_before_any_container_starts(docker_client: docker.DockerClient,
                                                                    tmp_path: Path) -> None:
    import socket
    lab = open_live(LAB, tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(BadParameter, match="already listens"):
            stack_lab.run_bringup(lab, holder.getsockname()[1], 1, 1.0)
    assert leftovers(docker_client, lab.run_id) == {"containers": [], "networks": [], "volumes": []}


# ---------------------------------------------------------------- live, against known answers


def _no_trace_of(client: docker.DockerClient, run_id: str) -> None:
    assert leftovers(client, run_id) == {"containers": [], "networks": [], "volumes": []}
    labelled = client.containers.list(all=True, filters={"label": compose.PROJECT_LABEL}, ignore_removed=True)
    projects = {c.labels.get(compose.PROJECT_LABEL, "") for c in labelled}
    assert not [p for p in projects if p.startswith("labkit-") and run_id in p]
    assert not [n for n in netns.names() if n.startswith(f"{netns.NAME_PREFIX}{run_id}-")]


@pytest.mark.docker
def test_live_the_app_is_started_only_after_the_db_is_healthy(docker_client: docker.DockerClient,
                                                               live: LabSession) -> None:
    result = stack_lab.run_bringup(live, ports.free_port(), 1, 1.0)
    healthy = result.runs[result.runs["condition"] == HEALTHY]
    # The engine's own instants: the app's start event after the db's healthy event, in every run.
    assert (healthy["app_started_s"] > healthy["db_healthy_s"]).all()
    assert result.failures_with_health == 0
    # With 5 s checks the db cannot be healthy before the first check, one interval after its start.
    chapter = healthy[healthy["interval_s"] == 5.0]
    assert (chapter["db_healthy_s"] >= 5.0).all()
    assert result.left_after_down == 0
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_the_counter_survives_down_and_not_down_v(docker_client: docker.DockerClient, live: LabSession) -> None:
    result = stack_lab.run_state(live, ports.free_port(), 4, 1.0)
    assert result.count(state.FIRST_UP) == 4
    assert (result.count(state.AFTER_DOWN), result.source(state.AFTER_DOWN)) == (4, "postgres")
    assert result.count(state.AFTER_DOWN_V) == 0
    assert result.reached(state.HOST) and not result.reached(state.NEIGHBOUR_HOST)
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_a_failure_with_the_stack_up_leaves_nothing(docker_client: docker.DockerClient, live: LabSession,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The neighbour's probe fails: by then the project (three containers, its network, its named volume) is up and
    # the neighbour namespace exists.
    def failing(neighbour: netns.Neighbour, url: str) -> dict[str, object]:
        assert _project_containers(docker_client, live.run_id) and netns.names()  # all of it is up
        raise RuntimeError("a failure in the middle of the experiment")

    monkeypatch.setattr(state, "_neighbour_probe", failing)
    with pytest.raises(RuntimeError, match="in the middle"):
        stack_lab.run_state(live, ports.free_port(), 1, 1.0)
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_restart_policy_unhealthy_left_in_place_and_the_scale_clash(docker_client: docker.DockerClient,
                                                                           live: LabSession) -> None:
    port = ports.free_port()
    result = stack_lab.run_failures(live, port, 1.0, 2.0)
    assert result.restarted and result.stayed_down
    assert result.left_in_place
    fixed = result.scaled(failures.FIXED)
    assert fixed["exit_code"] != 0 and f"127.0.0.1:{port}" in fixed["error"] and "already allocated" in fixed["error"]
    assert result.scaled(failures.NONE)["running"] == 3
    _no_trace_of(docker_client, live.run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_without_compose_v1_the_limits_say_so_and_v2_still_runs(docker_client: docker.DockerClient,
                                                                     live: LabSession, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "COMPOSE_V1", str(tmp_path / "docker-compose"))  # as on a laptop: v2 only
    result = stack_lab.run_limits(live)
    assert result.applied(limits.V2) and not result.ran(limits.V1) and not result.ran(limits.V1_COMPAT)
    assert "docker-compose is not installed" in result.error(limits.V1)
    assert f"{limits.V1}: could not run (" in result.conclusion()
    _no_trace_of(docker_client, live.run_id)


# ---------------------------------------------------------------- interrupted runs leave nothing behind

def _project_containers(client: docker.DockerClient, run_id: str) -> list[str]:
    """The run's containers from one list call (the SDK's list inspects each, and the child removes them)."""
    found = client.api.containers(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}"})
    return [str(c["Id"]) for c in found]


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize(("signum", "moment"), [
    (signal.SIGINT, "the project's containers exist"),
    (signal.SIGTERM, "the app answers"),
    (signal.SIGTERM, "the neighbour exists"),
])
def test_live_interrupted_run_leaves_nothing_behind(docker_client: docker.DockerClient, tmp_path: Path,
                                                    signum: int, moment: str) -> None:
    port = ports.free_port()
    reached = {
        "the project's containers exist": lambda run_id: bool(_project_containers(docker_client, run_id)),
        "the app answers": lambda run_id: not stack.get(f"http://127.0.0.1:{port}/healthz", 0.5).error,
        "the neighbour exists": lambda run_id: any(n.startswith(f"{netns.NAME_PREFIX}{run_id}-")
                                                   for n in netns.names()),
    }
    run_id, child = interrupt_experiment("compose_and_the_single_box_path", f"run_state(lab, {port}, 3, 1.0)",
                                         tmp_path, signum, reached[moment], moment)
    _no_trace_of(docker_client, run_id)
    assert not [c for c in undo.pending() if c.pid == child.pid]


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize(("signum", "moment"), [
    (signal.SIGINT, "the paced client's app answers"),
    (signal.SIGTERM, "the rolling project's replicas exist"),
])
def test_live_interrupted_deploy_leaves_nothing_behind(docker_client: docker.DockerClient, tmp_path: Path,
                                                       signum: int, moment: str) -> None:
    """Section 7 holds a client thread and a second project (three replicas with update_config), brought up beside
    the first."""
    port = ports.free_port()

    def rolling(run_id: str) -> bool:
        found = docker_client.api.containers(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}"})
        return any(c["Labels"].get(compose.PROJECT_LABEL, "").endswith("-rolling") for c in found)

    reached = {
        "the paced client's app answers": lambda run_id: not stack.get(f"http://127.0.0.1:{port}/healthz", 0.5).error,
        "the rolling project's replicas exist": rolling,
    }
    run_id, child = interrupt_experiment("compose_and_the_single_box_path", f"run_deploy(lab, {port}, 1.0, 20, 8.0)",
                                         tmp_path, signum, reached[moment], moment)
    assert child.returncode != 0, "interrupted mid-experiment (both moments come seconds before it ends)"
    _no_trace_of(docker_client, run_id)
    assert not [c for c in undo.pending() if c.pid == child.pid]


def _projects(client: docker.DockerClient, run_id: str) -> set[str]:
    """The Compose projects of the run's containers."""
    found = client.api.containers(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}"})
    return {c["Labels"].get(compose.PROJECT_LABEL, "") for c in found}


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize(("call", "signum", "moment"), [
    ("run_failures(lab, {port}, 0.5, 3.0)", signal.SIGINT, "both stacks are coming up at once"),
    ("run_failures(lab, {port}, 0.5, 3.0)", signal.SIGTERM, "the two watches run side by side"),
    ("run_limits(lab)", signal.SIGINT, "the three Composes' projects exist at once"),
])
def test_live_interrupted_side_by_side_leaves_nothing_behind(docker_client: docker.DockerClient, tmp_path: Path,
                                                             call: str, signum: int, moment: str) -> None:
    """Where the lab runs things at once (measure.run_together), an interrupt still leaves nothing behind: every
    call ends before the scope sweeps."""
    port = ports.free_port()

    def watching(run_id: str) -> bool:
        # The no-restart stack's app exits only when it is killed for its watch (beside the unhealthy one).
        exited = docker_client.api.containers(all=True, filters={"label": f"{engine.LABEL_RUN}={run_id}",
                                                                  "status": "exited"})
        return any(c["Labels"].get(compose.PROJECT_LABEL, "").endswith("-norestart") for c in exited)

    reached = {
        "both stacks are coming up at once": lambda run_id: {"restart", "norestart"} <= {
            p.rsplit("-", 1)[-1] for p in _projects(docker_client, run_id)},
        "the two watches run side by side": watching,
        "the three Composes' projects exist at once": lambda run_id: len(
            [p for p in _projects(docker_client, run_id) if "-limits" in p]) >= 2,
    }
    run_id, child = interrupt_experiment("compose_and_the_single_box_path", call.format(port=port), tmp_path,
                                         signum, reached[moment], moment)
    assert child.returncode != 0, "interrupted mid-experiment"
    _no_trace_of(docker_client, run_id)
    assert not [c for c in undo.pending() if c.pid == child.pid]


# ---------------------------------------------------------------- sections 5–7 on hand-made tables


def test_the_longest_gap_runs_from_one_answer_to_the_next() -> None:
    # Answers end at 0.1, 0.6, 2.6 (t + latency); the failure in between is skipped: gaps 0.5 and 2.0.
    requests = pd.DataFrame([{"t_s": 0.0, "latency_s": 0.1, "status": 200, "version": "1", "error": ""},
                             {"t_s": 0.5, "latency_s": 0.1, "status": 200, "version": "1", "error": ""},
                             {"t_s": 1.0, "latency_s": 1.0, "status": 0, "version": "", "error": "refused"},
                             {"t_s": 2.5, "latency_s": 0.1, "status": 200, "version": "2", "error": ""}],
                            columns=LAB.tables["deploy_requests"])
    assert deploy.longest_gap(requests) == pytest.approx(2.0)


def _requests(*rows: tuple[float, float, str, str]) -> pd.DataFrame:
    """Requests as (t_s, latency_s, version, error); an answered one has status 200."""
    return pd.DataFrame([{"t_s": t, "latency_s": latency, "status": 0 if error else 200, "version": version,
                          "error": error} for t, latency, version, error in rows],
                        columns=LAB.tables["deploy_requests"])


# `up -d` runs from 0.8 to 1.2 s; the new version first answers at 2.5 s. Answers end at 0.1, 0.6, 2.6 and 3.1 s:
# the longest stretch is 0.6 → 2.6 s (2.0 s), and the request sent at 1.5 s waited out the client's 1 s limit in it,
# so the app may have been back from 1.5 s: the true stretch lay between 1.0 and 2.0 s.
HUNG = _requests((0.0, 0.1, "1", ""), (0.5, 0.1, "1", ""), (0.9, 0.01, "", "refused"), (1.0, 0.01, "", "refused"),
                 (1.5, deploy.CLIENT_TIMEOUT_S, "", "timed out"), (2.5, 0.1, "2", ""), (3.0, 0.1, "2", ""))


def _deploy(requests: pd.DataFrame, first_new_s: float = 2.5) -> deploy.DeployResult:
    summary = pd.DataFrame([{"up_start_s": 0.8, "up_end_s": 1.2, "requests": len(requests),
                             "failed": int(deploy.failed(requests).sum()),
                             "longest_gap_s": deploy.longest_gap(requests), "first_new_s": first_new_s,
                             "compose_version": "2.40.3"}], columns=LAB.tables["deploy"])
    rollout = pd.DataFrame([{"replica": i + 1, "stopped_s": 0.2, "started_s": s}
                            for i, s in enumerate([1.0, 1.3, 1.5])], columns=LAB.tables["rollout"])
    return deploy.DeployResult(requests, summary, rollout)


def test_the_deploy_counts_requests_in_their_windows_not_over_the_whole_run() -> None:
    result = _deploy(HUNG)
    assert len(result.while_up_ran) == 2 and deploy.failed(result.while_up_ran).all()  # sent at 0.9 and 1.0 s
    assert len(result.until_new_answered) == 3  # 0.9, 1.0 and 1.5 s: the first new answer is not counted
    said = result.conclusion()
    assert "the client sent **2** requests at a steady pace and **2** failed" in said
    assert "of the **3** requests sent until then **3** failed (3 of 7 over the client's whole run)" in said


def test_a_request_that_waited_out_the_limit_leaves_the_gap_between_two_bounds() -> None:
    result = _deploy(HUNG)
    assert deploy.longest_gap_span(HUNG) == pytest.approx((0.6, 2.6))
    assert result.shortest_true_gap_s == pytest.approx(1.0)
    assert "between **1.00 s** and 2.00 s" in result.gap_sentence
    quick = _deploy(_requests((0.0, 0.1, "1", ""), (1.0, 0.01, "", "refused"), (2.5, 0.1, "2", "")))
    assert quick.shortest_true_gap_s == pytest.approx(2.5) and "no request in it waited out" in quick.gap_sentence


def _unit(answered_s: float, broken_exit: int = 1) -> deploy.UnitResult:
    return deploy.UnitResult(pd.DataFrame([
        {"step": "verify", "command": "v", "exit_code": 0, "output": "", "pid1": "init"},
        {"step": "verify a broken copy", "command": "v", "exit_code": broken_exit, "output": "", "pid1": "init"},
        {"step": "ExecStart 1", "command": "pull", "exit_code": 0, "output": " app Skipped", "pid1": "init"},
        {"step": "ExecStart 2", "command": "up", "exit_code": 0, "output": "", "pid1": "init"},
        {"step": deploy.PROBE_STEP, "command": "GET", "exit_code": int(math.isnan(answered_s)),
         "output": "", "answered_s": answered_s, "pid1": "init"},
        {"step": "ExecStop", "command": "down", "exit_code": 0, "output": "True", "pid1": "init"},
    ], columns=LAB.tables["unit"]))


def _single_box(deploy_: deploy.DeployResult, unit: deploy.UnitResult) -> pd.DataFrame:
    rows = pd.DataFrame([{"compose": how, "version": version, "memory_bytes": 256 * 2**20, "cpus": 0.5,
                          "pids": float("nan"), "error": ""}
                         for how, version in ((limits.V2, "2.40.3"), (limits.V1, "1.29.2"),
                                              (limits.V1_COMPAT, "1.29.2"))], columns=LAB.tables["limits"])
    ci = ci_variant.CiResult(pd.DataFrame([{"path": p, "dev": "a", "ci": "b"} for p in ci_variant.CHAPTER_DIFFERENCES],
                                          columns=LAB.tables["ci_config"]))
    ledger = ClaimLedger(stack_lab.STEM)
    check_single_box_claims(ledger, limits.LimitsResult(rows), ci, deploy_, unit)
    return ledger.frame().set_index("id")


def test_the_single_box_claims_follow_hand_made_tables() -> None:
    claims = _single_box(_deploy(HUNG), _unit(2.0))
    assert claims.loc["compose.deploy_has_a_gap", "verdict"] == Verdict.HOLDS
    assert "3 of 3 requests sent from `up -d`'s start" in claims.loc["compose.deploy_has_a_gap", "measured"]
    assert claims.loc["compose.systemd_unit_runs_the_stack", "verdict"] == Verdict.CAVEAT  # not run by systemd
    assert "“app Skipped”" in claims.loc["compose.systemd_unit_runs_the_stack", "caveat"]
    # The override is ours, so the CI claim holds only with that said; one Compose release rolled out.
    assert claims.loc["compose.same_file_for_ci", "verdict"] == Verdict.CAVEAT
    assert "ours" in claims.loc["compose.same_file_for_ci", "caveat"]
    assert claims.loc["compose.update_config_one_at_a_time", "verdict"] == Verdict.FAILS  # 0.3 s apart, not 5 s
    assert "2.40.3" in claims.loc["compose.update_config_one_at_a_time", "caveat"]
    assert "docker-compose 1.29.2" in claims.loc["compose.v1_applies_deploy_limits", "measured"]


def test_the_single_box_claims_fail_on_data_that_contradicts_them() -> None:
    # Every request answered during the deploy; the unit's lines all exited 0 but the app never answered.
    answered = _requests((0.0, 0.1, "1", ""), (1.0, 0.1, "1", ""), (2.0, 0.1, "2", ""))
    claims = _single_box(_deploy(answered, first_new_s=2.0), _unit(float("nan")))
    assert claims.loc["compose.deploy_has_a_gap", "verdict"] == Verdict.FAILS
    assert claims.loc["compose.systemd_unit_runs_the_stack", "verdict"] == Verdict.FAILS
    assert "did **not** answer" in _unit(float("nan")).conclusion()
    failed_start = deploy.UnitResult(_unit(2.0).unit.iloc[:3].assign(exit_code=[0, 1, 1]))  # `compose pull` failed
    assert not failed_start.probed and not failed_start.sequence_ran and "**not** probed" in failed_start.conclusion()


def _deploy_result(starts: list[float]) -> deploy.DeployResult:
    rollout = pd.DataFrame([{"replica": i + 1, "stopped_s": s - 0.5, "started_s": s} for i, s in enumerate(starts)],
                           columns=LAB.tables["rollout"])
    summary = pd.DataFrame([{"up_start_s": 1.0, "up_end_s": 4.0, "requests": 100, "failed": 12,
                             "longest_gap_s": 2.5, "first_new_s": 3.0}], columns=LAB.tables["deploy"])
    return deploy.DeployResult(pd.DataFrame(columns=LAB.tables["deploy_requests"]), summary, rollout)


def test_one_at_a_time_needs_each_start_the_delay_after_the_last() -> None:
    assert _deploy_result([1.0, 6.5, 12.0]).one_at_a_time  # 5.5 s apart, delay 5 s
    together = _deploy_result([1.0, 1.4, 2.1])
    assert not together.one_at_a_time and together.start_spread_s == pytest.approx(1.1)
    assert not _deploy_result([1.0, 6.5]).one_at_a_time  # a replica missing


def test_the_ci_difference_is_read_path_by_path() -> None:
    dev = {"services": {"app": {"image": "a:1", "volumes": [{"type": "bind", "source": "/p/app"}],
                                "environment": {"X": "1"}}}}
    ci = {"services": {"app": {"image": "a:2", "environment": {"X": "1", "APP_ENV": "ci"}}}}
    found = ci_variant.CiResult(ci_variant.differences(dev, ci, "/p"))
    assert found.differences.to_dict("records") == [
        {"path": "services.app.environment.APP_ENV", "dev": "", "ci": "ci"},
        {"path": "services.app.image", "dev": "a:1", "ci": "a:2"},
        {"path": "services.app.volumes[0].source", "dev": "./app", "ci": ""},
        {"path": "services.app.volumes[0].type", "dev": "bind", "ci": ""}]
    assert found.as_the_chapter_says
    ci["services"]["app"]["ports"] = ["8080"]
    assert ci_variant.CiResult(ci_variant.differences(dev, ci)).outside_the_chapters == ["services.app.ports[0]"]


def test_the_unit_is_verified_only_when_its_broken_copy_is_refused() -> None:
    assert _unit(2.0).verified and _unit(2.0).sequence_ran and _unit(2.0).app_answered
    assert not _unit(2.0, broken_exit=0).verified  # a verify that refuses nothing proves nothing
    assert not _unit(float("nan")).app_answered


def test_limits_count_as_applied_only_when_every_wanted_value_is_in_the_cgroup() -> None:
    rows = pd.DataFrame([
        {"compose": limits.V2, "version": "2.40.3", "memory_bytes": 256 * 2**20, "cpus": 0.5, "pids": float("nan"),
         "error": ""},
        {"compose": limits.V1, "version": "1.29.2", "memory_bytes": float("nan"), "cpus": float("nan"),
         "pids": float("nan"), "error": ""},
        {"compose": limits.V1_COMPAT, "version": float("nan"), "memory_bytes": float("nan"), "cpus": float("nan"),
         "pids": float("nan"), "error": "not installed"}], columns=LAB.tables["limits"])
    found = limits.LimitsResult(rows)
    assert found.applied(limits.V2) and not found.applied(limits.V1) and not found.applied(limits.V1_COMPAT)
    assert found.ran(limits.V1) and not found.ran(limits.V1_COMPAT)
    # The release each row ran comes from the table ('?' when its binary said nothing).
    assert (found.version(limits.V1), found.version(limits.V1_COMPAT)) == ("1.29.2", "?")
    assert f"{limits.V2} 2.40.3: memory 256 MiB" in found.conclusion()


# ---------------------------------------------------------------- what the notebook's quick run recorded


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / stack_lab.STEM


def known_answers(folder: Path) -> None:
    """What a quick run on Engine 20.10 with Compose v2.40 must have recorded (see the live tests above)."""
    claims = pd.read_csv(folder / "claims.csv", keep_default_na=False).set_index("id")["verdict"]
    # Fixed by how Compose and the engine work (demonstrations) and by the files the lab writes.
    for held in ("compose.service_healthy_waits", "compose.named_volume_keeps_state", "compose.restart_policy",
                 "compose.not_an_orchestrator", "compose.limits_in_file", "compose.deploy_has_a_gap"):
        assert claims[held] == "holds", held
    assert claims["compose.same_file_for_ci"] == "holds with caveat"  # the CI override is our own file
    # Compose v2.40 recreates every replica at once: update_config is Swarm's.
    assert claims["compose.update_config_one_at_a_time"] == "does not hold"
    bringup = pd.read_csv(folder / "bringup.csv")
    assert (bringup["left_after_down"] == 0).all() and bringup["app_healthy_s"].notna().all()
    # Engine 20.10 runs the first check one interval after the start: never healthy sooner.
    chapter = bringup[bringup["interval_s"] == 5.0]
    assert len(chapter) and (chapter["db_healthy_s"] >= 5.0).all()


@pytest.mark.docker
def test_the_quick_run_recorded_the_known_answers(executed: Path) -> None:
    known_answers(executed)
