"""Section 8: the chapter's claims and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Verdict, verdict
from labkit.labs.pitfalls_and_security.clock import TOKYO, UTC_DEFAULT, ClockResult
from labkit.labs.pitfalls_and_security.defaults import (
    ADD_ADMIN,
    DEFAULT,
    KEYCTL,
    RAW_SOCKET,
    READ_ONLY,
    UNCONFINED,
    DefaultsResult,
)
from labkit.labs.pitfalls_and_security.logs import (
    MIB,
    ROTATED,
    STDERR_IN_LOGS,
    STDOUT_IN_LOGS,
    UNBOUNDED,
    LogGrowthResult,
    LogPlacesResult,
)
from labkit.labs.pitfalls_and_security.secrets import (
    ARG,
    ENV,
    ENVIRON,
    HISTORY,
    INSPECT,
    MOUNT,
    SAVED,
    USED,
    SecretResult,
)
from labkit.labs.pitfalls_and_security.stopping import (
    EXEC_HANDLER,
    EXEC_PLAIN,
    INIT,
    SHELL_COMPOUND,
    SHELL_SINGLE,
    StopResult,
)
from labkit.labs.pitfalls_and_security.users import NON_ROOT, ROOT_USER, UserResult
from labkit.labs.pitfalls_and_security.zombies import BUILT_IN, NO_INIT, WITH_INIT, ZombieResult

ROTATION_SLACK = 1.5  # a rotated log may exceed max-size × max-file by the lines written while it rotates


def check_claims(ledger: ClaimLedger, zombies: ZombieResult, stop: StopResult, users: UserResult,
                 places: LogPlacesResult, growth: LogGrowthResult, clock: ClockResult, defaults: DefaultsResult,
                 secrets: SecretResult) -> None:
    """The chapter's pitfalls and security layers, and our findings, each with a criterion and a verdict computed
    from this notebook's measurements."""
    without, with_init = zombies.final(NO_INIT), zombies.final(WITH_INIT)
    ledger.check(
        "pitfalls.pid1_zombies", value=without,
        measured=f"{zombies.orphans} orphaned grandchildren: {without} zombies left with the program as PID 1, "
                 f"{with_init} under --init ({zombies.pid1(WITH_INIT)})",
        verdict=verdict(without > 0 and with_init == 0))
    if BUILT_IN in zombies.variants:  # not in a recording made before the built-in init
        built_in = zombies.final(BUILT_IN)
        ledger.check(
            "pitfalls.init_built_in", value=built_in,
            measured=f"{built_in} zombies left with `{zombies.pid1(BUILT_IN)}` as PID 1 and the program its child, "
                     f"against {without} with the program as PID 1",
            verdict=verdict(without > 0 and built_in == 0))

    shell_waits = stop.waited(SHELL_COMPOUND) and stop.waited(SHELL_SINGLE)
    exec_alone_waits = stop.waited(EXEC_PLAIN)
    ledger.check(
        "pitfalls.sigterm_shell_form", value=stop.median_s(SHELL_COMPOUND),
        measured=f"shell form: compound {stop.median_s(SHELL_COMPOUND):.1f} s exit "
                 f"{sorted(stop.exit_codes(SHELL_COMPOUND))}, one command {stop.median_s(SHELL_SINGLE):.1f} s exit "
                 f"{sorted(stop.exit_codes(SHELL_SINGLE))} (PID 1 `{stop.pid1(SHELL_SINGLE)}`); exec form "
                 f"{stop.median_s(EXEC_PLAIN):.1f} s exit {sorted(stop.exit_codes(EXEC_PLAIN))} without a handler, "
                 f"{stop.median_s(EXEC_HANDLER):.1f} s exit {sorted(stop.exit_codes(EXEC_HANDLER))} with one",
        verdict=verdict(shell_waits and stop.prompt(EXEC_HANDLER), caveat=exec_alone_waits),
        caveat="exec form alone did not help: as PID 1 a program without a SIGTERM handler ignores the signal; it "
               f"needs a handler or --init ({stop.median_s(INIT):.1f} s, exit {sorted(stop.exit_codes(INIT))})"
        if exec_alone_waits else "",
        timeout_s=stop.timeout_s)

    root, other = users.row(ROOT_USER), users.row(NON_ROOT)
    ledger.check(
        "pitfalls.root_by_default", value=int(root["uid"]),
        measured=f"uid {root['uid']} with {root['capability_count']} effective capabilities; with USER 10001: uid "
                 f"{other['uid']}, {other['capability_count']} capabilities",
        verdict=verdict(int(root["uid"]) == 0))

    root_wrote = root["bind_write"] == "ok" and int(root["host_owner_uid"]) == 0
    ledger.check(
        "pitfalls.root_worse", value=int(root_wrote) - int(other["bind_write"] == "ok"),
        measured=f"into a root-owned host folder bind-mounted in: root wrote a file owned by uid "
                 f"{root['host_owner_uid']} on the host; uid 10001 got {other['bind_write']}",
        verdict=verdict(root_wrote and other["bind_write"] != "ok", caveat=True),
        caveat="a bind mount stands in for an escape: no escape was attempted, and a folder the host made writable "
               "for uid 10001 would take its writes too")

    to_stdout = places.outcome(STDOUT_IN_LOGS) and places.outcome(STDERR_IN_LOGS)
    ledger.check(
        "pitfalls.log_to_stdout", value=float(to_stdout),
        measured=f"stdout in docker logs: {places.outcome(STDOUT_IN_LOGS)}; stderr: {places.outcome(STDERR_IN_LOGS)}",
        verdict=verdict(to_stdout))

    # The chapter's "log files disappear on restart" is judged once, in notebook 09
    # (pitfalls.logs_lost_on_restart, across restart, stop + start and removal); §4 reads the same file as a log.

    unbounded, rotated_peak = growth.final_bytes(UNBOUNDED), growth.peak_bytes(ROTATED)
    bounded = rotated_peak <= ROTATION_SLACK * growth.bound_bytes
    ledger.check(
        "logs.rotation_bounds_disk", value=unbounded / growth.written_bytes,
        measured=f"{growth.written_bytes / MIB:.1f} MiB written: {unbounded / MIB:.1f} MiB on disk by default, at "
                 f"most {rotated_peak / MIB:.2f} MiB with rotation (bound {growth.bound_bytes / MIB:g} MiB)",
        verdict=verdict(unbounded >= growth.written_bytes and bounded), rotation_slack=ROTATION_SLACK)

    utc, tokyo = clock.row(UTC_DEFAULT), clock.row(TOKYO)
    shared = clock.bracketed and bool(clock.clock["time_ns_shared"].all())
    ledger.check(
        "pitfalls.time_is_the_host_s", value=clock.bracket_ms,
        measured=f"the container's reading fell between two host readings ≤ {clock.bracket_ms:.0f} ms apart; time "
                 f"namespace shared: {bool(clock.clock['time_ns_shared'].all())}; clock_settime inside: "
                 f"{utc['set_clock']}",
        verdict=verdict(shared))

    display_only = tokyo["shown"] != utc["shown"] and clock.bracketed
    ledger.check(
        "time.tz_display_only", value=int(tokyo["utc_offset_s"]),
        measured=f"shown {utc['shown']} without TZ and {tokyo['shown']} with {TOKYO}, from the same clock; "
                 f"clock_settime: {utc['set_clock']}",
        verdict=verdict(display_only and utc["set_clock"] == "EPERM"))

    refused = [defaults.outcome(KEYCTL, variant) for variant in (DEFAULT, ADD_ADMIN)]
    blocked = refused == ["EPERM", "EPERM"] and defaults.outcome(KEYCTL, UNCONFINED) == "ok"
    ledger.check(
        "security.seccomp_blocks", value=float(blocked),
        measured=f"keyctl (needs no capability): {refused[0]} by default, {refused[1]} with {ADD_ADMIN}, "
                 f"{defaults.outcome(KEYCTL, UNCONFINED)} with {UNCONFINED}",
        verdict=verdict(blocked))

    active = defaults.lsm_active
    ledger.check(
        "security.lsm_confines", value=len(active),
        measured=f"engine security options: {defaults.fact('engine security options')}; kernel AppArmor: "
                 f"{defaults.fact('AppArmor enabled (kernel)')}; SELinux: {defaults.fact('SELinux enforce (kernel)')}"
                 f"; container label: {defaults.fact('container /proc/<pid>/attr/current')}",
        verdict=Verdict.HOLDS if active else Verdict.INCONCLUSIVE,
        caveat="" if active else "this host's kernel has neither AppArmor nor SELinux enabled, so the engine "
                                 "applies no such profile: nothing here can confirm or refute what they add")

    raw_default, raw_dropped = defaults.outcome(RAW_SOCKET, DEFAULT), defaults.outcome(RAW_SOCKET, "--cap-drop NET_RAW")
    ledger.check(
        "security.net_raw_socket", value=float(raw_default == "opened"),
        measured=f"raw ICMP socket: {raw_default} by default, {raw_dropped} with --cap-drop NET_RAW",
        verdict=verdict(raw_default == "opened" and raw_dropped == "EPERM"))

    read_only = defaults.outcome(READ_ONLY, "--read-only --tmpfs /tmp")
    ledger.check(
        "security.read_only_root", value=float(read_only == "etc: EROFS, tmp: ok"),
        measured=f"--read-only --tmpfs /tmp: {read_only}; default: {defaults.outcome(READ_ONLY, DEFAULT)}",
        verdict=verdict(read_only == "etc: EROFS, tmp: ok"))

    euid_default, euid_nnp = defaults.euid(DEFAULT), defaults.euid("--security-opt no-new-privileges")
    ledger.check(
        "security.no_new_privileges", value=euid_nnp,
        measured=f"a setuid-root interpreter run by uid 10001: euid {euid_default} by default, {euid_nnp} under "
                 f"no-new-privileges",
        verdict=verdict(euid_default == 0 and euid_nnp != 0))

    env_found = secrets.found(ENV, INSPECT) and secrets.found(ENV, ENVIRON)
    arg_found = secrets.found(ARG, HISTORY)
    mount_clean = not secrets.found_anywhere(MOUNT) and "bytes used" in secrets.detail(MOUNT, USED)
    ledger.check(
        "secrets.where_they_stay", value=len(secrets.found_anywhere(MOUNT)),
        measured=f"-e: {', '.join(secrets.found_anywhere(ENV)) or 'nowhere'}; ARG: "
                 f"{', '.join(secrets.found_anywhere(ARG)) or 'nowhere'}; secret mount: "
                 f"{', '.join(secrets.found_anywhere(MOUNT)) or 'nowhere'} ({SAVED}: {secrets.detail(MOUNT, SAVED)})",
        verdict=verdict(env_found and arg_found and mount_clean))

    ledger.check(
        "signals.exec_form_needs_handler", value=stop.median_s(EXEC_PLAIN),
        measured=f"exec form without a handler {stop.median_s(EXEC_PLAIN):.1f} s exit "
                 f"{sorted(stop.exit_codes(EXEC_PLAIN))}; with --init {stop.median_s(INIT):.1f} s exit "
                 f"{sorted(stop.exit_codes(INIT))}; with a handler {stop.median_s(EXEC_HANDLER):.1f} s exit "
                 f"{sorted(stop.exit_codes(EXEC_HANDLER))}",
        verdict=verdict(exec_alone_waits and stop.prompt(INIT) and stop.prompt(EXEC_HANDLER)),
        timeout_s=stop.timeout_s)
