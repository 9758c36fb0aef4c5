"""The chapter's claims about tags and registries and our findings beyond them, checked on the results."""

from __future__ import annotations

from labkit.core.claims import ClaimLedger, Source, demonstration, verdict
from labkit.labs.tags_digests_and_registries.declaration import (
    REGISTRY_RULES,
    REVISION_LABEL,
    SECTION_LINT,
    SECTION_LOGIN,
    SECTION_PITFALLS,
    SECTION_REGISTRIES,
    SECTION_TAGS,
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
        "tags.mutable", source=Source.CHAPTER, section=SECTION_TAGS,
        claim="A tag can be moved: the same tag can come to name another image",
        value=float(moved.tag_moved), unit="1 = the tag named a new digest",
        measured=f"app:1.0 named {first['digest'][:19]}… then {second['digest'][:19]}…; pulled by tag it printed "
                 f"{moved.step('pull 1.0 by tag')['output']!r}",
        criterion=demonstration(REGISTRY_RULES, "after a rebuild and a second push of the same tag, the registry "
                                "names a different digest for it and a pull of the tag runs the rebuilt image"),
        verdict=verdict(moved.tag_moved and str(moved.step("pull 1.0 by tag")["output"]) == str(second["output"])),
        tables=("moved_tag",))
    ledger.demonstrate(
        "digests.pin", source=Source.CHAPTER, section=SECTION_TAGS,
        claim="Pinning by digest runs the exact image that was tested: a digest cannot be reused",
        shown=moved.digest_pinned, unit="1 = the old digest ran the old image",
        measured=f"pulled by the old digest after the tag moved, it printed "
                 f"{moved.step('pull by the old digest')['output']!r} (first build: {first['output']!r})",
        fixed_by=REGISTRY_RULES,
        expected="with both images removed from the engine, pulling the first "
                 "push's digest runs the first build while the tag runs the rebuild",
        tables=("moved_tag",))
    ledger.demonstrate(
        "tags.latest_is_just_a_tag", source=Source.CHAPTER, section=SECTION_TAGS,
        claim="latest names whatever was last pushed as latest, not the newest version",
        shown=latest.stayed, unit="1 = latest stayed until pushed itself",
        measured=f"after :2 was pushed, latest named {latest.names(PUSHED_2)}; after pushing latest itself, "
                 f"{latest.names(MOVED)}",
        fixed_by=REGISTRY_RULES,
        expected="pushing a newer version under another tag leaves latest on the "
                 "older one; it moves only when latest itself is pushed",
        tables=("latest",))
    caught, own = linted.caught, linted.own
    ledger.check(
        "lint.hadolint_catches_mistakes", source=Source.FINDING, section=SECTION_LINT,
        claim="hadolint, run offline, flags common Dockerfile mistakes before a build",
        value=float(sum(caught.values())), unit=f"of {len(caught)} planted mistakes caught",
        measured=f"caught {sum(caught.values())} of {len(caught)} planted mistakes; {len(own)} findings in the "
                 f"series' own {linted.linted} Dockerfiles; missed the same mistake spelled another way: "
                 f"{', '.join(linted.missed_blind_spots) or 'none'}",
        criterion=demonstration("hadolint's rules: each mistake was planted to break one", "hadolint reports the "
                                "rule each planted mistake breaks (untagged base, unpinned apt-get, ADD for a local "
                                "file, cd in RUN, USER root, pip's cache), offline"),
        verdict=verdict(all(caught.values())), tables=("lint",))
    if release.recorded:
        check_release(ledger, release)
    if rollback.recorded:
        check_rollback(ledger, rollback)
    if login.recorded:
        check_login(ledger, login)


def check_release(ledger: ClaimLedger, release: ReleaseResult) -> None:
    r = release.row
    ledger.check(
        "tags.semver_and_sha", source=Source.CHAPTER, section=SECTION_TAGS,
        claim="A tag of semver plus the git SHA is readable by people and leads back to the commit",
        value=float(release.traceable), unit="1 = the pulled image names its commit",
        measured=f"tag {r['tag']}; the pulled image's {REVISION_LABEL} = {r['label']} (the commit: "
                 f"{r['commit']}); git cat-file -t says {r['git_object_type']}",
        criterion="the tag is <version>-<first 7 hex digits of the commit>, the image pulled by that tag is the one "
                  "pushed, and its revision label is the full commit, which git finds in the repository; a label "
                  "lost on the way (push, pull) or naming another commit fails it",
        verdict=verdict(release.traceable), tables=("release",))


def check_rollback(ledger: ClaimLedger, rollback: RollbackResult) -> None:
    new, back = rollback.step(RELEASE_NEW), rollback.step(ROLL_BACK)
    ledger.check(
        "tags.rollback_by_retag", source=Source.CHAPTER, section=SECTION_TAGS,
        claim="With latest deployed, a rollback is a re-tag rather than a deployment of a known version",
        value=float(back["cached_run"] == back["pulled_run"]), unit="1 = the cached latest ran the rolled-back image",
        measured=f"after latest was re-pointed to 1.0.0, a run from this host's cache printed {back['cached_run']!r} "
                 f"and a run after a pull {back['pulled_run']!r}; the container deployed first printed "
                 f"{back['running_container']!r}; by digest: {back['by_digest_run']!r}",
        criterion="re-pointing latest rolls a host back only once it pulls (after the pull it runs 1.0.0), while a "
                  "deployment by digest runs the meant release at every step; a host whose cache still ran 1.1.0 "
                  "after the re-tag is a caveat (the re-tag alone deploys nothing)",
        verdict=verdict(rollback.retag_rolls_back_after_pull and rollback.digest_exact,
                        caveat=rollback.stale_after_rollback),
        caveat="the re-tag reached this host only when it pulled: its cached latest ran 1.1.0 until then, and the "
               "running container kept its image" if rollback.stale_after_rollback else "",
        tables=("rollback",))
    ledger.check(
        "pitfalls.latest_in_production", source=Source.CHAPTER, section=SECTION_PITFALLS,
        claim="latest in production is how one host runs something other than another",
        value=float(rollback.stale_after_release), unit="1 = a cached latest ran another release",
        measured=f"after 1.1.0 became latest, a host with latest cached ran {new['cached_run']!r} and one that "
                 f"pulled ran {new['pulled_run']!r}",
        criterion="after a new release is pushed as latest, a host that has latest cached runs the old release "
                  "while a host that pulls runs the new one",
        verdict=verdict(rollback.stale_after_release and new["pulled_run"] != new["cached_run"]),
        tables=("rollback",))


def check_login(ledger: ClaimLedger, login: LoginResult) -> None:
    ledger.check(
        "registry.login_before_push", source=Source.CHAPTER, section=SECTION_REGISTRIES,
        claim="Publishing to a private registry starts with docker login, the password passed on stdin",
        value=float(login.code(NO_CREDENTIALS)), unit="HTTP status of an upload without credentials",
        measured=f"upload without credentials: {login.code(NO_CREDENTIALS)}; push not logged in: exit "
                 f"{login.code(PUSH_ANONYMOUS)}; login with a wrong password: exit {login.code(LOGIN_WRONG)}; "
                 f"login --password-stdin: exit {login.code(LOGIN)}; push logged in: exit "
                 f"{login.code(PUSH_LOGGED_IN)}",
        criterion="against a registry with a password file, an upload without credentials answers 401 and the push "
                  "fails, a wrong password is refused, and after login --password-stdin the same push succeeds",
        verdict=verdict(login.refused_then_accepted), tables=("login",))
    ledger.check(
        "login.password_in_config", source=Source.FINDING, section=SECTION_LOGIN,
        claim="Without a credential helper, docker login leaves the password in ~/.docker/config.json, only "
              "base64-encoded",
        value=float(login.password_on_disk), unit="1 = user:password decoded from the file",
        measured=login.detail(STORED),
        criterion="with no credsStore or credHelpers configured, the config.json entry for the registry decodes "
                  "(base64) to exactly the user and password typed",
        verdict=verdict(login.password_on_disk), tables=("login",))
