"""Notebook 10's lab: parsers and verdicts on hand-made tables with known answers, bad parameters refused before
anything runs, a live run checked against what this engine is known to do, an interrupted run that leaves nothing."""

from __future__ import annotations

import io
import json
import signal
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import engine, layers, processes
from labkit.labs import pitfalls_and_security as pitfalls
from labkit.labs.pitfalls_and_security import clock, defaults, logs, secrets, stopping, users, zombies
from tests.conftest import interrupted_run_leaves_nothing, lab_objects, leftovers

ROOT = Path(__file__).resolve().parent.parent
LAB = pitfalls.LAB


# ---------------------------------------------------------------------------------------------- parsers


def test_a_stat_line_gives_state_and_parent_even_with_parentheses_in_the_name() -> None:
    # Field 2 is "(a) (b)": the fields after the last ")" are state Z and parent pid 41.
    line = "77 (a) (b) Z 41 77 77 0 -1 4228164 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0"
    assert processes.parse_process_state(77, line) == processes.ProcessState(77, 41, "Z")


def test_descendants_follow_parents_and_leave_out_the_root_and_strangers() -> None:
    table = [processes.ProcessState(*row) for row in
             [(10, 1, "S"), (11, 10, "S"), (12, 11, "Z"), (13, 10, "Z"), (20, 1, "Z")]]
    assert sorted(p.pid for p in processes.descendants(table, 10)) == [11, 12, 13]
    assert sum(p.state == "Z" for p in processes.descendants(table, 10)) == 2  # 20 is a zombie elsewhere


def test_environ_read_from_a_fixture_tree(tmp_path: Path) -> None:
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "environ").write_bytes(b"PATH=/bin\0API_TOKEN=abc\0")
    assert processes.environ(5, tmp_path) == ["PATH=/bin", "API_TOKEN=abc"]


def _saved_image(path: Path, config: dict[str, object], layer_files: list[dict[str, bytes]]) -> Path:
    """A docker-save-shaped tarball: manifest.json, the config and one layer.tar per dict of files."""
    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as archive:
        names = []
        for index, files in enumerate(layer_files):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as layer:
                for name, data in files.items():
                    add(layer, name, data)
            names.append(f"{index}/layer.tar")
            add(archive, names[-1], buffer.getvalue())
        add(archive, "config.json", json.dumps(config).encode())
        add(archive, "manifest.json", json.dumps([{"Config": "config.json", "Layers": names}]).encode())
    return path


def test_places_holding_finds_the_needle_in_the_config_and_in_a_layer_s_file(tmp_path: Path) -> None:
    image = _saved_image(tmp_path / "image.tar", {"history": [{"created_by": "|1 API_TOKEN=s3cr3t sh -c true"}]},
                         [{"etc/os-release": b"debian"}, {"opt/used.txt": b"x" * 3000 + b"s3cr3t"}])
    assert layers.places_holding(image, b"s3cr3t") == ["config", "layer 1: opt/used.txt"]
    assert layers.places_holding(image, b"absent") == []


# ---------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def unstarted(tmp_path: Path) -> LabSession:
    """A live session with no engine: every call below must be refused before it would need one."""
    return LabSession(pitfalls.STEM, True, tmp_path, None, None, tables=dict(LAB.tables))


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: pitfalls.run_zombies(lab, orphans=0), r"orphans=0"),
    (lambda lab: pitfalls.run_zombies(lab, orphans=60), r"(?s)orphans=60.*1 to 56"),
    (lambda lab: pitfalls.run_zombies(lab, interval_s=-1), r"interval_s=-1"),
    (lambda lab: pitfalls.run_zombies(lab, repeats=0), r"repeats=0"),
    (lambda lab: pitfalls.run_stop(lab, repeats=0), r"repeats=0"),
    (lambda lab: pitfalls.run_stop(lab, stop_timeout_s=0), r"(?s)stop_timeout_s=0.*default is 10"),
    (lambda lab: pitfalls.run_stop(lab, stop_timeout_s=2.5),  # type: ignore[arg-type]
     r"stop_timeout_s=2.5"),
    (lambda lab: pitfalls.run_users(lab, memory_limit_mib=1), r"memory_limit_mib=1"),
    (lambda lab: pitfalls.run_log_growth(lab, written_mib=1000), r"written_mib=1000"),
    (lambda lab: pitfalls.run_log_growth(lab, max_files=0), r"max_files=0"),
    (lambda lab: pitfalls.run_log_growth(lab, duration_s=0), r"duration_s=0"),
    (lambda lab: pitfalls.run_clock(lab, memory_limit_mib=-5), r"memory_limit_mib=-5"),
])
def test_bad_parameters_are_refused_naming_the_parameter(
        unstarted: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(unstarted)


# ---------------------------------------------------------------------------------------------- known answers


def _stops(codes: dict[str, tuple[int, float]], timeout_s: int = 10) -> stopping.StopResult:
    """Three stops per form, each with the exit code and stop time given."""
    return stopping.StopResult(pd.DataFrame([
        {"form": form, "repeat": r, "position": 0, "dockerfile_cmd": "", "stop_timeout_s": timeout_s,
         "pid1": "python3 /opt/probe.py wait" if form == stopping.SHELL_SINGLE else "/bin/sh -c …",
         "stop_s": seconds + r * 0.01, "exit_code": code}
        for form, (code, seconds) in codes.items() for r in range(3)]))


# What Docker 20.10 does, by the kernel's rule for a namespace's PID 1: no handler → SIGKILL after the grace period.
KNOWN_STOPS = {stopping.SHELL_COMPOUND: (137, 10.2), stopping.SHELL_SINGLE: (137, 10.2),
               stopping.EXEC_PLAIN: (137, 10.3), stopping.EXEC_HANDLER: (0, 0.1), stopping.INIT: (143, 0.2)}


def test_stop_verdicts_on_known_exit_codes() -> None:
    result = _stops(KNOWN_STOPS)
    assert result.waited(stopping.SHELL_COMPOUND) and result.waited(stopping.EXEC_PLAIN)
    assert result.prompt(stopping.EXEC_HANDLER) and result.prompt(stopping.INIT)
    assert result.median_s(stopping.EXEC_HANDLER) == pytest.approx(0.11)  # 0.10, 0.11, 0.12
    assert result.sh_execs_single_command()  # PID 1 is python3, so this sh exec'd the lone command
    # A shell form that stopped at once (a shell that forwarded the signal) makes the chapter's claim fail.
    forwarded = _stops({**KNOWN_STOPS, stopping.SHELL_COMPOUND: (143, 0.2)})
    assert not forwarded.waited(stopping.SHELL_COMPOUND)


def test_how_close_staggered_stops_came_is_read_from_their_starts_and_ends() -> None:
    # Begun 1 s apart; the 1st and 3rd wait out 10 s: the closest two moments of different stops are a prompt
    # stop's end (1.1 s, 3.1 s) and the next stop's start (2 s, 4 s), 0.9 s apart.
    stops = _stops(KNOWN_STOPS).stops.query("repeat == 0").reset_index(drop=True)
    staggered = stops.assign(position=range(5), started_s=[0.0, 1.0, 2.0, 3.0, 4.0],
                             stop_s=[10.1, 0.1, 10.1, 0.1, 0.1])
    assert stopping.StopResult(staggered).closest_s == pytest.approx(0.9)
    assert "began 1.0 s apart" in stopping.StopResult(staggered).conclusion()
    assert "each prompt stop was over" in stopping.StopResult(staggered).conclusion()
    crowded = staggered.assign(started_s=[0.0, 0.5, 1.0, 1.05, 2.0])  # the 4th began 0.05 s after the 3rd
    assert stopping.StopResult(crowded).closest_s == pytest.approx(0.05)
    assert "read their times with care" in stopping.StopResult(crowded).conclusion()
    assert stopping.StopResult(stops).closest_s is None  # one stop after another: no such sentence
    assert "apart" not in stopping.StopResult(stops).conclusion()


def _zombies(without: list[int], with_init: list[int], built_in: list[int] | None = None) -> zombies.ZombieResult:
    """Samples of each variant (`built_in` None: a recording made before the built-in init)."""
    counts = {zombies.NO_INIT: ("python3", without), zombies.WITH_INIT: ("/sbin/docker-init", with_init),
              zombies.BUILT_IN: ("/usr/bin/tini", built_in or [])}
    return zombies.ZombieResult(pd.DataFrame(
        [{"variant": variant, "repeat": 0, "t_s": t * 0.1, "zombies": z, "processes": z + 2, "pid1": pid1,
          "orphans": 3} for variant, (pid1, samples) in counts.items() for t, z in enumerate(samples)]))


def test_the_built_in_init_is_judged_only_where_it_was_measured() -> None:
    def verdict(result: zombies.ZombieResult) -> Verdict | None:
        return {c.id: c.verdict for c in _hand_made(result, _stops(KNOWN_STOPS))}.get("pitfalls.init_built_in")

    assert verdict(_zombies([0, 2, 3], [0, 0, 0], [0, 1, 0])) == Verdict.HOLDS
    assert verdict(_zombies([0, 2, 3], [0, 0, 0], [0, 1, 2])) == Verdict.FAILS  # a tini that does not reap
    assert verdict(_zombies([0, 2, 3], [0, 0, 0])) is None
    assert [row["variant"] for _, row in _zombies([1], [0]).table().iterrows()] == [zombies.NO_INIT,
                                                                                   zombies.WITH_INIT]


def test_zombie_counts_read_the_last_sample_and_the_peak() -> None:
    result = _zombies([0, 1, 2, 3, 3], [0, 1, 0, 0, 0])
    assert (result.final(zombies.NO_INIT), result.final(zombies.WITH_INIT)) == (3, 0)
    assert result.peak(zombies.WITH_INIT) == 1


KEYCTL_HERE = ("EPERM", "EPERM", "ok")  # keyctl: default, --cap-add SYS_ADMIN, seccomp=unconfined


def _hand_made(zombie_result: zombies.ZombieResult, stop: stopping.StopResult,
               keyctl: tuple[str, str, str] = KEYCTL_HERE) -> ClaimLedger:
    """The ledger on hand-made tables of every section, as this host answers (no AppArmor, no SELinux)."""
    user_rows = pd.DataFrame([
        {"user": users.ROOT_USER, "uid": 0, "euid": 0, "effective_capabilities": "CHOWN", "capability_count": 14,
         "bind_write": "ok", "host_owner_uid": 0, "image_write": "ok"},
        {"user": users.NON_ROOT, "uid": 10001, "euid": 10001, "effective_capabilities": "", "capability_count": 0,
         "bind_write": "EACCES", "host_owner_uid": -1, "image_write": "EACCES"}])
    places = logs.LogPlacesResult(pd.DataFrame([
        {"check": c, "outcome": o} for c, o in [(logs.STDOUT_IN_LOGS, True), (logs.STDERR_IN_LOGS, True),
                                                (logs.FILE_INSIDE, True), (logs.FILE_AFTER_RESTART, True),
                                                (logs.FILE_IN_NEW_CONTAINER, False)]]))
    # 4 MiB written: 4.3 MiB on disk by default; at most 1.9 MiB under max-size 1 MiB × 2 files.
    growth = logs.LogGrowthResult(pd.DataFrame([
        {"variant": v, "t_s": 1.0, "log_bytes": b, "log_files": 1, "written_bytes": 4 * 2**20,
         "max_size_bytes": m, "max_files": f, "logs_lines": 4096}
        for v, b, m, f in [(logs.UNBOUNDED, 4_480_000, 0, 0), (logs.ROTATED, 1_990_000, 2**20, 2)]]))
    clock_rows = clock.ClockResult(pd.DataFrame([
        {"variant": v, "tz": tz, "before_ns": 100, "inside_ns": 150, "after_ns": 200, "set_clock": "EPERM",
         "shown": shown, "utc_offset_s": offset, "time_ns_shared": True}
        for v, tz, shown, offset in [(clock.UTC_DEFAULT, "", "04:00:00 UTC", 0),
                                     (clock.TOKYO, "JST-9", "13:00:00 JST", 32400)]]))
    outcome = {(defaults.RAW_SOCKET, defaults.DEFAULT): "opened", (defaults.RAW_SOCKET, "--cap-drop NET_RAW"): "EPERM",
               (defaults.UNSHARE, defaults.DEFAULT): "EPERM", (defaults.UNSHARE, defaults.UNCONFINED): "EPERM",
               (defaults.UNSHARE, defaults.ADD_ADMIN): "ok", (defaults.UNSHARE, defaults.UNCONFINED_ADMIN): "ok",
               **dict(zip([(defaults.KEYCTL, v) for v in (defaults.DEFAULT, defaults.ADD_ADMIN, defaults.UNCONFINED)],
                          keyctl, strict=True)),
               (defaults.READ_ONLY, defaults.DEFAULT): "etc: ok, tmp: ok",
               (defaults.READ_ONLY, "--read-only --tmpfs /tmp"): "etc: EROFS, tmp: ok",
               (defaults.NO_NEW_PRIVILEGES, defaults.DEFAULT): "euid 0",
               (defaults.NO_NEW_PRIVILEGES, "--security-opt no-new-privileges"): "euid 10001"}
    security = defaults.DefaultsResult(
        pd.DataFrame([{"check": c, "variant": v, "outcome": o, "uid": -1,
                       "euid": int(o.split()[1]) if o.startswith("euid") else -1} for (c, v), o in outcome.items()]),
        pd.DataFrame([{"what": w, "value": v} for w, v in [
            ("AppArmor enabled (kernel)", "no apparmor module"), ("SELinux enforce (kernel)", "no selinuxfs"),
            ("engine security options", "name=seccomp,profile=default"), ("container AppArmorProfile", "(none)"),
            ("container /proc/<pid>/attr/current", "(none)")]]))
    found = {(secrets.ENV, secrets.INSPECT): True, (secrets.ENV, secrets.ENVIRON): True,
             (secrets.ARG, secrets.HISTORY): True, (secrets.ARG, secrets.SAVED): True,
             (secrets.ARG, secrets.USED): True, (secrets.MOUNT, secrets.HISTORY): False,
             (secrets.MOUNT, secrets.SAVED): False, (secrets.MOUNT, secrets.USED): True}
    secret_rows = secrets.SecretResult(pd.DataFrame([
        {"way": w, "place": p, "found": f,
         "detail": "token of 45 bytes used" if p == secrets.USED else ("config" if f else "nowhere")}
        for (w, p), f in found.items()]))
    ledger = ClaimLedger(pitfalls.STEM)
    pitfalls.check_claims(ledger, zombie_result, stop, users.UserResult(user_rows), places, growth, clock_rows,
                          security, secret_rows)
    return ledger


def test_claims_on_hand_made_tables_of_what_this_host_does() -> None:
    ledger = _hand_made(_zombies([0, 2, 3], [0, 0, 0]), _stops(KNOWN_STOPS))
    verdicts = {c.id: c.verdict for c in ledger}
    assert verdicts["pitfalls.pid1_zombies"] == Verdict.HOLDS
    assert verdicts["pitfalls.sigterm_shell_form"] == Verdict.CAVEAT  # exec form alone waited the 10 s too
    assert not any(c.startswith("pitfalls.log_file") for c in verdicts)  # judged once, in 09
    assert verdicts["security.lsm_confines"] == Verdict.INCONCLUSIVE
    held = {"pitfalls.root_by_default", "pitfalls.log_to_stdout", "logs.rotation_bounds_disk",
            "pitfalls.time_is_the_host_s", "time.tz_display_only", "security.seccomp_blocks",
            "security.net_raw_socket", "security.read_only_root", "security.no_new_privileges",
            "secrets.where_they_stay", "signals.exec_form_needs_handler"}
    assert {i: verdicts[i] for i in held} == dict.fromkeys(held, Verdict.HOLDS)
    assert {c.source.value for c in ledger if c.id.startswith("pitfalls.")} == {"chapter"}


def test_claims_turn_when_the_data_says_otherwise() -> None:
    # Zombies left under --init, and an exec form without a handler that stopped at once.
    ledger = _hand_made(_zombies([0, 2, 3], [0, 1, 1]), _stops({**KNOWN_STOPS, stopping.EXEC_PLAIN: (143, 0.2)}))
    assert ledger.verdict("pitfalls.pid1_zombies") == Verdict.FAILS
    assert ledger.verdict("pitfalls.sigterm_shell_form") == Verdict.HOLDS
    assert ledger.verdict("signals.exec_form_needs_handler") == Verdict.FAILS


@pytest.mark.parametrize("keyctl", [("EPERM", "ok", "ok"), ("ok", "ok", "ok"), ("EPERM", "EPERM", "EPERM")],
                         ids=["a capability lets it through", "never refused", "refused unconfined too"])
def test_seccomp_is_judged_only_where_seccomp_alone_refuses(keyctl: tuple[str, str, str]) -> None:
    # unshare's EPERM by default is no evidence: with --cap-add SYS_ADMIN the default profile lets it through.
    assert _hand_made(_zombies([0, 2, 3], [0, 0, 0]), _stops(KNOWN_STOPS)).verdict("security.seccomp_blocks") == \
        Verdict.HOLDS
    assert _hand_made(_zombies([0, 2, 3], [0, 0, 0]), _stops(KNOWN_STOPS), keyctl).verdict(
        "security.seccomp_blocks") == Verdict.FAILS


# ---------------------------------------------------------------------------------------------- live


TEMP_FOLDERS = "labkit-10-*"  # the notebook's temporary folders, by name


def _temp_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(TEMP_FOLDERS)}


@pytest.mark.docker
@pytest.mark.root
def test_live_a_failure_mid_experiment_leaves_nothing(live: LabSession, docker_client: docker.DockerClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The third probe fails: by then both probe images are built and two probe containers have run.
    before, calls = _temp_folders(), []
    probe_once = defaults.probe_once

    def failing(*args: object, **options: object) -> dict[str, object]:
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("a failure in the middle of the experiment")
        return probe_once(*args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(defaults, "probe_once", failing)
    with pytest.raises(RuntimeError, match="in the middle"):
        pitfalls.run_defaults(live)
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert lab_objects(docker_client, pitfalls.STEM) == {"containers": [], "images": []}
    assert _temp_folders() - before == set()


@pytest.mark.docker
@pytest.mark.root
def test_live_known_answers(live: LabSession, docker_client: docker.DockerClient) -> None:
    before = _temp_folders()
    found = pitfalls.run_zombies(live, orphans=5, interval_s=0.1, settle_s=1.0)
    assert found.final(zombies.NO_INIT) == 5 and found.final(zombies.WITH_INIT) == 0
    assert found.final(zombies.BUILT_IN) == 0 and found.pid1(zombies.BUILT_IN) == "/usr/bin/tini"
    stop = pitfalls.run_stop(live, repeats=1, stop_timeout_s=3)  # room for a loaded machine to run the handler
    assert {f: stop.exit_codes(f) for f in stopping.FORMS} == {
        stopping.SHELL_COMPOUND: {137}, stopping.SHELL_SINGLE: {137}, stopping.EXEC_PLAIN: {137},
        stopping.EXEC_HANDLER: {0}, stopping.INIT: {143}}
    stagger_s = min(stopping.STAGGER_S, 3 / len(stopping.FORMS))  # each stop begins its place × this into the round
    assert (stop.stops["started_s"] >= stop.stops["position"] * stagger_s).all()
    assert (stop.stops.loc[stop.stops["exit_code"] == 137, "stop_s"] >= 3).all()
    who = pitfalls.run_users(live)
    assert (who.row(users.ROOT_USER)["uid"], who.row(users.ROOT_USER)["host_owner_uid"]) == (0, 0)
    assert who.row(users.NON_ROOT)["bind_write"] == "EACCES" and who.row(users.NON_ROOT)["capability_count"] == 0
    places = pitfalls.run_log_places(live)
    assert places.outcome(logs.FILE_AFTER_RESTART) and not places.outcome(logs.FILE_IN_NEW_CONTAINER)
    times = pitfalls.run_clock(live)
    assert times.bracketed and set(times.clock["set_clock"]) == {"EPERM"}
    security = pitfalls.run_defaults(live)
    # keyctl needs no capability: refused by the default profile however many are added, allowed unconfined
    assert [security.outcome(defaults.KEYCTL, v) for v in (defaults.DEFAULT, defaults.ADD_ADMIN, defaults.UNCONFINED)] \
        == ["EPERM", "EPERM", "ok"]
    # unshare needs CAP_SYS_ADMIN, and the default profile allows it once that is added
    assert [security.outcome(defaults.UNSHARE, v) for v in (defaults.DEFAULT, defaults.UNCONFINED,
                                                            defaults.ADD_ADMIN, defaults.UNCONFINED_ADMIN)] \
        == ["EPERM", "EPERM", "ok", "ok"]
    assert security.euid(defaults.DEFAULT) == 0 and security.euid("--security-opt no-new-privileges") == 10001
    hidden = pitfalls.run_secrets(live)
    assert hidden.found(secrets.ENV, secrets.INSPECT) and hidden.found(secrets.ENV, secrets.ENVIRON)
    assert hidden.found(secrets.ARG, secrets.HISTORY) and hidden.found(secrets.ARG, secrets.SAVED)
    assert hidden.found_anywhere(secrets.MOUNT) == [] and hidden.found(secrets.MOUNT, secrets.USED)
    assert leftovers(docker_client, live.run_id) == {"containers": [], "networks": [], "volumes": []}
    assert docker_client.images.list(filters={"label": f"{engine.LABEL_RUN}={live.run_id}"}) == []
    assert _temp_folders() - before == set()


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_container_image_or_file(
        signum: int, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    interrupted_run_leaves_nothing(docker_client, pitfalls.STEM, "10", tmp_path, signum, "containers", TEMP_FOLDERS)
