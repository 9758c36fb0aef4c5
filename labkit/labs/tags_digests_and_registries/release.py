"""Sections 5 and 6: a release tag of semver and the git commit, read back from the pulled image's label; rolling
back by re-pointing `latest` against deploying by digest, on a host whose `latest` is cached."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, registry, undo
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from labkit.labs.tags_digests_and_registries.declaration import (
    LIMITS,
    REVISION_LABEL,
    SLEEP_ARGV,
    app_registry,
    build_app,
    digest_of,
    forget,
    say,
    write_app,
)

VERSION = "1.4.2"  # the chapter's example version
SHORT_SHA = 7  # hex digits of the commit in the tag, as `git rev-parse --short` and the chapter's abc1234
# The git identity of the throwaway repository's commit (git refuses to commit without one).
GIT_IDENTITY = ["-c", "user.name=labkit", "-c", "user.email=labkit@localhost", "-c", "commit.gpgsign=false"]


def _git(repository: Path, *argv: str) -> str:
    return run(["git", *GIT_IDENTITY, "-C", str(repository), *argv], 60).stdout.strip()


@dataclass(frozen=True)
class ReleaseResult:
    """`release`: version, commit (the full SHA git made), tag (``<version>-<short SHA>``), pushed_digest,
    pulled_digest (the pulled image's repo digest), label (its org.opencontainers.image.revision), git_object_type
    (what ``git cat-file -t <label>`` says in the repository: "commit" when the label names one). Empty when
    replaying a recording made without it."""

    release: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.release.empty

    @property
    def row(self) -> pd.Series:
        return self.release.iloc[0]

    @property
    def traceable(self) -> bool:
        """The tag is version + the commit's short SHA, the pulled image is the pushed one, and its label is the
        full commit, which git finds in the repository."""
        r = self.row
        return (str(r["tag"]) == f"{r['version']}-{str(r['commit'])[:SHORT_SHA]}"
                and str(r["pulled_digest"]) == str(r["pushed_digest"])
                and str(r["label"]) == str(r["commit"]) and str(r["git_object_type"]) == "commit")

    def conclusion(self) -> str:
        if not self.recorded:
            return "*Not in the recording this notebook replays (it predates this section): a live run measures it.*"
        r = self.row
        return (f"**What we measured.** git committed the app as `{r['commit']}`; the image was tagged "
                f"**`app:{r['tag']}`** and pushed as `{str(r['pushed_digest'])[:19]}…`. With the image removed from "
                f"the engine, `docker pull app:{r['tag']}` brought back `{str(r['pulled_digest'])[:19]}…` "
                f"({'the same manifest' if r['pulled_digest'] == r['pushed_digest'] else 'ANOTHER MANIFEST'}), "
                f"whose `{REVISION_LABEL}` label reads `{r['label']}` — "
                + ("the commit itself, which `git cat-file` finds in the repository (a "
                   f"{r['git_object_type']}). The short SHA in the tag says where to look; the label gives the "
                   "full commit, from the image alone, wherever it was pulled."
                   if self.traceable else f"NOT the commit (git says: {r['git_object_type']})."))


def run_release(lab: LabSession, port: int | None = None) -> ReleaseResult:
    """Commit the app in a fresh git repository, build it with the commit in its revision label, tag it
    ``1.4.2-<short SHA>``, push it, remove it from the engine, pull the tag and read the label back."""
    registry.validate_port(port)
    if (missing := lab.unrecorded("release")) is not None:
        return ReleaseResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        with undo.temporary_folder("labkit-release-") as folder, app_registry(lab, port) as at:
            reg, scope, base, repository = at.reg, at.scope, at.base, at.repository
            source = Path(folder)
            _git(source, "init", "--quiet")
            references: list[str] = []
            try:
                write_app(source, f"app {VERSION}")
                _git(source, "add", "Dockerfile", "message.txt")
                _git(source, "commit", "--quiet", "-m", f"app {VERSION}")
                commit = _git(source, "rev-parse", "HEAD")
                tag = f"{VERSION}-{commit[:SHORT_SHA]}"
                reference = reg.reference(repository, tag)
                references.append(reference)
                built = build_app(scope, base, f"app {VERSION}", reference, context=source, revision=commit)
                run([docker_cli(), "push", reference], 300)
                pushed = digest_of(reg, repository, tag)
                forget(client, reference, built.image_id)
                run([docker_cli(), "pull", reference], 300)
                pulled = client.images.get(reference)
                label = str((pulled.attrs["Config"].get("Labels") or {}).get(REVISION_LABEL, ""))
                object_type = run(["git", "-C", str(source), "cat-file", "-t", label or "0" * 40], 30,
                                  check=False)
                pulled_digests = [d.split("@", 1)[1] for d in pulled.attrs.get("RepoDigests") or []]
            finally:
                forget(client, *references)
        return pd.DataFrame([{"version": VERSION, "commit": commit, "tag": tag, "pushed_digest": pushed,
                              "pulled_digest": ";".join(sorted(pulled_digests)), "label": label,
                              "git_object_type": object_type.stdout.strip() or "not an object here"}])

    return ReleaseResult(lab.measure("release", experiment, port=port))


# ---------------------------------------------------------------- 6. rolling back


OLD, NEW = "app 1.0.0", "app 1.1.0"
RELEASE_OLD, RELEASE_NEW, ROLL_BACK = ("release 1.0.0 as latest", "release 1.1.0 as latest",
                                       "roll back: latest re-pointed to 1.0.0")


@dataclass(frozen=True)
class RollbackResult:
    """`rollback`, one row per step of a release history: registry_latest (what the registry's ``latest`` names
    after the step), cached_run (what ``docker run app:latest`` printed on this host before it pulled), pulled_run
    (after ``docker pull app:latest``), running_container (what the container started from ``latest`` at the
    first step holds now), by_digest_run (``docker run app@<the digest that step meant to deploy>``). Empty when
    replaying a recording made without it."""

    rollback: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.rollback.empty

    def step(self, name: str) -> pd.Series:
        return self.rollback.set_index("step").loc[name]

    @property
    def stale_after_release(self) -> bool:
        """After 1.1.0 became latest in the registry, the host's cached latest still ran 1.0.0."""
        s = self.step(RELEASE_NEW)
        return str(s["cached_run"]) == OLD and str(s["registry_latest"]) == NEW

    @property
    def stale_after_rollback(self) -> bool:
        """After latest was re-pointed to 1.0.0, the host's cached latest still ran 1.1.0."""
        s = self.step(ROLL_BACK)
        return str(s["cached_run"]) == NEW and str(s["registry_latest"]) == OLD

    @property
    def retag_rolls_back_after_pull(self) -> bool:
        return str(self.step(ROLL_BACK)["pulled_run"]) == OLD

    @property
    def digest_exact(self) -> bool:
        """Every step's digest ran the release that step meant, whatever the host had cached."""
        meant = {RELEASE_OLD: OLD, RELEASE_NEW: NEW, ROLL_BACK: OLD}
        return all(str(self.step(step)["by_digest_run"]) == version for step, version in meant.items())

    @property
    def running_untouched(self) -> bool:
        return bool((self.rollback["running_container"] == OLD).all())

    def conclusion(self) -> str:
        if not self.recorded:
            return "*Not in the recording this notebook replays (it predates this section): a live run measures it.*"
        new, back = self.step(RELEASE_NEW), self.step(ROLL_BACK)
        still = "still " if self.stale_after_release else ""
        went_on = "went on printing" if self.stale_after_rollback else "printed"
        return (f"**What we measured.** After 1.1.0 became `latest` in the registry, `docker run app:latest` on "
                f"this host {still}printed **{new['cached_run']!r}** from its cache, and after `docker pull` "
                f"{new['pulled_run']!r}. Rolling back by re-pointing `latest` to 1.0.0 changed the registry at once; "
                f"the host's cached `latest` {went_on} **{back['cached_run']!r}** until it pulled again "
                f"({back['pulled_run']!r} after). The container started at the first "
                f"release printed {', '.join(repr(v) for v in dict.fromkeys(self.rollback['running_container']))} "
                + ("throughout: moving a tag did not touch the running container, so a rollback by tag needs a pull "
                   "and a restart on every host, and each host's cache decides what it runs until then. "
                   if self.running_untouched else "— THE RUNNING CONTAINER CHANGED WITH THE TAG. ")
                + "Deploying by digest ran "
                + ("exactly the release each step meant, every time, whatever was cached."
                   if self.digest_exact else "NOT always the release the step meant."))


def run_rollback(lab: LabSession, port: int | None = None) -> RollbackResult:
    """Release 1.0.0 and then 1.1.0 as ``latest`` and roll back by re-pointing ``latest`` to 1.0.0 in the
    registry (as a CI job elsewhere would); after each step, run ``latest`` on this host from its cache and after
    a pull, read the container started at the first release, and run the step's release by digest."""
    registry.validate_port(port)
    if (missing := lab.unrecorded("rollback")) is not None:
        return RollbackResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows = []
        with app_registry(lab, port) as at:
            reg, scope, base, repository = at.reg, at.scope, at.base, at.repository
            latest = reg.reference(repository, "latest")
            references = [latest]
            try:
                digests = {}
                for version in (OLD, NEW):
                    reference = reg.reference(repository, version.split()[1])
                    references.append(reference)
                    build_app(scope, base, version, reference)
                    run([docker_cli(), "push", reference], 300)
                    digests[version] = digest_of(reg, repository, version.split()[1])
                forget(client, *references)  # this host has pulled nothing yet
                with_digest = {v: f"{reg.address}/{repository}@{d}" for v, d in digests.items()}
                references += with_digest.values()
                with ExitStack() as deployment:  # the container deployed at the first step, removed at the end
                    deployed = None
                    for step, meant in ((RELEASE_OLD, OLD), (RELEASE_NEW, NEW), (ROLL_BACK, OLD)):
                        reg.point_tag(repository, "latest", digests[meant])
                        cached = say(scope, latest) if client.images.list(name=latest) else "(nothing cached)"
                        run([docker_cli(), "pull", latest], 300)
                        pulled = say(scope, latest)
                        if deployed is None:
                            deployed = deployment.enter_context(containers.running(
                                client, scope, latest, SLEEP_ARGV, stem="deployed", limits=LIMITS))
                        run([docker_cli(), "pull", with_digest[meant]], 300)
                        rows.append({"step": step, "registry_latest": meant, "cached_run": cached,
                                     "pulled_run": pulled,
                                     "running_container": containers.exec_text(deployed, ["cat", "/message.txt"]),
                                     "by_digest_run": say(scope, with_digest[meant])})
            finally:
                forget(client, *references)
        return pd.DataFrame(rows)

    return RollbackResult(lab.measure("rollback", experiment, port=port))
