"""Notebook 03's declaration: the app, its two Dockerfiles, the scripted history of edits, the tables, and the
build context and base every experiment builds from."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import pandas as pd

from labkit import assets
from labkit.core.lab import Lab
from labkit.errors import BadParameter
from labkit.instruments import builds, images
from labkit.instruments import wheelhouse as wheelhouse_cache
from labkit.instruments.buildlog import BUILDERS, BUILDKIT, LEGACY
from labkit.instruments.engine import Scope

STEM = "03-build-cache"
BASE = "python-runtime"

# The app (labkit/assets/greeter/): its sources, every dependency pinned in requirements.txt, and the pins the
# dependency edit adds. Its wheels are downloaded once on the host and copied into the build context.
APP_FILES: dict[str, str] = assets.tree("greeter/source")
ADDED_DEPENDENCIES = assets.pins("greeter/added-requirements.txt")

# A: the manifest and the wheels first, the dependencies installed, then the source. B: everything first. Both
# start from the pip base: the python-runtime base plus a virtual environment with pip in /venv, made once
# (python:3.11-slim ships pip; Debian's python3 bootstraps pip into each new venv, seconds no Dockerfile here measures).
DOCKERFILES = {
    "A": assets.text("greeter/Dockerfile.venv-dependencies-first"),
    "B": assets.text("greeter/Dockerfile.venv-everything-first"),
}
PIP_BASE_DOCKERFILE = assets.text("greeter/Dockerfile.pip-base")
DOCKERFILE_MEANING = {"A": "A: dependencies first", "B": "B: everything first"}
# The .dockerignore experiment copies the context and nothing else, so its build time is the context's cost.
CONTEXT_DOCKERFILE = assets.text("greeter/Dockerfile.context-only")
EMPTY_BASE = "scratch"  # what the context is copied onto: the image then holds the context and nothing else
IGNORE_FILE = ".env\nlocal-data/\n.git/\n__pycache__/\n"
SECRET_FILE = ".env"
BOUNDARY_FILE = "labkit-cache-boundary"  # what sets each experiment's base apart (isolated_base)
BOUNDARY_DOCKERFILE = assets.text("build_cache/Dockerfile.boundary")  # the base plus that file
# Section 4: the app built with its dev dependencies (`{requirements}` filled with pip's requirement arguments) and
# without; the dev set is pinned in full (pytest and what it needs, and coverage), its wheels downloaded once.
DEV_DOCKERFILE = assets.text("greeter/Dockerfile.venv-dev-dependencies")
DEV_REQUIREMENTS_FILE = "requirements-dev.txt"
DEV_REQUIREMENTS = assets.text(f"greeter/{DEV_REQUIREMENTS_FILE}")
# Section 5: the context copied into an image of its own (no base: the layer holds the context and nothing else).
SCRATCH_COPY_DOCKERFILE = assets.text("greeter/Dockerfile.scratch-copy")
INSTALL_MARK = "pip install"  # the install step, found by its instruction text in either builder's log
INSTALLED = re.compile(r"^(?:#\d+ [\d.]+ )?Successfully installed (.+)$", re.MULTILINE)  # pip's last line

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


def dockerfiles_markdown(base: str = f"labkit/{BASE}") -> str:
    """The pip base's Dockerfile, then A's and B's (on the pip base), as Markdown code blocks."""
    shown = {"The pip base": PIP_BASE_DOCKERFILE.format(base=base),
             **{DOCKERFILE_MEANING[name]: text.format(base="<the pip base>") for name, text in DOCKERFILES.items()}}
    return "\n\n".join(f"**{title}**\n```dockerfile\n{text}```" for title, text in shown.items())


def validate_builders(chosen: Sequence[str]) -> None:
    if not chosen:
        raise BadParameter("builders is empty.", f"Choose from {list(BUILDERS)}.")
    for builder in chosen:
        builds.validate_builder(builder)


# ---------------------------------------------------------------- assets


def wheelhouse() -> Path:
    """The app's wheels (every pin of both dependency sets), downloaded once on the host with pip and cached."""
    return wheelhouse_cache.download(assets.greeter_wheel_pins(), assets.GREETER_WHEEL_PLATFORM)


def dev_wheelhouse() -> Path:
    """The wheels of the dev dependencies (:data:`DEV_REQUIREMENTS`), downloaded once on the host and cached."""
    return wheelhouse_cache.download(tuple(DEV_REQUIREMENTS.split()), assets.GREETER_WHEEL_PLATFORM)


def prepare(client: docker.DockerClient) -> list[str]:
    """The app's wheelhouse and its dev dependencies' (the base is made by setup)."""
    return [f"wheelhouse: {wheelhouse()}", f"dev wheelhouse: {dev_wheelhouse()}"]


LAB = Lab(
    stem=STEM,
    topic="The build cache and COPY order",
    bases=(BASE,),
    tables={
        "rebuilds": ("repeat", "order", "builder", "dockerfile", "edit_index", "edit", "kind", "wall_s", "cached",
                     "executed", "install_ran", "packages_installed", "first_executed", "context_bytes",
                     "image_bytes"),
        "steps": ("repeat", "builder", "dockerfile", "edit_index", "stage", "index", "total", "instruction",
                  "status", "seconds"),
        "context": ("builder", "dockerignore", "repeat", "context_bytes", "context_s", "wall_s", "image_bytes",
                    "secret_found", "secret_layer", "secret_path"),
        "dev": ("repeat", "order", "builder", "dev", "wall_s", "install_s", "packages_installed", "image_bytes"),
        "ignore": ("builder", "variant", "pattern", "path", "git_ignored", "in_layer"),
    },
    prepare=prepare,
    headline="cache.thirty_seconds_to_five_minutes",
)


def write_context(folder: Path, files: dict[str, str], wheels: Path | Sequence[Path], dockerfile: str) -> None:
    """The app's files, its wheels under wheels/ (from one wheelhouse or several) and its Dockerfile, in `folder`:
    only what differs is written, as an editor would (a file's modification time changes only when it is edited)."""
    if not (folder / "wheels").exists():
        for source in [wheels] if isinstance(wheels, Path) else wheels:
            shutil.copytree(source, folder / "wheels", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(wheelhouse_cache.COMPLETE))
    wanted = {**files, "Dockerfile": dockerfile, ".dockerignore": "Dockerfile\n.dockerignore\n"}
    for name, text in wanted.items():
        target = folder / name
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)


def pip_base(client: docker.DockerClient, scope: Scope, folder: Path) -> str:
    """The python-runtime base plus a virtual environment with pip in /venv (:data:`PIP_BASE_DOCKERFILE`): every
    Dockerfile of sections 2 and 4 installs into it. Its tag; the scope removes the image. Built with BuildKit,
    whose cache outlives the image: the venv is made once, not once per experiment and run. No measured build
    reuses anything through it: each experiment's :func:`isolated_base` sits on top."""
    folder.mkdir()
    (folder / "Dockerfile").write_text(PIP_BASE_DOCKERFILE.format(base=images.require_base(client, BASE).tag))
    tag = f"labkit-exp/{STEM}-pip:{scope.scope_id}"
    builds.build(folder, tag, scope, builder=BUILDKIT)
    return tag


def isolated_base(client: docker.DockerClient, scope: Scope, folder: Path, key: str = "", start: str = "") -> str:
    """`start` (an image, or ``scratch``; default: the python-runtime base) plus one file holding this experiment's
    scope id and `key` (copied: no container runs), so no build here can reuse a layer cached by an earlier run, or
    by a build with another key: BuildKit's cache outlives the images we remove, and its keys start from the base's
    layers (a label alone would not do: it changes the image's config, not its layers). Dockerfiles A and B get a
    base each: they share their first steps (``WORKDIR /app``), and the legacy builder, finding two cached images
    for a shared step, may continue from the other Dockerfile's and miss every step after it.

    It carries the scope's labels, and so does every image built FROM it: the experiments' builds pass no
    ``--label`` (``inherit_labels``), so the legacy builder adds no LABEL steps of its own and both builders do
    exactly the Dockerfile's work."""
    base = start or images.require_base(client, BASE).tag
    folder.mkdir()
    boundary = f"{scope.scope_id}{'-' + key if key else ''}"
    (folder / BOUNDARY_FILE).write_text(f"{boundary}\n")
    (folder / "Dockerfile").write_text(BOUNDARY_DOCKERFILE.format(base=base, boundary_file=BOUNDARY_FILE))
    tag = f"labkit-exp/{STEM}-base:{boundary}"
    builds.build(folder, tag, scope, builder=LEGACY)
    return tag


def packages_installed(log_text: str) -> int:
    """Packages pip reports installed in a build's log ("Successfully installed a-1 b-2" → 2; none → 0)."""
    return sum(len(found.split()) for found in INSTALLED.findall(log_text))
