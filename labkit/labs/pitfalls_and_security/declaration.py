"""The lab's declaration: its notebook, tables, requirements, the budget every container runs under, and the probe
image every experiment runs (``labkit/assets/pitfalls/``)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from labkit import assets
from labkit.core.lab import Lab
from labkit.core.session import LabSession
from labkit.errors import BadParameter, LabkitError
from labkit.instruments import builds, containers, images, space, undo
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits
from labkit.instruments.shell import require_program

STEM = "10-pitfalls-and-security"
BASE = "python-slim"  # Debian's python3 with dash as /bin/sh: the probe is a Python program
PIDS_LIMIT = 64
CPUS = 0.5  # half a core
LIMIT_NAMES = ("memory_limit_mib", "pids_limit", "cpus")
PROBE = "/opt/probe.py"
READY_TIMEOUT_S = 60.0  # a probe that has not said it is ready by then has failed to start
POLL_S = 0.05


LAB = Lab(
    stem=STEM,
    topic="Pitfalls and the security defaults",
    bases=(BASE,),
    tables={
        "zombies": ("variant", "repeat", "t_s", "zombies", "processes", "pid1", "orphans", "memory_limit_bytes",
                    "pids_limit", "cpus"),
        "stop": ("form", "repeat", "position", "dockerfile_cmd", "pid1", "stop_timeout_s", "started_s", "stop_s",
                 "exit_code"),
        "users": ("user", "uid", "euid", "effective_capabilities", "capability_count", "bind_write", "host_owner_uid",
                  "image_write"),
        "log_places": ("check", "outcome"),
        "log_growth": ("variant", "t_s", "log_bytes", "log_files", "written_bytes", "max_size_bytes", "max_files",
                       "logs_lines"),
        "clock": ("variant", "tz", "before_ns", "inside_ns", "after_ns", "set_clock", "shown", "utc_offset_s",
                  "time_ns_shared"),
        "defaults": ("check", "variant", "outcome", "uid", "euid"),
        "lsm": ("what", "value"),
        "secrets": ("way", "place", "found", "detail"),
    },
    headline="pitfalls.sigterm_shell_form",
)


def limits_for(lab: LabSession, memory_limit_mib: int) -> Limits:
    """The budget every container of this notebook runs under: `memory_limit_mib` MiB, 64 pids, half a core."""
    limits = Limits.of(memory_mib=memory_limit_mib, pids=PIDS_LIMIT, cpus=CPUS, names=LIMIT_NAMES)
    if lab.live:
        space.require_memory({space.Size(LIMIT_NAMES[0], memory_limit_mib): 1})
    return limits


def check_repeats(repeats: object, name: str = "repeats") -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise BadParameter(f"{name}={repeats!r}: needs at least one.", f"Give a whole number >= 1 for {name}.")
    return repeats


def check_number(value: object, name: str, low: float, high: float) -> float:
    """`value` as a float in [low, high], or BadParameter naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadParameter(f"{name}={value!r} is out of range.", f"Give a number from {low:g} to {high:g}.")
    return float(value)


@dataclass(frozen=True)
class ProbeImages:
    """The probe image built for one experiment: `root` (no USER), `nonroot` (USER 10001; empty when not built),
    `tini` (an init as its ENTRYPOINT; empty when not built) and its base."""

    root: str
    nonroot: str
    base: str
    tini: str = ""


TINI = "/usr/bin/tini-static"  # Debian's tini, a dependency of docker.io: docker-init links to it


def _dockerfile(folder: Path, name: str, base: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text(assets.text("pitfalls/probe.py"))
    if Path(TINI).exists():  # only the `tini` stage copies it
        shutil.copy2(TINI, folder / "tini-static")
    (folder / "Dockerfile").write_text(assets.text(f"pitfalls/{name}").replace("{base}", base))
    return folder


def build_asset(scope: Scope, folder: Path, name: str, tag_stem: str, base: str, **options: Any) -> builds.Build:
    """Build ``labkit/assets/pitfalls/<name>`` on `base` in a fresh context under `folder` (the probe beside it),
    labelled on `scope` so that the scope removes the image."""
    context = _dockerfile(folder / tag_stem, name, base)
    return builds.build(context, f"labkit-exp/{STEM}-{tag_stem}:{scope.scope_id}", scope, **options)


@contextmanager
def probe_images(client: docker.DockerClient, scope: Scope, *, nonroot: bool = False,
                 tini: bool = False) -> Iterator[ProbeImages]:
    """The probe image built on the python-slim base for this `scope` (cached by the engine after the first build):
    its root stage, its USER 10001 stage when `nonroot` and its built-in-init stage when `tini` (else those are
    empty); the scope removes them."""
    base = images.require_base(client, BASE).tag
    if tini:
        require_program(Path(TINI).name)
    with undo.temporary_folder("labkit-10-") as folder:
        def stage(target: str) -> str:
            return build_asset(scope, Path(folder), "Dockerfile.probe", f"probe-{target}", base, target=target).tag

        yield ProbeImages(stage("root"), stage("nonroot") if nonroot else "", base, stage("tini") if tini else "")


def probe_argv(action: str, *arguments: str) -> list[str]:
    """The probe's command line in exec form: ``python3 /opt/probe.py <action> <arguments>``."""
    return ["python3", PROBE, action, *arguments]


def said(output: bytes | str) -> dict[str, Any]:
    """The JSON line a probe printed last."""
    text = output.decode() if isinstance(output, bytes) else output
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise LabkitError(f"the probe printed no result: {text[-500:]!r}",
                          "Read the probe's output above; labkit/assets/pitfalls/probe.py is the program.")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def probe_once(client: docker.DockerClient, scope: Scope, image: str, argv: Sequence[str], limits: Limits,
               **options: Any) -> dict[str, Any]:
    """Run the probe once (``docker run --rm``) and return what it said."""
    return said(containers.run_once(client, scope, image, argv, limits=limits, stdout=True, stderr=True, **options))


def wait_ready(container: Any, marker: str = '"ready": true', timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait (bounded) until the container's output holds `marker`; LabkitError if it ends or never says it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in container.logs().decode():
            return
        container.reload()
        if container.status not in ("created", "running"):
            break
        time.sleep(POLL_S)
    raise LabkitError(f"container {container.name} did not say {marker!r} within {timeout_s:g} s "
                      f"(status {container.status}): {container.logs().decode()[-500:]!r}",
                      "Read its output above: the probe or its image may be broken.")
