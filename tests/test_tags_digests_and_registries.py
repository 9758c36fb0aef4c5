"""Notebook 06's lab: bad input refused before anything runs; hadolint's findings on known Dockerfiles; the
verdicts on known tables; recorded results replay into the same claims; and a live quick run in which the moved tag
and the pinned digest run different images, latest stays put, the manifest list resolves per platform, and the
registry is gone afterwards."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.results import ResultStore
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import registry
from labkit.labs import tags_digests_and_registries
from labkit.labs.tags_digests_and_registries import claims, login, release
from tests.conftest import leftovers

ROOT = Path(__file__).resolve().parent.parent

LAB = tags_digests_and_registries.LAB  # what the `replay` fixture (conftest.py) replays


@pytest.mark.parametrize(("call", "message"), [
    (lambda lab: tags_digests_and_registries.run_moved_tag(lab, port=80), r"port=80.*1024 to 65535"),
    (lambda lab: tags_digests_and_registries.run_latest(lab, port=70000), r"port=70000"),
    (lambda lab: tags_digests_and_registries.run_manifest_list(lab, port=True), r"port=True"),
    (lambda lab: tags_digests_and_registries.run_release(lab, port=1023), r"port=1023"),
    (lambda lab: tags_digests_and_registries.run_rollback(lab, port=65536), r"port=65536"),
    (lambda lab: tags_digests_and_registries.run_login(lab, port=0), r"port=0"),
])
def test_bad_ports_are_refused(replay: LabSession, call: Callable[[LabSession], object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        call(replay)


def test_hadolint_finds_what_it_should_in_known_dockerfiles() -> None:
    findings = tags_digests_and_registries.lint({
        "untagged apt": "FROM debian\nRUN apt-get update && apt-get install -y curl\n",
        "clean": 'FROM debian:12.5\nUSER 65532\nCMD ["true"]\n',
        "add": "FROM busybox:1.36\nADD app.txt /app.txt\n"})
    codes = {(r.dockerfile, r.code) for r in findings.itertuples()}
    assert {("untagged apt", "DL3006"), ("untagged apt", "DL3008"), ("add", "DL3020")} <= codes
    assert "clean" not in set(findings["dockerfile"])
    assert list(findings.columns) == list(tags_digests_and_registries.LAB.tables["lint"])
    with pytest.raises(BadParameter, match="nothing to lint"):
        tags_digests_and_registries.lint({})


def test_every_series_dockerfile_has_its_placeholders_filled() -> None:
    dockerfiles = tags_digests_and_registries.series_dockerfiles()
    assert all("{" not in text.replace("${", "").replace("{}", "") for text in dockerfiles.values())
    first_lines = [next(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
                   for text in dockerfiles.values()]
    assert all(line.startswith(("FROM", "ARG")) for line in first_lines)


def test_placeholders_are_filled_as_the_labs_fill_them() -> None:
    template = 'FROM {base} AS build\nADD {source} /\nRUN find /out -exec touch {{}} + && echo ${X} {mib}M\n'
    assert tags_digests_and_registries.fill_placeholders(template) == (
        "FROM labkit/base:tag AS build\nADD rootfs.tar /\nRUN find /out -exec touch {} + && echo ${X} 1M\n")
    # 14's optional line: a placeholder before the instruction holds lines of its own, or none.
    assert tags_digests_and_registries.fill_placeholders("FROM {base}\n{env}COPY a b ./\n") == (
        "FROM labkit/base:tag\nCOPY a b ./\n")


# Found by hand (grep -rn 'FROM ' labkit, 2026-12-05): Dockerfiles the series builds that a hand-written list left
# out before (02's and 04's), and the planted mistakes that must not count as the series' own.
KNOWN_SERIES = ("assets/image_layers/Dockerfile.layered", "assets/image_layers/Dockerfile.one-layer",
                "assets/image_layers/Dockerfile.as-is", "assets/image_layers/Dockerfile.normalised",
                "assets/greeter/Dockerfile.multi-stage", "assets/multi_stage/go/Dockerfile.single-stage",
                "assets/multi_stage/go/Dockerfile.multi-stage", "assets/multi_stage/c/Dockerfile.single-stage",
                "assets/multi_stage/c/Dockerfile.multi-stage")
# A string starting a Dockerfile, as written in Python: a FROM line (ending the line or at "\n") or an ARG line.
STARTS_DOCKERFILE = re.compile(r"""(?:^|["'])(?:FROM [^\s"']+(?: AS \w+)?(?:\\n|$)|ARG \w+(?:=\S*)?\\n)""")


def test_every_dockerfile_in_the_series_code_is_linted() -> None:
    series = tags_digests_and_registries.series_dockerfiles()
    assert set(KNOWN_SERIES) <= set(series)
    # Every one is a file a reader, hadolint and git diff see whole (the planted mistakes stay strings).
    assert [name for name in series if not name.startswith("assets/")] == []
    assert not any(name.startswith(("mistake", "blind spot")) for name in series)
    planted = {text for text, _ in tags_digests_and_registries.PLANTED_MISTAKES.values()}
    assert not planted & set(series.values())
    # Independently of the lab's parser: every line of labkit where a string starts a Dockerfile lies within a
    # Dockerfile the lab found (the planted mistakes are found too, and linted as mistakes), and every asset file
    # with a FROM line is one.
    sources = tags_digests_and_registries.dockerfile_sources()
    covered = {(s.path, line) for s in sources for line in range(s.first_line, s.last_line + 1)}
    code = ROOT / "labkit"
    hits = {(path, number) for path in code.rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1) if STARTS_DOCKERFILE.search(line)}
    assert sorted(hits - covered) == []
    assets = {path for path in (code / "assets").rglob("*") if path.is_file()
              and any(line.startswith("FROM ") for line in path.read_text(errors="replace").splitlines())}
    assert assets and assets <= {s.path for s in sources}


def test_the_pip_rule_misses_pip_spelled_by_its_path() -> None:
    # hadolint 2.15.1's DL3042 reads `pip install`, not `/venv/bin/pip install`: the blind spot is reported.
    blind = tags_digests_and_registries.BLIND_SPOTS
    findings = tags_digests_and_registries.lint({name: text for name, (text, _) in blind.items()})
    result = tags_digests_and_registries.LintResult(findings, 0)
    assert result.missed_blind_spots == ["pip by its path keeps its cache"] and result.own.empty
    caught = tags_digests_and_registries.LintResult(pd.DataFrame(
        [{"dockerfile": name, "line": 2, "code": code, "level": "warning", "message": ""}
         for name, (_, code) in blind.items()]), 0)
    assert caught.missed_blind_spots == []


def _moved(outputs: tuple[str, str, str, str], digests: tuple[str, str]) -> tags_digests_and_registries.MovedTagResult:
    steps = ["push 1.0 (first build)", "push 1.0 (rebuilt)", "pull 1.0 by tag", "pull by the old digest"]
    kinds = ["push", "push", "pull by tag", "pull by digest"]
    return tags_digests_and_registries.MovedTagResult(pd.DataFrame({
        "step": steps, "reference": ["r"] * 4, "kind": kinds, "digest": [*digests, digests[1], digests[0]],
        "image_id": ["a", "b", "b", "a"], "output": list(outputs)}))


def test_every_planted_mistake_is_caught_by_its_rule() -> None:
    planted = tags_digests_and_registries.PLANTED_MISTAKES
    findings = tags_digests_and_registries.lint({name: text for name, (text, _) in planted.items()})
    result = tags_digests_and_registries.LintResult(findings, 0)
    assert all(result.caught.values()) and result.own.empty
    missing_rule = tags_digests_and_registries.LintResult(findings[findings["code"] != "DL3020"], 0)
    assert not missing_rule.caught[f"{tags_digests_and_registries.MISTAKE}ADD for a local file"]


def test_the_verdicts_follow_the_outputs() -> None:
    good = _moved(("one", "two", "two", "one"), ("sha256:1", "sha256:2"))
    assert good.tag_moved and good.digest_pinned
    stuck = _moved(("one", "two", "two", "two"), ("sha256:1", "sha256:2"))
    assert stuck.tag_moved and not stuck.digest_pinned
    unmoved = _moved(("one", "one", "one", "one"), ("sha256:1", "sha256:1"))
    assert not unmoved.tag_moved and not unmoved.digest_pinned
    assert "registry.example.com/app@sha256:2" in good.online_commands()


# ---------------------------------------------------------------- live: notebook 06 in quick mode


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / tags_digests_and_registries.STEM


@pytest.mark.docker
def test_the_moved_tag_and_the_pinned_digest_run_different_images(executed: Path) -> None:
    moved = tags_digests_and_registries.MovedTagResult(pd.read_csv(executed / "moved_tag.csv"))
    assert moved.tag_moved and moved.digest_pinned
    assert moved.step("pull by the old digest")["output"] == "app 1.0, first build"
    assert moved.step("pull 1.0 by tag")["output"] == "app 1.0, rebuilt with a change"


@pytest.mark.docker
def test_latest_stays_until_it_is_pushed(executed: Path) -> None:
    assert tags_digests_and_registries.LatestResult(pd.read_csv(executed / "latest.csv")).stayed


@pytest.mark.docker
def test_the_manifest_list_resolves_per_platform(executed: Path) -> None:
    assert registry.ManifestResult(pd.read_csv(executed / "manifest.csv")).resolves


@pytest.mark.docker
def test_the_release_tag_leads_back_to_its_commit(executed: Path) -> None:
    row = release.ReleaseResult(pd.read_csv(executed / "release.csv", dtype=str)).row
    # The pulled image's label is the commit git made, and the tag carries its first 7 hex digits.
    assert re.fullmatch(r"[0-9a-f]{40}", row["commit"]) and row["label"] == row["commit"]
    assert row["tag"] == "1.4.2-" + row["commit"][:7] and row["git_object_type"] == "commit"


@pytest.mark.docker
def test_a_cached_latest_runs_the_old_release_until_pulled(executed: Path) -> None:
    table = pd.read_csv(executed / "rollback.csv").set_index("step")
    assert list(table["cached_run"]) == ["(nothing cached)", "app 1.0.0", "app 1.1.0"]
    assert list(table["pulled_run"]) == list(table["by_digest_run"]) == ["app 1.0.0", "app 1.1.0", "app 1.0.0"]
    assert set(table["running_container"]) == {"app 1.0.0"}


@pytest.mark.docker
def test_the_unauthenticated_push_answers_401_and_the_password_lands_in_config_json(executed: Path) -> None:
    result = login.LoginResult(pd.read_csv(executed / "login.csv"))
    assert result.code(login.NO_CREDENTIALS) == 401 and result.code(login.PUSH_ANONYMOUS) == 1
    assert "no basic auth credentials" in result.detail(login.PUSH_ANONYMOUS)
    assert "401 Unauthorized" in result.detail(login.LOGIN_WRONG) and result.code(login.LOGIN) == 0
    assert "stored unencrypted" in result.detail(login.LOGIN)
    assert result.code(login.STORED) == 1 and "mode 0o600" in result.detail(login.STORED)
    assert "<password>" in result.detail(login.STORED)


@pytest.mark.docker
def test_nothing_is_left_behind(executed: Path, docker_client: docker.DockerClient) -> None:
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert not [i for i in docker_client.images.list() if any("127.0.0.1:" in t for t in i.tags)]
    assert not list(Path("/tmp").glob("labkit-registry-*"))
    assert not list(Path("/tmp").glob("labkit-docker-config-*")) and not list(Path("/tmp").glob("labkit-release-*"))


@pytest.mark.parametrize(("line", "flagged"), [
    ("RUN python3 -m venv /venv && /venv/bin/pip install --no-index -r requirements.txt", True),
    ("RUN /venv/bin/pip install --no-cache-dir flask", False),
    ("RUN pip install flask", False),  # bare pip: hadolint's DL3042 sees this one itself
])
def test_pip_by_its_path_is_found_where_hadolint_does_not_look(line: str, flagged: bool) -> None:
    assert bool(tags_digests_and_registries.PIP_BY_PATH.search(f"FROM x\n{line}\n")) == flagged
    # By grep (grep -rln '/venv/bin/pip install' labkit/assets): 03's two greeter Dockerfiles and 04's multi-stage.
    series = tags_digests_and_registries.series_dockerfiles()
    assert {n for n, t in series.items() if tags_digests_and_registries.PIP_BY_PATH.search(t)} == {
        "assets/greeter/Dockerfile.dependencies-first", "assets/greeter/Dockerfile.everything-first",
        "assets/greeter/Dockerfile.multi-stage"}


# ---------------------------------------------------------------- the new sections' verdicts, on hand-made tables

COMMIT = "d9c43061d649e5a9479f87963c23ff0f37d26220"  # a commit as git prints it (from a quick run, 2026-12-05)


def _release(**changes: str) -> release.ReleaseResult:
    row = {"version": "1.4.2", "commit": COMMIT, "tag": "1.4.2-d9c4306", "pushed_digest": "sha256:4a", "pulled_digest":
           "sha256:4a", "label": COMMIT, "git_object_type": "commit", **changes}
    return release.ReleaseResult(pd.DataFrame([row]))


@pytest.mark.parametrize(("changes", "traceable"), [
    ({}, True),
    ({"label": ""}, False),  # the label lost on the way (a build without --build-arg REVISION)
    ({"label": "0" * 40, "git_object_type": "not an object here"}, False),
    ({"tag": "1.4.2-d9c4307"}, False),  # another commit's SHA in the tag
    ({"tag": "1.4.2"}, False),
    ({"pulled_digest": "sha256:5b"}, False),  # the tag pulled another image
])
def test_a_release_is_traceable_only_when_tag_label_and_commit_agree(changes: dict[str, str],
                                                                     traceable: bool) -> None:
    result = _release(**changes)
    assert result.traceable == traceable
    ledger = ClaimLedger(tags_digests_and_registries.STEM)
    claims.check_release(ledger, result)
    assert ledger.verdict("tags.semver_and_sha") == (Verdict.HOLDS if traceable else Verdict.FAILS)


def _rollback(cached: tuple[str, str, str]) -> release.RollbackResult:
    old, new = release.OLD, release.NEW
    return release.RollbackResult(pd.DataFrame({
        "step": [release.RELEASE_OLD, release.RELEASE_NEW, release.ROLL_BACK], "registry_latest": [old, new, old],
        "cached_run": list(cached), "pulled_run": [old, new, old], "running_container": [old, old, old],
        "by_digest_run": [old, new, old]}))


def test_the_rollback_verdicts_follow_what_the_cache_ran() -> None:
    # As measured: the cache lags one step behind the registry.
    lagging = ClaimLedger(tags_digests_and_registries.STEM)
    claims.check_rollback(lagging, _rollback(("(nothing cached)", release.OLD, release.NEW)))
    assert lagging.verdict("tags.rollback_by_retag") == Verdict.CAVEAT
    assert lagging.verdict("pitfalls.latest_in_production") == Verdict.HOLDS
    # An engine that pulled latest before every run (what --pull always does): no host would run a stale latest.
    pulling = ClaimLedger(tags_digests_and_registries.STEM)
    claims.check_rollback(pulling, _rollback(("(nothing cached)", release.NEW, release.OLD)))
    assert pulling.verdict("tags.rollback_by_retag") == Verdict.HOLDS
    assert pulling.verdict("pitfalls.latest_in_production") == Verdict.FAILS
    # A digest that ran another release breaks the rollback claim whatever the cache did.
    result = _rollback(("(nothing cached)", release.OLD, release.NEW))
    broken = release.RollbackResult(result.rollback.assign(by_digest_run=release.NEW))
    assert not broken.digest_exact


def _login(upload: int = 401, helper: int = 0, stored: int = 1) -> login.LoginResult:
    codes = {login.NO_CREDENTIALS: upload, login.PUSH_ANONYMOUS: 1 if upload == 401 else 0, login.LOGIN_WRONG: 1,
             login.LOGIN: 0, login.STORED: stored, login.HELPER: helper, login.PUSH_LOGGED_IN: 0, login.LOGOUT: 0}
    return login.LoginResult(pd.DataFrame([{"step": step, "kind": "", "code": code, "detail": ""}
                                           for step, code in codes.items()]))


@pytest.mark.parametrize(("result", "expected"), [
    (_login(), {"registry.login_before_push": Verdict.HOLDS, "login.password_in_config": Verdict.HOLDS}),
    # A registry without a password file: the upload starts (202) and the anonymous push works.
    (_login(upload=202), {"registry.login_before_push": Verdict.FAILS, "login.password_in_config": Verdict.HOLDS}),
    # A credential helper configured: the file holds no password.
    (_login(helper=1, stored=0), {"registry.login_before_push": Verdict.HOLDS,
                                  "login.password_in_config": Verdict.FAILS}),
])
def test_the_login_verdicts_follow_the_codes(result: login.LoginResult, expected: dict[str, Verdict]) -> None:
    ledger = ClaimLedger(tags_digests_and_registries.STEM)
    claims.check_login(ledger, result)
    assert {claim_id: ledger.verdict(claim_id) for claim_id in expected} == expected


def test_a_recording_made_before_the_new_sections_replays_saying_so(replay: LabSession, tmp_path: Path) -> None:
    assert replay.replay is not None
    older = tmp_path / tags_digests_and_registries.STEM
    shutil.copytree(replay.replay.folder, older)
    for table in ("release", "rollback", "login"):  # what a recording made before these sections lacks
        (older / f"{table}.csv").unlink(missing_ok=True)
    session = LabSession.replaying(tags_digests_and_registries.LAB, ResultStore(older))
    new = (tags_digests_and_registries.run_release(session), tags_digests_and_registries.run_rollback(session),
           tags_digests_and_registries.run_login(session))
    assert not any(result.recorded for result in new)
    assert all("predates this section" in result.conclusion() for result in new)
    ledger = ClaimLedger(tags_digests_and_registries.STEM)
    tags_digests_and_registries.check_claims(ledger, tags_digests_and_registries.run_moved_tag(session),
                                             tags_digests_and_registries.run_latest(session),
                                             tags_digests_and_registries.run_lint(session), *new)
    assert {c.id for c in ledger} == {"tags.mutable", "digests.pin", "tags.latest_is_just_a_tag",
                                      "lint.hadolint_catches_mistakes"}
