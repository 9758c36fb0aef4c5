"""``docker build`` with either builder, timed, labelled on the run's scope, its log read for cache hits.

The image carries the scope's labels, so the scope removes it (and, for the legacy builder, the intermediate
images under it) when the experiment ends. Builds never pull (``--pull=false``, no ``# syntax=`` line) and run
their RUN steps with ``--network none`` unless told otherwise.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import BadParameter, EngineError
from labkit.instruments import buildlog, undo
from labkit.instruments.buildlog import BUILDERS, BUILDKIT, BuildLog
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.shell import run

BUILD_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Build:
    """One finished build: its image id, wall time (s, the whole ``docker build`` command) and its log read."""

    tag: str
    builder: str
    image_id: str
    wall_s: float
    log: BuildLog
    text: str


def validate_builder(builder: str) -> None:
    if builder not in BUILDERS:
        raise BadParameter(f"builder={builder!r} is not a builder.", f"Choose one of {list(BUILDERS)}.")


def build(context: Path, tag: str, scope: Scope, *, builder: str = BUILDKIT, dockerfile: str = "Dockerfile",
          no_cache: bool = False, network: str = "none", build_args: Mapping[str, str] | None = None,
          target: str = "", secrets: Mapping[str, Path] | None = None, timeout_s: float = BUILD_TIMEOUT_S,
          inherit_labels: bool = False) -> Build:
    """Build `context` with `dockerfile` (a path inside it) as `tag` using `builder` (``buildkit`` or ``legacy``).

    The scope's labels go on the image; the LABEL steps the legacy builder makes of them are left out of the log's
    steps (they are not the Dockerfile's, but each runs a container after a cache miss, and the build's wall time
    includes them). With `inherit_labels` no ``--label`` is passed: the Dockerfile's ``FROM`` is an image this scope
    built, whose labels every image built on it inherits, so both builders do only the Dockerfile's work; the image's
    labels are then checked (an image without them is removed and EngineError raised). `secrets` (BuildKit only)
    maps a secret's id to the file a ``RUN --mount=type=secret,id=<id>`` step reads. Raises CommandError (with the
    build's log) when the build fails.
    """
    validate_builder(builder)
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if builder == BUILDKIT else "0"}
    with undo.temporary_folder("labkit-build-") as scratch:
        iidfile = Path(scratch) / "iid"
        argv = [docker_cli(), "build", "--pull=false", "--network", network, "-f", str(context / dockerfile),
                "-t", tag, "--iidfile", str(iidfile), *([] if inherit_labels else scope.label_args())]
        argv += ["--progress=plain"] if builder == BUILDKIT else ["--force-rm"]
        argv += ["--no-cache"] if no_cache else []
        argv += ["--target", target] if target else []
        for key, source in (secrets or {}).items():
            argv += ["--secret", f"id={key},src={source}"]
        for key, value in (build_args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.perf_counter_ns()
        done = run([*argv, str(context)], timeout_s, env=env)
        wall_s = (time.perf_counter_ns() - started) / 1e9
        image_id = iidfile.read_text().strip()
    text = done.stdout + done.stderr  # BuildKit writes its progress to stderr, the legacy builder to stdout
    if inherit_labels:
        _require_labels(image_id, scope)
    return Build(tag, builder, image_id, wall_s, buildlog.parse(text).without_labels(scope.labels), text)


def _require_labels(image_id: str, scope: Scope) -> None:
    """EngineError (after removing the image) unless `image_id` carries every label of `scope`."""
    found = json.loads(run([docker_cli(), "image", "inspect", "--format", "{{json .Config.Labels}}", image_id],
                           60).stdout) or {}
    missing = {k: v for k, v in scope.labels.items() if found.get(k) != v}
    if missing:
        run([docker_cli(), "image", "rm", "--force", image_id], 60)
        raise EngineError(f"the image built with inherit_labels lacks the scope's labels {missing}: removed.",
                          "Build it FROM an image this scope built (with its labels), or without inherit_labels.")
