"""Notebook 03, the build cache and COPY order: a real Python app rebuilt over a history of edits.

Two Dockerfiles build the same app: A copies the dependency manifest and installs the dependencies before it
copies the source; B copies everything first. Each edit of a scripted history is applied to both and both are
rebuilt, with BuildKit and with the legacy builder; each build's own log says which steps came from the cache.
A second experiment sends the build context with and without a ``.dockerignore`` and scans the image's layer
tars for a fake secret ``.env``.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit import assets
from labkit.core.claims import CLAIM_COLUMNS, CLAIMS_TABLE, ClaimLedger, Source, demonstration, verdict
from labkit.core.lab import ENGINE, Lab, Requirement
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, images, layers, measure, space
from labkit.instruments import wheelhouse as wheelhouse_cache
from labkit.instruments.buildlog import BUILDERS, BUILDKIT, LEGACY
from labkit.instruments.engine import Scope

STEM = "03-build-cache"
BASE = "python-runtime"
SECTION = "The Image — Layered, Cacheable, Reproducible"  # the chapter's section these claims come from

# The app (labkit/assets/greeter/): its sources, every dependency pinned in requirements.txt, and the pins the
# dependency edit adds. Its wheels are downloaded once on the host and copied into the build context.
APP_FILES: dict[str, str] = assets.tree("greeter/source")
DEPENDENCIES = assets.pins("greeter/source/requirements.txt")
ADDED_DEPENDENCIES = assets.pins("greeter/added-requirements.txt")

# A: the manifest and the wheels first, the dependencies installed, then the source. B: everything first.
DOCKERFILES = {
    "A": assets.text("greeter/Dockerfile.dependencies-first"),
    "B": assets.text("greeter/Dockerfile.everything-first"),
}
DOCKERFILE_MEANING = {"A": "A: dependencies first", "B": "B: everything first"}
# The .dockerignore experiment copies the context and nothing else, so its build time is the context's cost.
CONTEXT_DOCKERFILE = assets.text("greeter/Dockerfile.context-only")
IGNORE_FILE = ".env\nlocal-data/\n.git/\n__pycache__/\n"
SECRET_FILE = ".env"
INSTALL_MARK = "pip install"  # the install step, found by its instruction text in either builder's log

SOURCE, DEPENDENCY, DOCS, NO_CHANGE = "source", "dependency", "docs", "no change"
EDIT_KINDS = (SOURCE, DEPENDENCY, DOCS, NO_CHANGE)
CHANGING = (SOURCE, DEPENDENCY, DOCS)


@dataclass(frozen=True)
class Edit:
    """One step of the scripted history: in file `path`, replace `old` (which must occur exactly once) by `new`.
    A `no change` edit names no file."""

    name: str
    kind: str
    path: str = ""
    old: str = ""
    new: str = ""


HISTORY = (
    Edit("change the greeting", SOURCE, "app/greeting.py", 'GREETING = "Hello"', 'GREETING = "Hello there"'),
    Edit("add python-dateutil", DEPENDENCY, "requirements.txt", "blinker==1.9.0\n",
         "blinker==1.9.0\n" + "".join(f"{pin}\n" for pin in ADDED_DEPENDENCIES)),
    Edit("README: how to check", DOCS, "README.md", "    python -m app\n",
         "    python -m app\n\n`python -m app --check` answers one request and exits.\n"),
    Edit("rebuild, nothing changed", NO_CHANGE),
    Edit("add a /health route", SOURCE, "app/main.py", '    return greet("container")\n',
         '    return greet("container")\n\n\n@app.get("/health")\ndef health() -> dict[str, str]:\n'
         '    return {"status": "ok"}\n'),
    Edit("report the start time with dateutil", SOURCE, "app/main.py", "from flask import Flask\n",
         "from datetime import datetime, timezone\n\nfrom dateutil.relativedelta import relativedelta\n"
         "from flask import Flask\n\nSTARTED = datetime.now(timezone.utc)\n"),
    Edit("fix a docstring", SOURCE, "app/main.py", '"""The front page."""', '"""The front page: a greeting."""'),
    Edit("README: changelog", DOCS, "README.md", "## Run\n", "## Changes\n\n- a /health route\n\n## Run\n"),
    Edit("greet by name", SOURCE, "app/greeting.py", 'def greet(name: str) -> str:',
         'def greet(name: str = "world") -> str:'),
    Edit("uptime in /health", SOURCE, "app/main.py", '    return {"status": "ok"}\n',
         '    uptime = relativedelta(datetime.now(timezone.utc), STARTED)\n'
         '    return {"status": "ok", "uptime_s": str(uptime.seconds)}\n'),
    Edit("rename the app object", SOURCE, "app/__main__.py", '"--check" in sys.argv', '"--check" in sys.argv[1:]'),
)


def validate_history(history: Sequence[Edit], files: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The app's files after each edit (index 0: before any), or BadParameter naming the first edit that cannot
    apply — before any build starts."""
    if not history:
        raise BadParameter("history is empty: nothing to rebuild.", "Pass at least one Edit, e.g. HISTORY[:4].")
    state = dict(APP_FILES if files is None else files)
    snapshots = [dict(state)]
    for number, edit in enumerate(history, 1):
        if edit.kind not in EDIT_KINDS:
            raise BadParameter(f"edit {number} ({edit.name!r}) has kind={edit.kind!r}.", f"Use one of {EDIT_KINDS}.")
        if edit.kind != NO_CHANGE:
            if edit.path not in state:
                raise BadParameter(f"edit {number} ({edit.name!r}) names {edit.path!r}, which the app does not have.",
                                   f"Name one of its files: {sorted(state)}.")
            found = state[edit.path].count(edit.old) if edit.old else 0
            if found != 1:
                raise BadParameter(f"edit {number} ({edit.name!r}): the text to replace occurs {found} times in "
                                   f"{edit.path!r} at that point of the history.",
                                   "Give `old` text that occurs exactly once after the edits before it.")
            state[edit.path] = state[edit.path].replace(edit.old, edit.new)
        snapshots.append(dict(state))
    return snapshots


def history_table(history: Sequence[Edit]) -> pd.DataFrame:
    """The edits as the notebook lists them: edit_index (1-based), edit, kind, file."""
    return pd.DataFrame([{"edit_index": i, "edit": e.name, "kind": e.kind, "file": e.path or "(none)"}
                         for i, e in enumerate(history, 1)]).set_index("edit_index")


def validate_builders(chosen: Sequence[str]) -> None:
    if not chosen:
        raise BadParameter("builders is empty.", f"Choose from {list(BUILDERS)}.")
    for builder in chosen:
        builds.validate_builder(builder)


# ---------------------------------------------------------------- assets


def wheelhouse() -> Path:
    """The app's wheels (every pin of both dependency sets), downloaded once on the host with pip and cached."""
    return wheelhouse_cache.download(assets.greeter_wheel_pins(), assets.GREETER_WHEEL_PLATFORM)


def prepare(client: docker.DockerClient) -> list[str]:
    """The app's wheelhouse (the base is made by setup)."""
    return [f"wheelhouse: {wheelhouse()}"]


LAB = Lab(
    stem=STEM,
    topic="The build cache and COPY order",
    requirements=(ENGINE, Requirement("program", "debootstrap", "the python-runtime base")),
    bases=(BASE,),
    tables={
        "rebuilds": ("builder", "dockerfile", "edit_index", "edit", "kind", "wall_s", "cached", "executed",
                     "install_ran", "first_executed", "context_bytes", "image_bytes"),
        "steps": ("builder", "dockerfile", "edit_index", "stage", "index", "total", "instruction", "status",
                  "seconds"),
        "context": ("builder", "dockerignore", "repeat", "context_bytes", "context_s", "wall_s", "image_bytes",
                    "secret_found", "secret_layer", "secret_path"),
        CLAIMS_TABLE: CLAIM_COLUMNS,
    },
    prepare=prepare,
    headline="cache.thirty_seconds_to_five_minutes",
)


def _write_context(folder: Path, files: dict[str, str], wheels: Path, dockerfile: str) -> None:
    """The app's files, its wheels under wheels/ and its Dockerfile, in `folder`: only what differs is written,
    as an editor would (a file's modification time changes only when it is edited)."""
    if not (folder / "wheels").exists():
        shutil.copytree(wheels, folder / "wheels", ignore=shutil.ignore_patterns(wheelhouse_cache.COMPLETE))
    wanted = {**files, "Dockerfile": dockerfile, ".dockerignore": "Dockerfile\n.dockerignore\n"}
    for name, text in wanted.items():
        target = folder / name
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def _isolated_base(client: docker.DockerClient, scope: Scope, folder: Path) -> str:
    """The python-runtime base plus one file holding this experiment's scope id, so no build here can reuse a layer
    cached by an earlier run: BuildKit's cache outlives the images we remove, and its keys start from the base's
    layers (a label alone would not do: it changes the image's config, not its layers)."""
    base = images.require_base(client, BASE).tag
    folder.mkdir()
    (folder / "Dockerfile").write_text(f"FROM {base}\nRUN echo {scope.scope_id} > /etc/labkit-cache-boundary\n")
    tag = f"labkit-exp/{STEM}-base:{scope.scope_id}"
    builds.build(folder, tag, scope, builder=LEGACY)
    return tag


# ---------------------------------------------------------------- rebuilds over a history


@dataclass(frozen=True)
class RebuildResult:
    """`rebuilds`: one row per build (edit_index 0 is the cold build, with --no-cache): wall_s (s), cached and
    executed steps (FROM not counted), whether the dependency install ran, the first step that missed the cache,
    the build context (bytes) and the image size (bytes). `steps`: one row per step of each build."""

    rebuilds: pd.DataFrame
    steps: pd.DataFrame

    @property
    def builders(self) -> list[str]:
        return list(dict.fromkeys(self.rebuilds["builder"]))

    @property
    def edits(self) -> pd.DataFrame:
        """The rebuilds after an edit (the cold builds left out)."""
        return self.rebuilds[self.rebuilds["edit_index"] > 0]

    def _of(self, builder: str, dockerfile: str, kind: str | None = None) -> pd.DataFrame:
        rows = self.edits[(self.edits["builder"] == builder) & (self.edits["dockerfile"] == dockerfile)]
        return rows if kind is None else rows[rows["kind"] == kind]

    def total_s(self, builder: str, dockerfile: str) -> float:
        """Seconds spent rebuilding over the whole history (cold build not counted)."""
        return float(self._of(builder, dockerfile)["wall_s"].sum())

    def ratio(self, builder: str) -> float:
        """B's total rebuild time over A's."""
        return self.total_s(builder, "B") / self.total_s(builder, "A")

    def median_s(self, builder: str, dockerfile: str, kind: str) -> float:
        return float(self._of(builder, dockerfile, kind)["wall_s"].median())

    def cold_s(self, builder: str, dockerfile: str) -> float:
        rows = self.rebuilds[(self.rebuilds["builder"] == builder) & (self.rebuilds["dockerfile"] == dockerfile)
                             & (self.rebuilds["edit_index"] == 0)]
        return float(rows["wall_s"].iloc[0])

    def executed(self, builder: str, dockerfile: str, kind: str) -> list[int]:
        return [int(n) for n in self._of(builder, dockerfile, kind)["executed"]]

    def install_reran(self, builder: str, dockerfile: str, kinds: Sequence[str] = CHANGING) -> tuple[int, int]:
        """(edits whose rebuild re-ran the dependency install, edits) among the edits of `kinds`."""
        rows = self.edits[(self.edits["builder"] == builder) & (self.edits["dockerfile"] == dockerfile)
                          & self.edits["kind"].isin(kinds)]
        return int(rows["install_ran"].sum()), len(rows)

    def per_edit(self, builder: str) -> pd.DataFrame:
        """Rebuild wall time (s) per edit (rows, labelled ``<index> <kind>``) and Dockerfile (columns)."""
        rows = self.edits[self.edits["builder"] == builder]
        table = rows.pivot_table(index=["edit_index", "kind"], columns="dockerfile", values="wall_s")
        table.index = [f"{index} {kind}" for index, kind in table.index]
        return table.rename(columns=DOCKERFILE_MEANING)

    def counts(self) -> pd.DataFrame:
        """Steps executed per build (edit rows × builder and Dockerfile columns), as the builds' logs report them."""
        return self.rebuilds.pivot_table(index=["edit_index", "edit", "kind"], columns=["builder", "dockerfile"],
                                         values="executed", aggfunc="first")

    def conclusion(self) -> str:
        parts = []
        for builder in self.builders:
            a_src, b_src = self.median_s(builder, "A", SOURCE), self.median_s(builder, "B", SOURCE)
            reran, changing = self.install_reran(builder, "B")
            parts.append(
                f"With **{builder}**, a source-only edit rebuilt in a median **{a_src:.1f} s** with A and "
                f"**{b_src:.1f} s** with B ({b_src / a_src:.1f}×); over the whole history B spent "
                f"**{self.total_s(builder, 'B'):.0f} s** against A's **{self.total_s(builder, 'A'):.0f} s** "
                f"(**{self.ratio(builder):.1f}×**). B re-ran the dependency install on {reran} of {changing} edits "
                f"that changed a file; A on {self.install_reran(builder, 'A')[0]}. A rebuild with nothing changed "
                f"took {self.median_s(builder, 'A', NO_CHANGE):.2f} s (A) and "
                f"{self.median_s(builder, 'B', NO_CHANGE):.2f} s (B): the floor of a build that is all cache hits.")
        return "**What we measured.** " + " ".join(parts)


def _build_row(builder: str, dockerfile: str, index: int, edit: Edit | None, made: builds.Build,
               image_bytes: int) -> dict[str, Any]:
    return {"builder": builder, "dockerfile": dockerfile, "edit_index": index,
            "edit": edit.name if edit else "cold build (--no-cache)", "kind": edit.kind if edit else "cold",
            "wall_s": made.wall_s, "cached": made.log.cached, "executed": made.log.executed,
            "install_ran": any(INSTALL_MARK in s.instruction and not s.cached for s in made.log.steps),
            "first_executed": made.log.first_executed or "", "context_bytes": made.log.context_bytes,
            "image_bytes": image_bytes}


def run_rebuilds(lab: LabSession, history: Sequence[Edit] = HISTORY,
                 builders: Sequence[str] = BUILDERS) -> RebuildResult:
    """Build A and B cold, then apply each edit of `history` to both and rebuild both, with each builder.

    Within an edit A and B build in turns (A first on odd edits), so drift on the machine hits both alike."""
    snapshots = validate_history(history)
    validate_builders(builders)

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        wheels = wheelhouse()
        rows: list[dict[str, Any]] = []
        step_rows: list[pd.DataFrame] = []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-03-") as scratch:
            base = _isolated_base(client, scope, Path(scratch) / "base")
            for builder in builders:
                folders = {name: Path(scratch) / f"{builder}-{name}" for name in DOCKERFILES}
                for index, files in enumerate(snapshots):
                    order = list(DOCKERFILES) if index % 2 else list(reversed(DOCKERFILES))
                    for name in order:
                        folder = folders[name]
                        folder.mkdir(exist_ok=True)
                        _write_context(folder, files, wheels, DOCKERFILES[name].format(base=base))
                        tag = f"labkit-exp/{STEM}-{name.lower()}:{builder}-{index}-{scope.scope_id}"
                        made = builds.build(folder, tag, scope, builder=builder, no_cache=index == 0)
                        size = int(client.images.get(made.image_id).attrs["Size"])
                        edit = history[index - 1] if index else None
                        rows.append(_build_row(builder, name, index, edit, made, size))
                        step_rows.append(made.log.frame().drop(columns="builder").assign(
                            builder=builder, dockerfile=name, edit_index=index))
        steps = pd.concat(step_rows, ignore_index=True)[list(LAB.tables["steps"])]
        return {"rebuilds": pd.DataFrame(rows, columns=list(LAB.tables["rebuilds"])), "steps": steps}

    tables = lab.record("rebuilds", ("rebuilds", "steps"), experiment, edits=[e.name for e in history],
                        builders=list(builders), base=BASE)
    return RebuildResult(tables["rebuilds"], tables["steps"])


# ---------------------------------------------------------------- .dockerignore and a secret


@dataclass(frozen=True)
class ContextResult:
    """`context`: one row per build of a context (``COPY . .`` only) holding a fake secret `.env` and `local-data/`,
    without and with a `.dockerignore`: context bytes sent, BuildKit's transfer time (s), build wall time (s),
    image size (bytes), and whether the secret was found in a layer tar (and which, and where)."""

    context: pd.DataFrame

    def median(self, column: str, builder: str, ignored: bool) -> float:
        rows = self.context[(self.context["builder"] == builder) & (self.context["dockerignore"] == ignored)]
        return float(rows[column].median())

    def secret_found(self, ignored: bool) -> bool:
        """Found in every build of that variant (True), or in none (False); mixed results raise."""
        found = set(self.context.loc[self.context["dockerignore"] == ignored, "secret_found"].astype(bool))
        if len(found) != 1:
            raise ValueError(f"the secret was found in some builds with dockerignore={ignored} and not in others")
        return found.pop()

    def secret_where(self) -> str:
        rows = self.context[self.context["secret_found"].astype(bool)]
        return f"layer {int(rows['secret_layer'].iloc[0])} at /{rows['secret_path'].iloc[0]}" if len(rows) else ""

    def summary(self) -> pd.DataFrame:
        """Per builder and variant: median context (MB), transfer (s), build (s), image (MB); secret found in all."""
        grouped = self.context.groupby(["builder", "dockerignore"])
        return pd.DataFrame({"context_mb": grouped["context_bytes"].median() / 1e6,
                             "context_s": grouped["context_s"].median(), "wall_s": grouped["wall_s"].median(),
                             "image_mb": grouped["image_bytes"].median() / 1e6,
                             "secret_found": grouped["secret_found"].all(), "builds": grouped.size()})

    def conclusion(self) -> str:
        parts = []
        for builder in dict.fromkeys(self.context["builder"]):
            without, with_ = (self.median("context_bytes", builder, flag) for flag in (False, True))
            wall_without, wall_with = (self.median("wall_s", builder, flag) for flag in (False, True))
            parts.append(f"{builder} sent **{without / 1e6:.1f} MB** of context without it and "
                         f"**{with_ / 1e6:.3f} MB** with it, and built in {wall_without:.1f} s against "
                         f"{wall_with:.1f} s")
        found = self.secret_found(False)
        return ("**What we measured.** " + "; ".join(parts) + ". Without `.dockerignore` the fake secret "
                + (f"**is in the image**: {self.secret_where()}, readable by anyone who pulls it"
                   if found else "was not found in any layer") + "; with it, it is "
                + ("absent from every layer." if not self.secret_found(True) else "**still found**."))


def _local_data_copies_in_engine(repeats: int, builders: Sequence[str]) -> int:
    """The most copies of the local data the engine holds at once in :func:`run_context`: every build without a
    .dockerignore keeps one in its image until the scope ends and, with BuildKit, one more in BuildKit's cache of
    the context it received (each build's folder is new, so none is reused); on top of those, while a legacy
    build's ``COPY`` is committed, the context the daemon unpacked and the step container's layer (2), else the
    copy ``docker save`` stages (1)."""
    kept = repeats * sum(2 if builder == BUILDKIT else 1 for builder in builders)
    return kept + (2 if LEGACY in builders else 1)


def run_context(lab: LabSession, local_data_mib: int = 32, repeats: int = 3,
                builders: Sequence[str] = BUILDERS) -> ContextResult:
    """Build the app's context with `local_data_mib` MiB of incompressible local data and a fake `.env` in it, with
    ``COPY . .`` only, without and with a `.dockerignore`, `repeats` times per builder (interleaved); each image's
    layer tars are scanned for `.env`.

    Every build starts from a fresh copy of the context, so BuildKit's context cache cannot shorten a transfer."""
    measure.validate_repeats(repeats)
    validate_builders(builders)
    if not isinstance(local_data_mib, int) or local_data_mib < 1:
        raise BadParameter(f"local_data_mib={local_data_mib!r}: need a whole number of MiB >= 1.",
                           "E.g. 8 (quick) or 32 (full).")
    if lab.live:
        data = space.Size("local_data_mib", local_data_mib)
        space.require_memory({data: 1})  # made once, held while the builds run
        # in our temp folder: the context's copy and the `docker save` tarball (each build's replace the last's)
        space.require_disk((space.engine_storage(lab.engine), {data: _local_data_copies_in_engine(repeats, builders)}),
                           (Path(tempfile.gettempdir()), {data: 2}))

    def experiment() -> pd.DataFrame:
        client = lab.engine
        wheels = wheelhouse()
        secret = f"API_TOKEN=labkit-fake-{secrets.token_hex(8)}\n"
        data = secrets.token_bytes(local_data_mib * 2**20)  # random bytes: nothing compresses them away
        rows = []
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-03-ctx-") as scratch:
            base = _isolated_base(client, scope, Path(scratch) / "base")
            for repeat in range(repeats):
                for builder in builders:
                    for ignored in ((False, True) if repeat % 2 == 0 else (True, False)):
                        folder = Path(scratch) / f"{builder}-{repeat}-{int(ignored)}"
                        folder.mkdir()
                        _write_context(folder, APP_FILES, wheels, CONTEXT_DOCKERFILE.format(base=base))
                        (folder / SECRET_FILE).write_text(secret)
                        (folder / "local-data").mkdir()
                        (folder / "local-data" / "dump.bin").write_bytes(data)
                        (folder / ".dockerignore").write_text(IGNORE_FILE if ignored else "")
                        tag = f"labkit-exp/{STEM}-ctx:{builder}-{repeat}-{int(ignored)}-{scope.scope_id}"
                        made = builds.build(folder, tag, scope, builder=builder, no_cache=True)
                        saved = layers.read_saved(layers.save(client, made.image_id, Path(scratch) / "image.tar"))
                        hits = saved.find(SECRET_FILE)
                        hits = hits[hits["kind"] == "file"]
                        rows.append({"builder": builder, "dockerignore": ignored, "repeat": repeat,
                                     "context_bytes": made.log.context_bytes, "context_s": made.log.context_s,
                                     "wall_s": made.wall_s,
                                     "image_bytes": int(client.images.get(made.image_id).attrs["Size"]),
                                     "secret_found": not hits.empty,
                                     "secret_layer": int(hits["layer"].iloc[0]) if len(hits) else -1,
                                     "secret_path": str(hits["path"].iloc[0]) if len(hits) else ""})
                        shutil.rmtree(folder)
        return pd.DataFrame(rows, columns=list(LAB.tables["context"]))

    return ContextResult(lab.measure("context", experiment, local_data_mib=local_data_mib, repeats=repeats,
                                     builders=list(builders)))


# ---------------------------------------------------------------- claims

CHAPTER_RATIO = 10.0  # the chapter's "from 30 s to 5 min"


def _listed(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def check_claims(ledger: ClaimLedger, rebuilds: RebuildResult, context: ContextResult) -> None:
    """The chapter's claims about the cache and .dockerignore, each with a criterion and a verdict computed from
    this notebook's measurements."""
    builders = rebuilds.builders
    fewer = {b: all(a < bb for a, bb in zip(rebuilds.executed(b, "A", SOURCE), rebuilds.executed(b, "B", SOURCE),
                                             strict=True)) for b in builders}
    faster = {b: rebuilds.total_s(b, "A") < rebuilds.total_s(b, "B") for b in builders}
    ledger.check(
        "cache.least_changing_first", source=Source.CHAPTER, section=SECTION,
        claim="Instructions whose inputs change least belong first: rebuilds then reuse more of the cache",
        value=min(rebuilds.ratio(b) for b in builders), unit="× (B's total rebuild time over A's, lowest builder)",
        measured="; ".join(f"{b}: A executed {_listed(rebuilds.executed(b, 'A', SOURCE))} steps on the source edits "
                           f"against B's {_listed(rebuilds.executed(b, 'B', SOURCE))}, total "
                           f"{rebuilds.total_s(b, 'A'):.1f} s against "
                           f"{rebuilds.total_s(b, 'B'):.1f} s" for b in builders),
        criterion="with every builder, A (dependencies first) executes fewer steps than B on every source-only "
                  "edit and spends less time over the whole history",
        verdict=verdict(all(fewer.values()) and all(faster.values())), tables=("rebuilds",))

    reran = {b: rebuilds.install_reran(b, "B") for b in builders}
    every = all(n == total and total > 0 for n, total in reran.values())
    ledger.check(
        "cache.copy_all_invalidates", source=Source.CHAPTER, section=SECTION,
        claim="Copying the whole source before the dependency install makes every edit re-run the install",
        value=sum(n for n, _ in reran.values()) / sum(t for _, t in reran.values()), unit="share of B's edits",
        measured="; ".join(f"{b}: B re-ran the install on {n} of {t} edits that changed a file (A: "
                           f"{rebuilds.install_reran(b, 'A')[0]})" for b, (n, t) in reran.items()),
        criterion="in B the dependency install re-runs on every edit that changes any file in the context "
                  "(source, dependency or README); the no-change rebuild is not an edit",
        verdict=verdict(every), tables=("rebuilds", "steps"))

    ratios = {b: rebuilds.median_s(b, "B", SOURCE) / rebuilds.median_s(b, "A", SOURCE) for b in builders}
    short = [b for b, r in ratios.items() if r < CHAPTER_RATIO]
    ledger.check(
        "cache.thirty_seconds_to_five_minutes", source=Source.CHAPTER, section=SECTION,
        claim="The wrong COPY order turns a 30-second rebuild into a 5-minute one (10×)",
        value=min(ratios.values()), unit="× (B over A, median source-only rebuild, lowest builder)",
        measured="; ".join(f"{b}: {rebuilds.median_s(b, 'B', SOURCE):.2f} s (B) against "
                           f"{rebuilds.median_s(b, 'A', SOURCE):.2f} s (A), {r:.1f}×" for b, r in ratios.items()),
        criterion=f"holds if B's median source-only rebuild is ≥ {CHAPTER_RATIO:.0f}× A's with every builder; "
                  f"≥ {CHAPTER_RATIO:.0f}× with some builders only holds with caveat; below {CHAPTER_RATIO:.0f}× "
                  "with every builder it does not hold",
        verdict=verdict(len(short) < len(ratios), caveat=bool(short)),
        caveat=(f"below {CHAPTER_RATIO:.0f}× with {', '.join(short)}; the install here copies wheels from a local "
                "wheelhouse, with no download and no compilation, so B pays less for it than a real project would "
                "(not measured)") if short else "",
        tables=("rebuilds",))

    leaked, kept_out = context.secret_found(False), not context.secret_found(True)
    ledger.check(
        "ignore.secret_in_layer", source=Source.CHAPTER, section=SECTION,
        claim="Without a .dockerignore, a secret lying in the build context is baked into the image",
        value=float(leaked and kept_out), unit="1 = found without, absent with",
        measured=f"without .dockerignore: {'found in ' + context.secret_where() if leaked else 'not found'}; "
                 f"with it: {'absent' if kept_out else 'found'}",
        criterion=demonstration("what COPY . . copies", "the fake .env is a file in one of the image's layer "
                                "tars when built without .dockerignore, and in none with it"),
        verdict=verdict(leaked and kept_out), tables=("context",))
