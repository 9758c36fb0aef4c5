"""Notebook 14's declaration: the Node app, the steps (one Dockerfile each, in labkit/assets/quick_check/steps/),
the teammate's build context, the npm cache every build installs from, the tables and the bases."""

from __future__ import annotations

import difflib
import itertools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import pandas as pd

from labkit import assets
from labkit.core.lab import Lab
from labkit.errors import BadParameter
from labkit.instruments import builds, engine, hadolint, images, npmcache
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

STEM = "14-the-quick-check"

FULL, SLIM, RUNTIME = "node-full-npm", "node-slim-npm", "node-slim"
BASES = (FULL, SLIM, RUNTIME)
BASES_TABLE = "bases"  # each base's tag and size; a replay of a recording made before the table has none
ASSETS = assets.FOLDER / "quick_check"
APP = ASSETS / "app"  # the service's source and manifests, as the teammate's checkout holds them
DEPENDENCY_CHANGE = ASSETS / "dependency-change"  # the same manifests with one runtime dependency added
IGNORE_FILE = ".dockerignore"
SECRET_FILE = ".env"
SECRET_LINE = "API_TOKEN=labkit-quick-check-not-a-real-token"  # the fake secret the teammate's checkout holds
EDITED_FILE = "src/server.ts"
GREETING = 'export const GREETING = "hello from the quick check";'
DEV_DEPENDENCY = "typescript"  # the build step's compiler: a dev dependency no runtime needs
INSTALL_COMMANDS = ("npm ci", "npm install")  # a build step that runs one of these installs the dependencies


@dataclass(frozen=True)
class Step:
    """One Dockerfile of the waterfall: `name` (its file is ``Dockerfile.<index>-<name>``), the `fix` it applies on
    top of the one before (in words) and whether its build context holds the `.dockerignore`."""

    index: int
    name: str
    fix: str
    ignores: bool = False

    @property
    def file(self) -> str:
        return f"Dockerfile.{self.index}-{self.name}"

    @property
    def label(self) -> str:
        return f"{self.index} {self.name}"

    @property
    def template(self) -> str:
        return (ASSETS / "steps" / self.file).read_text()

    @property
    def image_stage(self) -> list[str]:
        """The lines of the stage the image is made of: the template from its last FROM on."""
        lines = self.template.splitlines()
        return lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]

    @property
    def runtime_base(self) -> str:
        """The base the image is made on: the one its last FROM names."""
        return next(base for base in BASES if self.image_stage[0].startswith(f"FROM {{{template_field(base)}}}"))

    @property
    def ships_context(self) -> bool:
        """Whether the image's own stage copies the whole build context (``COPY . .``), not only what other
        stages built: then whatever the context holds is in the image."""
        return "COPY . ." in self.image_stage


# The chapter's three changes in its priority order, then the rest of its mnemonic.
STEPS = (
    Step(0, "teammate", "the teammate's Dockerfile: the full base, the whole context copied before `npm install` "
                        "(dev dependencies included), no .dockerignore, root, a shell-form CMD"),
    Step(1, "cache-deps", "the manifests copied first and installed with `npm ci`, the source copied after"),
    Step(2, "slim-base", "the slim base instead of the full one"),
    Step(3, "multi-stage", "a build stage compiles, a dependencies stage runs `npm ci --omit=dev`, and the runtime "
                           "stage (the slim base without npm) gets only their node_modules and dist/"),
    Step(4, "dockerignore", "a .dockerignore: node_modules, dist, .git, .env and the Dockerfile stay out of the "
                            "context", ignores=True),
    Step(5, "non-root", "USER 1000:1000, node:20's `node` user (our Debian stand-in has no user of that name)",
         ignores=True),
    Step(6, "exec-form", 'the CMD in exec form (`["node", "dist/server.js"]`): node is PID 1 and gets SIGTERM',
         ignores=True),
)
STEP_NAMES = tuple(step.name for step in STEPS)
# Quick mode: the teammate's Dockerfile, the first fix and the last step (every fix applied).
QUICK_STEPS = ("teammate", "cache-deps", "exec-form")


def steps_of(names: Sequence[str]) -> tuple[Step, ...]:
    """The steps named, refused (before anything is built) unless they are known, distinct and in the chapter's
    order."""
    if isinstance(names, str) or not names:
        raise BadParameter(f"steps={names!r}: need a non-empty list of step names.", f"E.g. {list(STEP_NAMES)}.")
    unknown = [name for name in names if name not in STEP_NAMES]
    if unknown:
        raise BadParameter(f"steps: {unknown} not among the steps.", f"Choose from {list(STEP_NAMES)}.")
    order = [STEP_NAMES.index(name) for name in names]
    if order != sorted(set(order)):
        raise BadParameter(f"steps={list(names)}: each step applies its fix on top of the one before.",
                           f"Name each step once, in the order {list(STEP_NAMES)}.")
    return tuple(STEPS[index] for index in order)


def fix_diff(before: Step, after: Step) -> str:
    """What `after` changes against `before`: the unified diff of their Dockerfiles and, where only one build
    context holds the .dockerignore, that file as added."""
    lines = list(difflib.unified_diff(before.template.splitlines(), after.template.splitlines(), before.file,
                                      after.file, lineterm="", n=1))
    if after.ignores and not before.ignores:
        ignored = ignore_text().splitlines()
        lines += ["--- /dev/null", f"+++ {IGNORE_FILE}", f"@@ -0,0 +1,{len(ignored)} @@",
                  *(f"+{line}" for line in ignored)]
    return "\n".join(lines)


def steps_markdown() -> str:
    """The teammate's Dockerfile, then each step's fix in words and as a diff against the step before (Markdown)."""
    parts = [f"**{STEPS[0].label}** — {STEPS[0].fix}\n```dockerfile\n{STEPS[0].template}```"]
    parts += [f"**{after.label}** — {after.fix}\n```diff\n{fix_diff(before, after)}\n```"
              for before, after in itertools.pairwise(STEPS)]
    return "\n\n".join(parts)


def ignore_text() -> str:
    return (ASSETS / "steps" / IGNORE_FILE).read_text()


def manifests() -> tuple[Path, Path]:
    return APP, DEPENDENCY_CHANGE


FETCH_LIMITS = Limits.of(memory_mib=1024, pids=256, cpus=1.0)  # npm ci of an Express + TypeScript app


def prepare(client: docker.DockerClient) -> list[str]:
    """The npm packages of both manifests, fetched once into a cache folder keyed by them (npm ci in a container
    of the slim npm base, made by setup before this), and hadolint."""
    with Scope(client, engine.new_run_id(), lab=STEM) as scope:
        cache = npmcache.fetch(manifests(), images.require_base(client, SLIM).tag,
                               [*scope.label_args(), *FETCH_LIMITS.cli_args()])
    return [f"npm cache: {cache}", f"hadolint: {hadolint.ensure()}"]


LAB = Lab(
    stem=STEM,
    topic="The quick check: a bad Node Dockerfile fixed step by step",
    bases=BASES,
    tables={
        "builds": ("step", "kind", "repeat", "position", "wall_s", "executed", "cached", "installs",
                   "first_executed", "context_bytes"),
        "images": ("step", "size_bytes", "layers", "context_bytes", "cold_s", "user", "uid", "secret_file",
                   "dev_dependency_files", "stop_timeout_s", "stop_s", "exit_code", "pid1"),
        "lint": ("step", "line", "code", "level", "message"),
        "node_env": ("variant", "dockerfile_env", "npm_flags", "npm_version", "dev_dependency_files",
                     "node_modules_files"),
        BASES_TABLE: ("base", "tag", "size_bytes"),
    },
    prepare=prepare,
)


def write_context(folder: Path, step: Step, cache: Path, run_tag: str) -> Path:
    """The teammate's checkout in `folder` as `step` builds it: the app's files (its version stamped with the step
    and `run_tag`), a git repository of them, a node_modules/ from a local install, the fake secret in .env and,
    from the .dockerignore step on, the .dockerignore. The lab writes the step's Dockerfile beside them."""
    shutil.copytree(APP, folder)
    stamp_version(folder, step, run_tag)
    git = ["git", "-C", str(folder), "-c", "user.name=teammate", "-c", "user.email=teammate@example.invalid"]
    run([*git, "init", "--quiet"], 60)
    run([*git, "add", "--all"], 60)
    run([*git, "commit", "--quiet", "--message", "the service"], 60)
    shutil.copytree(cache / npmcache.NODE_MODULES, folder / "node_modules", symlinks=True)
    (folder / SECRET_FILE).write_text(SECRET_LINE + "\n")
    if step.ignores:
        (folder / IGNORE_FILE).write_text(ignore_text())
    return folder


def stamp_version(folder: Path, step: Step, run_tag: str) -> None:
    """Give the app in `folder` version ``1.0.<step index>-r<run_tag>`` in package.json and its lockfile: each step's
    manifests are then its own, and no build takes another step's or an earlier run's install from BuildKit's
    cache (the dependencies stay the same)."""
    version = f"1.0.{step.index}-r{run_tag}"
    for name in npmcache.MANIFESTS:
        manifest = json.loads((folder / name).read_text())
        manifest["version"] = version
        if "packages" in manifest:
            manifest["packages"][""]["version"] = version
        (folder / name).write_text(json.dumps(manifest, indent=2) + "\n")


def template_field(base: str) -> str:
    """The field a step's template puts where the tag of `base` goes: ``node_slim`` (``{node_slim}``) for node-slim."""
    return base.replace("-", "_")


def fill(template: str, cache_image: str, tags: dict[str, str]) -> str:
    """A step's Dockerfile with its placeholders filled: the bases' tags (by base name) and the npm cache image."""
    return template.format(npm_cache=cache_image, **{template_field(base): tags[base] for base in BASES})


CACHE_DOCKERFILE = assets.text("quick_check/Dockerfile.npm-cache")


def build_cache_image(folder: Path, scope: Scope, cache: Path) -> str:
    """The npm cache as an image (npm's ``_cacache`` at its root), labelled on `scope`: the steps' RUN lines mount
    it at /npm-cache, where npm would otherwise fetch from the registry. Returns its tag."""
    context = folder / "npm-cache"
    shutil.copytree(cache / npmcache.NPM_CACHE, context / "cache")
    (context / "Dockerfile").write_text(CACHE_DOCKERFILE)
    tag = f"labkit-quick-check-npm-cache:{scope.scope_id}"
    builds.build(context, tag, scope)
    return tag


def base_tags(client: docker.DockerClient) -> dict[str, str]:
    return {name: images.require_base(client, name).tag for name in BASES}


def measure_bases(client: docker.DockerClient) -> pd.DataFrame:
    """Each base as the engine holds it: its tag and size (what every image made on it carries)."""
    return pd.DataFrame([{"base": name, "tag": found.tag, "size_bytes": found.size_bytes}
                         for name, found in ((name, images.require_base(client, name)) for name in BASES)])
