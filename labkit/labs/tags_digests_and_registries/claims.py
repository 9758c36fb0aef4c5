"""The chapter's claims about tags and registries and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, verdict
from labkit.labs.tags_digests_and_registries.declaration import (
    REVISION_LABEL,
)
from labkit.labs.tags_digests_and_registries.latest import MOVED, PUSHED_2, LatestResult
from labkit.labs.tags_digests_and_registries.linting import LintResult
from labkit.labs.tags_digests_and_registries.login import (
    LOGIN,
    LOGIN_WRONG,
    NO_CREDENTIALS,
    PUSH_ANONYMOUS,
    PUSH_LOGGED_IN,
    STORED,
    LoginResult,
)
from labkit.labs.tags_digests_and_registries.moved_tag import MovedTagResult
from labkit.labs.tags_digests_and_registries.release import (
    RELEASE_NEW,
    ROLL_BACK,
    ReleaseResult,
    RollbackResult,
)


def check_claims(ledger: ClaimLedger, moved: MovedTagResult, latest: LatestResult, linted: LintResult,
                 release: ReleaseResult, rollback: RollbackResult, login: LoginResult) -> None:
    """The chapter's claims about tags and registries and our finding beyond them, each with a criterion and a
    verdict computed from this notebook's measurements (release, rollback and login only where the replayed
    recording holds them). The manifest list's claim is ledgered once, by notebook 11
    (``manifest.one_tag_two_architectures``): it belongs to the chapter's "Build for the right architecture"."""
    first, second = moved.step("push 1.0 (first build)"), moved.step("push 1.0 (rebuilt)")
    ledger.check(
        "tags.mutable", value=float(moved.tag_moved),
        measured=f"app:1.0 named {first['digest'][:19]}… then {second['digest'][:19]}…; pulled by tag it printed "
                 f"{moved.step('pull 1.0 by tag')['output']!r}",
        verdict=verdict(moved.tag_moved and str(moved.step("pull 1.0 by tag")["output"]) == str(second["output"])))
    ledger.demonstrate(
        "digests.pin", shown=moved.digest_pinned,
        measured=f"pulled by the old digest after the tag moved, it printed "
                 f"{moved.step('pull by the old digest')['output']!r} (first build: {first['output']!r})")
    ledger.demonstrate(
        "tags.latest_is_just_a_tag", shown=latest.stayed,
        measured=f"after :2 was pushed, latest named {latest.names(PUSHED_2)}; after pushing latest itself, "
                 f"{latest.names(MOVED)}")
    caught, own = linted.caught, linted.own
    ledger.check(
        "lint.hadolint_catches_mistakes", value=float(sum(caught.values())),
        measured=f"caught {sum(caught.values())} of {len(caught)} planted mistakes; {len(own)} findings in the "
                 f"series' own {linted.linted} Dockerfiles; missed the same mistake spelled another way: "
                 f"{', '.join(linted.missed_blind_spots) or 'none'}",
        verdict=verdict(all(caught.values())), len_caught=len(caught))
    if release.recorded:
        check_release(ledger, release)
    if rollback.recorded:
        check_rollback(ledger, rollback)
    if login.recorded:
        check_login(ledger, login)


def check_release(ledger: ClaimLedger, release: ReleaseResult) -> None:
    r = release.row
    ledger.check(
        "tags.semver_and_sha", value=float(release.traceable),
        measured=f"tag {r['tag']}; the pulled image's {REVISION_LABEL} = {r['label']} (the commit: "
                 f"{r['commit']}); git cat-file -t says {r['git_object_type']}",
        verdict=verdict(release.traceable))


def check_rollback(ledger: ClaimLedger, rollback: RollbackResult) -> None:
    new, back = rollback.step(RELEASE_NEW), rollback.step(ROLL_BACK)
    ledger.check(
        "tags.rollback_by_retag", value=float(back["cached_run"] == back["pulled_run"]),
        measured=f"after latest was re-pointed to 1.0.0, a run from this host's cache printed {back['cached_run']!r} "
                 f"and a run after a pull {back['pulled_run']!r}; the container deployed first printed "
                 f"{back['running_container']!r}; by digest: {back['by_digest_run']!r}",
        verdict=verdict(rollback.retag_rolls_back_after_pull and rollback.digest_exact,
                        caveat=rollback.stale_after_rollback),
        caveat="the re-tag reached this host only when it pulled: its cached latest ran 1.1.0 until then, and the "
               "running container kept its image" if rollback.stale_after_rollback else "")
    ledger.check(
        "pitfalls.latest_in_production", value=float(rollback.stale_after_release),
        measured=f"after 1.1.0 became latest, a host with latest cached ran {new['cached_run']!r} and one that "
                 f"pulled ran {new['pulled_run']!r}",
        verdict=verdict(rollback.stale_after_release and new["pulled_run"] != new["cached_run"]))


def check_login(ledger: ClaimLedger, login: LoginResult) -> None:
    ledger.check(
        "registry.login_before_push", value=float(login.code(NO_CREDENTIALS)),
        measured=f"upload without credentials: {login.code(NO_CREDENTIALS)}; push not logged in: exit "
                 f"{login.code(PUSH_ANONYMOUS)}; login with a wrong password: exit {login.code(LOGIN_WRONG)}; "
                 f"login --password-stdin: exit {login.code(LOGIN)}; push logged in: exit "
                 f"{login.code(PUSH_LOGGED_IN)}",
        verdict=verdict(login.refused_then_accepted))
    ledger.check(
        "login.password_in_config", value=float(login.password_on_disk), measured=login.detail(STORED),
        verdict=verdict(login.password_on_disk))
