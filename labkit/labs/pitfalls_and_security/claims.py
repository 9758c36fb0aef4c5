"""Section 8: the chapter's claims and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, Verdict, demonstration, verdict
from labkit.labs.pitfalls_and_security.clock import TOKYO, UTC_DEFAULT, ClockResult
from labkit.labs.pitfalls_and_security.declaration import (
    SECTION_DEFAULTS,
    SECTION_LOGS,
    SECTION_PITFALLS,
    SECTION_SECRETS,
    SECTION_SIGNALS,
    SECTION_WHAT,
)
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
        "pitfalls.pid1_zombies", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="A program that does not reap children leaves zombies as PID 1; --init reaps them",
        value=without, unit="zombies left without --init",
        measured=f"{zombies.orphans} orphaned grandchildren: {without} zombies left with the program as PID 1, "
                 f"{with_init} under --init ({zombies.pid1(WITH_INIT)})",
        criterion="zombies > 0 at the end without --init, and 0 with it",
        verdict=verdict(without > 0 and with_init == 0), tables=("zombies",))
    if BUILT_IN in zombies.variants:  # not in a recording made before the built-in init
        built_in = zombies.final(BUILT_IN)
        ledger.check(
            "pitfalls.init_built_in", source=Source.CHAPTER, section=SECTION_PITFALLS,
            claim="An init built into the image (tini) reaps the orphans as --init does",
            value=built_in, unit="zombies left with tini as the image's ENTRYPOINT",
            measured=f"{built_in} zombies left with `{zombies.pid1(BUILT_IN)}` as PID 1 and the program its child, "
                     f"against {without} with the program as PID 1",
            criterion="0 zombies at the end with tini as the ENTRYPOINT, where the program alone as PID 1 left some",
            verdict=verdict(without > 0 and built_in == 0), tables=("zombies",))

    shell_waits = stop.waited(SHELL_COMPOUND) and stop.waited(SHELL_SINGLE)
    exec_alone_waits = stop.waited(EXEC_PLAIN)
    ledger.check(
        "pitfalls.sigterm_shell_form", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="With the shell form /bin/sh swallows SIGTERM, so docker stop has to kill; use the exec form",
        value=stop.median_s(SHELL_COMPOUND), unit=f"s (median docker stop, shell form; -t {stop.timeout_s})",
        measured=f"shell form: compound {stop.median_s(SHELL_COMPOUND):.1f} s exit "
                 f"{sorted(stop.exit_codes(SHELL_COMPOUND))}, one command {stop.median_s(SHELL_SINGLE):.1f} s exit "
                 f"{sorted(stop.exit_codes(SHELL_SINGLE))} (PID 1 `{stop.pid1(SHELL_SINGLE)}`); exec form "
                 f"{stop.median_s(EXEC_PLAIN):.1f} s exit {sorted(stop.exit_codes(EXEC_PLAIN))} without a handler, "
                 f"{stop.median_s(EXEC_HANDLER):.1f} s exit {sorted(stop.exit_codes(EXEC_HANDLER))} with one",
        criterion=f"both shell forms end in SIGKILL (137) after the {stop.timeout_s} s grace period and the exec "
                  "form with a handler stops before it; exec form alone waiting too is a caveat",
        verdict=verdict(shell_waits and stop.prompt(EXEC_HANDLER), caveat=exec_alone_waits),
        caveat="exec form alone did not help: as PID 1 a program without a SIGTERM handler ignores the signal; it "
               f"needs a handler or --init ({stop.median_s(INIT):.1f} s, exit {sorted(stop.exit_codes(INIT))})"
        if exec_alone_waits else "", tables=("stop",))

    root, other = users.row(ROOT_USER), users.row(NON_ROOT)
    ledger.check(
        "pitfalls.root_by_default", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="Without a USER line a container runs as root",
        value=int(root["uid"]), unit="uid inside",
        measured=f"uid {root['uid']} with {root['capability_count']} effective capabilities; with USER 10001: uid "
                 f"{other['uid']}, {other['capability_count']} capabilities",
        criterion=demonstration("how the engine starts a process", "uid 0 without USER"),
        verdict=verdict(int(root["uid"]) == 0), tables=("users",))

    root_wrote = root["bind_write"] == "ok" and int(root["host_owner_uid"]) == 0
    ledger.check(
        "pitfalls.root_worse", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="Root inside a container can do far more harm to the host than a non-root uid",
        value=int(root_wrote) - int(other["bind_write"] == "ok"), unit="1 = only root wrote the host folder",
        measured=f"into a root-owned host folder bind-mounted in: root wrote a file owned by uid "
                 f"{root['host_owner_uid']} on the host; uid 10001 got {other['bind_write']}",
        criterion="root writes a root-owned file into the bind-mounted host folder and uid 10001 is refused",
        verdict=verdict(root_wrote and other["bind_write"] != "ok", caveat=True),
        caveat="a bind mount stands in for an escape: no escape was attempted, and a folder the host made writable "
               "for uid 10001 would take its writes too", tables=("users",))

    to_stdout = places.outcome(STDOUT_IN_LOGS) and places.outcome(STDERR_IN_LOGS)
    ledger.check(
        "pitfalls.log_to_stdout", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="What a program writes to stdout and stderr is what the engine collects as its logs",
        value=float(to_stdout), unit="1 = both streams in docker logs",
        measured=f"stdout in docker logs: {places.outcome(STDOUT_IN_LOGS)}; stderr: {places.outcome(STDERR_IN_LOGS)}",
        criterion="a line written to each stream is returned by docker logs for that stream",
        verdict=verdict(to_stdout), tables=("log_places",))

    # The chapter's "log files disappear on restart" is judged once, in notebook 09
    # (pitfalls.logs_lost_on_restart, across restart, stop + start and removal); §4 reads the same file as a log.

    unbounded, rotated_peak = growth.final_bytes(UNBOUNDED), growth.peak_bytes(ROTATED)
    bounded = rotated_peak <= ROTATION_SLACK * growth.bound_bytes
    ledger.check(
        "logs.rotation_bounds_disk", source=Source.FINDING, section=SECTION_LOGS,
        claim="The default json-file log keeps every byte a container writes; max-size/max-file bound it",
        value=unbounded / growth.written_bytes, unit="bytes on disk per byte written (default)",
        measured=f"{growth.written_bytes / MIB:.1f} MiB written: {unbounded / MIB:.1f} MiB on disk by default, at "
                 f"most {rotated_peak / MIB:.2f} MiB with rotation (bound {growth.bound_bytes / MIB:g} MiB)",
        criterion=f"default ≥ the bytes written; rotated ≤ {ROTATION_SLACK}× max-size × max-file",
        verdict=verdict(unbounded >= growth.written_bytes and bounded), tables=("log_growth",))

    utc, tokyo = clock.row(UTC_DEFAULT), clock.row(TOKYO)
    shared = clock.bracketed and bool(clock.clock["time_ns_shared"].all())
    ledger.check(
        "pitfalls.time_is_the_host_s", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="A container's clock is the host's, so a host whose clock is off puts every container off",
        value=clock.bracket_ms, unit="ms (widest host bracket around the container's reading)",
        measured=f"the container's reading fell between two host readings ≤ {clock.bracket_ms:.0f} ms apart; time "
                 f"namespace shared: {bool(clock.clock['time_ns_shared'].all())}; clock_settime inside: "
                 f"{utc['set_clock']}",
        criterion=demonstration("the kernel having one realtime clock unless a time namespace is made",
                                "the container's reading lies between the host's and its time namespace is the "
                                "host's"),
        verdict=verdict(shared), tables=("clock",))

    display_only = tokyo["shown"] != utc["shown"] and clock.bracketed
    ledger.check(
        "time.tz_display_only", source=Source.FINDING, section="5 · Time",
        claim="TZ changes how a container shows the time, not its clock; setting the clock is refused",
        value=int(tokyo["utc_offset_s"]), unit="s UTC offset with TZ",
        measured=f"shown {utc['shown']} without TZ and {tokyo['shown']} with {TOKYO}, from the same clock; "
                 f"clock_settime: {utc['set_clock']}",
        criterion="the local time shown differs, both readings lie within the host's brackets, and setting the "
                  "clock ends EPERM",
        verdict=verdict(display_only and utc["set_clock"] == "EPERM"), tables=("clock",))

    refused = [defaults.outcome(KEYCTL, variant) for variant in (DEFAULT, ADD_ADMIN)]
    blocked = refused == ["EPERM", "EPERM"] and defaults.outcome(KEYCTL, UNCONFINED) == "ok"
    ledger.check(
        "security.seccomp_blocks", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="seccomp restricts the system calls a container may make",
        value=float(blocked), unit="1 = refused by the default profile alone",
        measured=f"keyctl (needs no capability): {refused[0]} by default, {refused[1]} with {ADD_ADMIN}, "
                 f"{defaults.outcome(KEYCTL, UNCONFINED)} with {UNCONFINED}",
        criterion="a system call that needs no capability is refused (EPERM) under the default profile, also with "
                  "CAP_SYS_ADMIN added, and succeeds with seccomp unconfined: only seccomp can have refused it",
        verdict=verdict(blocked), tables=("defaults",))

    active = defaults.lsm_active
    ledger.check(
        "security.lsm_confines", source=Source.CHAPTER, section=SECTION_WHAT,
        claim="AppArmor or SELinux further restricts what a container may do",
        value=len(active), unit="security modules confining containers here",
        measured=f"engine security options: {defaults.fact('engine security options')}; kernel AppArmor: "
                 f"{defaults.fact('AppArmor enabled (kernel)')}; SELinux: {defaults.fact('SELinux enforce (kernel)')}"
                 f"; container label: {defaults.fact('container /proc/<pid>/attr/current')}",
        criterion="a container runs under an AppArmor profile or SELinux label that the engine reports",
        verdict=Verdict.HOLDS if active else Verdict.INCONCLUSIVE,
        caveat="" if active else "this host's kernel has neither AppArmor nor SELinux enabled, so the engine "
                                 "applies no such profile: nothing here can confirm or refute what they add",
        tables=("lsm",))

    raw_default, raw_dropped = defaults.outcome(RAW_SOCKET, DEFAULT), defaults.outcome(RAW_SOCKET, "--cap-drop NET_RAW")
    ledger.check(
        "security.net_raw_socket", source=Source.FINDING, section=SECTION_DEFAULTS,
        claim="A default container can open a raw socket; --cap-drop NET_RAW takes that away",
        value=float(raw_default == "opened"), unit="1 = opened by default",
        measured=f"raw ICMP socket: {raw_default} by default, {raw_dropped} with --cap-drop NET_RAW",
        criterion="opened by default and EPERM with the capability dropped",
        verdict=verdict(raw_default == "opened" and raw_dropped == "EPERM"), tables=("defaults",))

    read_only = defaults.outcome(READ_ONLY, "--read-only --tmpfs /tmp")
    ledger.check(
        "security.read_only_root", source=Source.FINDING, section=SECTION_DEFAULTS,
        claim="--read-only stops writes to the image's files while a tmpfs keeps /tmp writable",
        value=float(read_only == "etc: EROFS, tmp: ok"), unit="1 = /etc refused, /tmp written",
        measured=f"--read-only --tmpfs /tmp: {read_only}; default: {defaults.outcome(READ_ONLY, DEFAULT)}",
        criterion="/etc ends EROFS and /tmp ok under --read-only --tmpfs /tmp",
        verdict=verdict(read_only == "etc: EROFS, tmp: ok"), tables=("defaults",))

    euid_default, euid_nnp = defaults.euid(DEFAULT), defaults.euid("--security-opt no-new-privileges")
    ledger.check(
        "security.no_new_privileges", source=Source.FINDING, section=SECTION_DEFAULTS,
        claim="no-new-privileges keeps a setuid-root program from raising a non-root user to euid 0",
        value=euid_nnp, unit="euid under no-new-privileges",
        measured=f"a setuid-root interpreter run by uid 10001: euid {euid_default} by default, {euid_nnp} under "
                 f"no-new-privileges",
        criterion="euid 0 by default (the setuid bit works) and non-zero under no-new-privileges",
        verdict=verdict(euid_default == 0 and euid_nnp != 0), tables=("defaults",))

    env_found = secrets.found(ENV, INSPECT) and secrets.found(ENV, ENVIRON)
    arg_found = secrets.found(ARG, HISTORY)
    mount_clean = not secrets.found_anywhere(MOUNT) and "bytes used" in secrets.detail(MOUNT, USED)
    ledger.check(
        "secrets.where_they_stay", source=Source.FINDING, section=SECTION_SECRETS,
        claim="A secret passed with -e or as a build ARG can be read back; a BuildKit secret mount leaves no trace",
        value=len(secrets.found_anywhere(MOUNT)), unit="places holding the mounted secret",
        measured=f"-e: {', '.join(secrets.found_anywhere(ENV)) or 'nowhere'}; ARG: "
                 f"{', '.join(secrets.found_anywhere(ARG)) or 'nowhere'}; secret mount: "
                 f"{', '.join(secrets.found_anywhere(MOUNT)) or 'nowhere'} ({SAVED}: {secrets.detail(MOUNT, SAVED)})",
        criterion="-e found in docker inspect and the host's /proc/<pid>/environ, ARG in docker history, the secret "
                  "mount nowhere although its step read it",
        verdict=verdict(env_found and arg_found and mount_clean), tables=("secrets",))

    ledger.check(
        "signals.exec_form_needs_handler", source=Source.FINDING, section=SECTION_SIGNALS,
        claim="Exec form alone does not make docker stop prompt: PID 1 needs a SIGTERM handler or an init",
        value=stop.median_s(EXEC_PLAIN), unit=f"s (median docker stop, exec form without a handler; -t "
                                              f"{stop.timeout_s})",
        measured=f"exec form without a handler {stop.median_s(EXEC_PLAIN):.1f} s exit "
                 f"{sorted(stop.exit_codes(EXEC_PLAIN))}; with --init {stop.median_s(INIT):.1f} s exit "
                 f"{sorted(stop.exit_codes(INIT))}; with a handler {stop.median_s(EXEC_HANDLER):.1f} s exit "
                 f"{sorted(stop.exit_codes(EXEC_HANDLER))}",
        criterion="exec form without a handler ends 137 after the grace period; --init and a handler stop before it",
        verdict=verdict(exec_alone_waits and stop.prompt(INIT) and stop.prompt(EXEC_HANDLER)), tables=("stop",))
