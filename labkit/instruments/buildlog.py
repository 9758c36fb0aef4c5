"""Cache-hit accounting from a build's own log: which Dockerfile steps the builder took from its cache.

Pure parsers, tested on recorded logs (``tests/fixtures/buildlog/``). Two builders write two formats:

- BuildKit with ``--progress=plain`` numbers its vertices (``#7 [3/5] COPY . .``) and ends each one with
  ``#7 CACHED`` or ``#7 DONE 0.4s``; instructions that only change the image's config (ENV, CMD, LABEL…)
  are no vertex at all.
- The legacy builder prints ``Step 3/5 : COPY . .`` and, for a hit, `` ---> Using cache``; every instruction
  is a step, and the log carries no per-step time.

The docker 20.10 client has no ``--progress=rawjson`` (that needs buildx ≥ 0.12, absent here), so only these
two formats are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pandas as pd

BUILDKIT = "buildkit"
LEGACY = "legacy"
BUILDERS = (BUILDKIT, LEGACY)

_VERTEX = re.compile(r"^#(?P<vertex>\d+) (?P<text>.*)$")
_STEP_NAME = re.compile(r"^\[(?:(?P<stage>\S+) )?(?P<index>\d+)/(?P<total>\d+)\] (?P<instruction>.*)$")
_DONE = re.compile(r"^DONE (?P<seconds>\d+(?:\.\d+)?)s$")
_BUILDKIT_CONTEXT = re.compile(
    r"^transferring context: (?P<size>[\d.]+\s*[kMGT]?i?B)(?: (?P<seconds>[\d.]+)s)? done$")
_LEGACY_STEP = re.compile(r"^Step (?P<index>\d+)/(?P<total>\d+) : (?P<instruction>.*)$")
_LEGACY_CONTEXT = re.compile(r"Sending build context to Docker daemon\s+(?P<size>[\d.]+\s*[kMGT]?i?B)")
_SIZE = re.compile(r"^(?P<number>[\d.]+)\s*(?P<unit>[kMGT]?)(?P<binary>i?)B$")
_UNITS = {"": 0, "k": 1, "M": 2, "G": 3, "T": 4}


@dataclass(frozen=True)
class Step:
    """One Dockerfile instruction as a builder reported it.

    `stage` is the build stage's name ('' for the only or last unnamed stage); `index`/`total` are the builder's
    own numbering; `base` marks a FROM (taken from the engine's images, neither cached nor executed work);
    `seconds` is BuildKit's DONE time (None when cached, and always None for the legacy builder).
    """

    stage: str
    index: int
    total: int
    instruction: str
    base: bool
    cached: bool
    seconds: float | None

    @property
    def status(self) -> str:
        return "base" if self.base else "cached" if self.cached else "executed"


@dataclass(frozen=True)
class BuildLog:
    """What one build's log says: its steps in order, the build context it sent (bytes; None if not said) and,
    for BuildKit, how long sending it took (s; a transfer under 0.05 s is printed without a time: 0.0)."""

    builder: str
    steps: tuple[Step, ...]
    context_bytes: int | None
    context_s: float | None = None

    @property
    def cached(self) -> int:
        """Steps taken from the cache (FROM not counted)."""
        return sum(1 for s in self.steps if not s.base and s.cached)

    @property
    def executed(self) -> int:
        """Steps the builder ran or copied anew (FROM not counted)."""
        return sum(1 for s in self.steps if not s.base and not s.cached)

    @property
    def first_executed(self) -> str | None:
        """The first instruction that missed the cache: where the cache was invalidated."""
        return next((s.instruction for s in self.steps if not s.base and not s.cached), None)

    def without_labels(self, labels: Mapping[str, str]) -> BuildLog:
        """This log without the ``LABEL k=v`` steps the legacy builder makes of each ``--label k=v`` it was given:
        they are the command line's, not the Dockerfile's."""
        added = {f"LABEL {key}={value}" for key, value in labels.items()}
        return replace(self, steps=tuple(s for s in self.steps if s.instruction not in added))

    def frame(self) -> pd.DataFrame:
        """One row per step: builder, stage, index, total, instruction, status, seconds."""
        return pd.DataFrame([{"builder": self.builder, "stage": s.stage, "index": s.index, "total": s.total,
                              "instruction": s.instruction, "status": s.status, "seconds": s.seconds}
                             for s in self.steps],
                            columns=["builder", "stage", "index", "total", "instruction", "status", "seconds"])


def size_bytes(text: str) -> int:
    """``'1.23MB'`` → 1230000: go-units' human sizes are decimal (kB = 1000 B); ``KiB``-style ones binary."""
    found = _SIZE.match(text.replace(" ", "").replace("K", "k"))
    if not found:
        raise ValueError(f"not a size: {text!r}")
    base = 1024 if found["binary"] else 1000
    return round(float(found["number"]) * base ** _UNITS[found["unit"]])


def parse(text: str) -> BuildLog:
    """Read either builder's log, telling them apart by their step markers."""
    if any(_LEGACY_STEP.match(line) for line in text.splitlines()):
        return parse_legacy(text)
    return parse_buildkit(text)


def parse_buildkit(text: str) -> BuildLog:
    """BuildKit's ``--progress=plain`` log (stderr of ``docker build``) → its Dockerfile steps."""
    names: dict[int, str] = {}
    cached: set[int] = set()
    done: dict[int, float] = {}
    context: int | None = None
    context_s: float | None = None
    for line in text.splitlines():
        found = _VERTEX.match(line.rstrip())
        if not found:
            continue
        vertex, body = int(found["vertex"]), found["text"]
        if vertex not in names:
            names[vertex] = body  # a vertex's first line is its name
            continue
        if body == "CACHED":
            cached.add(vertex)
        elif finished := _DONE.match(body):
            done[vertex] = float(finished["seconds"])
        elif (sent := _BUILDKIT_CONTEXT.match(body)) and names[vertex] == "[internal] load build context":
            context = size_bytes(sent["size"])
            context_s = float(sent["seconds"] or 0.0)
    steps = []
    for vertex, name in names.items():
        step = _STEP_NAME.match(name)
        if not step:
            continue  # [internal] vertices and the export; steps stay in the order the builder began them
        hit = vertex in cached
        steps.append(Step(stage=step["stage"] or "", index=int(step["index"]), total=int(step["total"]),
                          instruction=step["instruction"], base=step["instruction"].startswith("FROM "),
                          cached=hit, seconds=None if hit else done.get(vertex)))
    return BuildLog(BUILDKIT, tuple(steps), context, context_s)


def parse_legacy(text: str) -> BuildLog:
    """The legacy builder's log (stdout of ``DOCKER_BUILDKIT=0 docker build``) → its Dockerfile steps.

    Multi-stage builds number their steps across all stages; each FROM opens a stage (``AS name`` names it).
    """
    steps: list[Step] = []
    context: int | None = None
    stage = ""
    for line in text.splitlines():
        line = line.rstrip()
        if sent := _LEGACY_CONTEXT.search(line):
            context = size_bytes(sent["size"])  # the last report is the whole context
        elif step := _LEGACY_STEP.match(line):
            instruction = step["instruction"]
            base = instruction.upper().startswith("FROM ")
            if base:
                words = instruction.split()
                stage = words[3] if len(words) >= 4 and words[2].upper() == "AS" else ""
            steps.append(Step(stage, int(step["index"]), int(step["total"]), instruction, base, False, None))
        elif line == " ---> Using cache" and steps:
            last = steps[-1]
            steps[-1] = Step(last.stage, last.index, last.total, last.instruction, last.base, True, None)
    return BuildLog(LEGACY, tuple(steps), context)
